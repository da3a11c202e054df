"""Generation (issue 14): capture(generate=N), measure(generate=N), predict_generate, and
generate graphs through the baselines, the trainer and the CLI, on small decoders of the zoo."""

import functools
from pathlib import Path

import pytest
import torch

import torch_tier
from torch_tier import baselines, cost_model, memkind, zoo
from torch_tier.cli import main
from torch_tier.report import table
from torch_tier.timing import generate_options

NEW = 5  # tokens per generate call
PROMPT = 8
# Small versions of the zoo's decoders: the same architectures, a second to generate with.
SMALL = {"qwen2": dict(seq_len=PROMPT, width=0.25, depth=0.09),
         "llama": dict(seq_len=PROMPT, width=0.25, depth=0.17),
         "gpt2": dict(seq_len=PROMPT, width=0.25, depth=0.17)}


@functools.lru_cache(maxsize=None)
def _captured(name: str) -> tuple[zoo.Workload, torch_tier.TierGraph]:
    work = zoo.build(name, **SMALL[name])
    return work, torch_tier.capture(work.model, work.inputs, generate=NEW, repeats=3, max_repeats=10)


def _generate(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(ids, **generate_options(NEW))


def _mixed(graph: torch_tier.TierGraph) -> torch_tier.Policy:
    """Every other node's weights, every third node's activations (the KV cache's too) in pm."""
    return graph.policy([torch_tier.Placement("pm" if i % 2 else "dram", "pm" if i % 3 else "dram")
                         for i in range(len(graph.nodes))])


@pytest.mark.parametrize("name", list(SMALL))
def test_tokens_identical_under_a_policy_on_sim(name):
    work, graph = _captured(name)
    expected = _generate(work.model, work.inputs[0])
    assert expected.shape == (1, PROMPT + NEW)
    with torch_tier.enable(_mixed(graph), work.model, pm="sim:optane-100"):
        placed = _generate(work.model, work.inputs[0])
    assert torch.equal(placed, expected)


@pytest.mark.skipif(not memkind.available(), reason="libmemkind0 is not installed")
def test_tokens_identical_under_a_policy_on_memkind():
    work, graph = _captured("qwen2")
    expected = _generate(work.model, work.inputs[0])
    with torch_tier.enable(_mixed(graph), work.model, pm="memkind:/dev/shm") as session:
        placed = _generate(work.model, work.inputs[0])
        assert session.stats()["pm"]["allocations"] > 0
    assert torch.equal(placed, expected)


def test_capture_has_each_nodes_decode_calls():
    work, graph = _captured("qwen2")
    gen = graph.generation
    assert gen.new_tokens == NEW and gen.prompt_tokens == PROMPT and len(gen.step_starts) == NEW
    assert all(n.calls == NEW and d == NEW - 1 for n, d in zip(graph.nodes, gen.decode_calls))
    prefill, decode = graph.phase("prefill"), graph.phase("decode")
    for i, node in enumerate(graph.nodes):
        assert prefill.nodes[i].alloc_bytes + decode.nodes[i].alloc_bytes == node.alloc_bytes
        assert prefill.nodes[i].dram_time + decode.nodes[i].dram_time == pytest.approx(node.dram_time)
    assert prefill.base_time + decode.base_time == pytest.approx(graph.base_time)
    assert 0 < prefill.base_time < graph.base_time
    # a decode step handles one token, the prefill eight: the q projection writes an eighth as much per call
    q = graph.index()["model.layers.0.self_attn.q_proj"]
    assert prefill.nodes[q].alloc_bytes == PROMPT * decode.nodes[q].alloc_bytes / (NEW - 1)


def test_kv_cache_grows_by_one_token_per_step_as_the_config_says():
    work, graph = _captured("qwen2")
    config = work.model.config
    head_dim = config.hidden_size // config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim * 4  # K and V, float32
    assert graph.kv_bytes() == [per_token * (PROMPT + step) for step in range(NEW)]
    kv_nodes = {graph.nodes[b.node].path for b in graph.buffers if b.kv}
    assert kv_nodes == {f"model.layers.{i}.self_attn" for i in range(config.num_hidden_layers)}


def test_budget_holds_the_kv_cache_at_its_largest():
    work, graph = _captured("qwen2")
    weights = sum(n.weight_bytes for n in graph.nodes)
    assert graph.footprint(graph.policy())["dram"] >= weights + graph.kv_bytes()[-1]
    budget = baselines.dram_budget(graph, "25%")
    for name, make in baselines.BASELINES.items():
        policy = make(graph, budget)
        assert graph.footprint(policy)["dram"] <= budget, name
        figures = cost_model.predict_generate(graph, policy)
        assert figures.seconds == pytest.approx(cost_model.predict(graph, policy), rel=0.05)
        assert figures.first_token > 0 and figures.decode_tokens_per_s > 0


def test_measure_generate_reports_first_token_and_tokens_per_second(one_thread):
    work, graph = _captured("llama")
    timing = torch_tier.measure(work.model, work.inputs, graph.policy(), pm="sim:optane-100", generate=NEW,
                                repeats=4, warmup=1)
    assert timing.new_tokens == NEW and len(timing.first_token) == len(timing.samples) == 4
    assert all(0 < first < total for first, total in zip(timing.first_token, timing.samples))
    # one prefill and NEW - 1 decode steps: the median is about their sum
    implied = timing.time_to_first_token + (NEW - 1) / timing.decode_tokens_per_s
    assert implied == pytest.approx(timing.median, rel=0.15)
    # the prefill of 8 tokens is one forward of five, not most of the call
    assert timing.time_to_first_token < 0.5 * timing.median
    assert "decode tokens/s" in str(timing)
    with pytest.raises(ValueError, match="not a timing of generate calls"):
        torch_tier.measure(work.model, work.inputs, graph.policy(), pm="sim", repeats=1, warmup=0).decode_tokens_per_s


def test_generate_needs_a_model_that_generates_and_a_token_count():
    model = torch.nn.Linear(4, 4)
    with pytest.raises(ValueError, match="has no generate"):
        torch_tier.capture(model, torch.randn(1, 4), generate=3)
    with pytest.raises(ValueError, match="new tokens >= 1"):
        generate_options(0)
    with pytest.raises(TypeError, match="need generate=N"):
        torch_tier.capture(model, torch.randn(1, 4), top_k=3)


def test_generate_graph_saves_and_loads(tmp_path):
    work, graph = _captured("qwen2")
    graph.save(tmp_path / "g.json")
    loaded = torch_tier.TierGraph.load(tmp_path / "g.json")
    assert loaded.generation == graph.generation and loaded.kv_bytes() == graph.kv_bytes()


def test_trainer_searches_a_generate_graph():
    work, graph = _captured("qwen2")
    budget = baselines.dram_budget(graph, "25%")
    result = torch_tier.train(work.model, work.inputs, dram_budget=budget, fitness="model", evaluations=60,
                              population=10, seed=0, progress=False, graph=graph, compare_rounds=1)
    assert graph.footprint(result.policy)["dram"] <= budget
    rows = {row.name: row for row in result.comparison}
    assert rows["trained"].generate is not None and rows["trained"].generate.decode_tokens_per_s > 0
    assert rows["trained"].predicted <= rows["first-touch"].predicted * (1 + 1e-9)


def test_local_timer_times_generate_calls_with_their_first_tokens(one_thread):
    from torch_tier import comparison

    work, graph = _captured("qwen2")
    budget = baselines.dram_budget(graph, "25%")
    named = {name: p for name, p in comparison.placements(graph, budget).items() if name in ("all-dram", "all-pm")}
    timer = comparison.LocalTimer(work.model, work.inputs, graph, "sim:optane-100", repeats=2, progress=lambda _: None)
    rows = comparison.compare(graph, named, budget, timer=timer, rounds=2)
    for row in rows:
        assert len(row.timing.first_token) == 2 and row.timing.new_tokens == NEW
        assert row.timing.time_to_first_token < row.timing.median
    assert "measured tokens/s" in table(rows)


@pytest.mark.parametrize("command", ["profile", "baselines"])
def test_cli_generate(command, capsys):
    size = ["--size", "seq_len=8", "width=0.25", "depth=0.09"]
    extra = ["--repeats", "1", "--rounds", "1"] if command == "baselines" else []
    assert main([command, "qwen2", *size, "--generate", "3", "--capture-repeats", "2", "--threads", "1",
                 *extra]) == 0
    out = capsys.readouterr().out
    if command == "profile":
        assert "per generate call of 3 tokens" in out and "KV cache" in out and "decode tokens/s" in out
    else:
        assert "predicted tokens/s" in out and "measured first token ms" in out


def test_cli_generate_refuses_bad_input(capsys):
    with pytest.raises(SystemExit):
        main(["profile", "qwen2", "--generate", "0"])
    assert "new tokens >= 1" in capsys.readouterr().err
    assert main(["profile", "resnet50", "--size", "image_size=32", "--generate", "2"]) == 2
    assert "has no generate()" in capsys.readouterr().err


def test_cli_train_generate(tmp_path, capsys):
    out = tmp_path / "qwen2-gen.json"
    assert main(["train", "qwen2", "--size", "seq_len=8", "width=0.25", "depth=0.09", "--generate", "3",
                 "--capture-repeats", "2", "--threads", "1", "--evaluations", "40", "--population", "10",
                 "--out", str(out)]) == 0
    policy = torch_tier.Policy.load(out)
    assert policy.metadata["generate"] == 3 and "predicted tokens/s" in capsys.readouterr().out


def test_trainer_workers_time_whole_generate_calls(one_thread):
    from torch_tier.placement import PlacementSpace
    from torch_tier.trainer.fitness import measured

    work, graph = _captured("qwen2")
    fastest = {}
    for run, job_graph in (("forward", graph.phase("prefill")), ("generate", graph)):  # the prefill: no generation
        with measured(work.model, work.inputs, job_graph, "sim:optane-100", workers=1, repeats=1, warmup=0,
                      clock="cpu") as judge:  # the worker's CPU time: other jobs on the machine do not move it
            fastest[run] = min(judge.compare({"all-dram": PlacementSpace(graph).all_in(0)}, 3)["all-dram"])
    # a generate call of five tokens is five forwards, the first over the whole prompt (3.2x here on
    # the CPU-time clock; the wall clock under load once made it 1.92x)
    assert fastest["generate"] > 2 * fastest["forward"], fastest


DECODE_POLICIES = sorted((Path(__file__).resolve().parents[1] / "policies" / "generate").glob("*.json"))


@pytest.mark.parametrize("path", DECODE_POLICIES, ids=[p.stem for p in DECODE_POLICIES])
def test_shipped_decode_policy(path):
    """policies/generate/*.json (policies/make.py --generate): a generate call's placement within its budget,
    predicted no slower than the OS's placements of the same call."""
    policy = torch_tier.Policy.load(path)
    meta = policy.metadata
    name, pct = path.stem.rsplit("-", 1)
    assert meta["model"] == name and meta["budget"] == f"{pct}%" and meta["generate"] > 1
    assert 0 < meta["dram_bytes"] <= meta["budget_bytes"] == meta["dram_budget"]
    assert abs(meta["budget_bytes"] - meta["all_dram_bytes"] * int(pct) / 100) <= 1
    assert meta["kv_bytes_largest"] > 0 and meta["predicted_tokens_per_s"] > 0
    predicted = meta["predicted_baselines"]
    assert predicted["trained"] <= min(predicted["first-touch"], predicted["interleave"])


def test_shipped_decode_policies_are_for_the_zoos_llama_and_qwen2():
    assert {p.stem for p in DECODE_POLICIES} >= {"llama-25", "qwen2-25"}


@pytest.mark.slow
@pytest.mark.parametrize("path", DECODE_POLICIES, ids=[p.stem for p in DECODE_POLICIES])
def test_shipped_decode_policy_matches_its_zoo_model(path):
    torch_tier.Policy.load(path).check(zoo.build(path.stem.rsplit("-", 1)[0]).model)


def test_train_captures_a_generate_call_itself():
    work = zoo.build("qwen2", **SMALL["qwen2"])
    result = torch_tier.train(work.model, work.inputs, generate=3, evaluations=20, population=10, seed=0,
                              progress=False)
    assert result.graph.generation.new_tokens == 3 and len(result.graph.kv_bytes()) == 3
