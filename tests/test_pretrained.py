"""from_pretrained(): checkpoints read straight into the tiers, within a DRAM budget, and their errors."""

import gc
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import torch_tier as tt
from torch_tier import _C, memkind, pretrained
from torch_tier.graph_capture import capture
from torch_tier.policy import PolicyError

PROMPT, NEW_TOKENS = 8, 6

# Run in a subprocess, so that the test's own process never holds the model in plain memory:
# a random model of the config saved by transformers' save_pretrained (sharded), and its greedy tokens.
WRITER = """
import sys, json, torch
from transformers import AutoConfig, AutoModelForCausalLM
out, kind, config, shard, prompt, new = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4], *map(int, sys.argv[5:])
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(AutoConfig.for_model(kind, **config)).eval()
model.save_pretrained(out, max_shard_size=shard)
ids = torch.randint(0, config["vocab_size"], (1, prompt), generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    torch.save({"ids": ids, "tokens": model.generate(ids, max_new_tokens=new, do_sample=False)}, out + "/expected.pt")
"""

SMALL = {"vocab_size": 2048, "hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
         "tie_word_embeddings": True}  # 2.6M parameters, 10 MiB; the LM head shares the embedding
# "Small but wide": 108M parameters, 410 MiB in float32, no one node over 16 MiB.
WIDE = {"vocab_size": 8192, "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 6,
        "num_attention_heads": 16, "num_key_value_heads": 4, "max_position_embeddings": 256}


def write_checkpoint(directory: Path, config: dict, kind: str = "llama", shard: str = "2MB") -> dict:
    subprocess.run([sys.executable, "-c", WRITER, str(directory), kind, json.dumps(config), shard, str(PROMPT),
                    str(NEW_TOKENS)], check=True, capture_output=True)
    return torch.load(directory / "expected.pt")


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    directory = tmp_path_factory.mktemp("llama-small")
    return directory, write_checkpoint(directory, SMALL)


def generate(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False)


def kv_cache_bytes(config: dict) -> int:
    """Keys and values of every layer for the whole generation, float32."""
    head = config["hidden_size"] // config["num_attention_heads"]
    return 2 * config["num_hidden_layers"] * config["num_key_value_heads"] * head * (PROMPT + NEW_TOKENS) * 4


def storages(model: torch.nn.Module) -> dict[int, torch.Tensor]:
    """One tensor per storage of the model's parameters and buffers."""
    return {t.untyped_storage().data_ptr(): t for t in [*model.parameters(), *model.buffers()]}


def dram_bytes(model: torch.nn.Module) -> int:
    """Bytes the DRAM tier holds for the model's weights (blocks of 64 bytes)."""
    return sum(-(-t.untyped_storage().nbytes() // 64) * 64 for t in storages(model).values()
               if tt.tier_of(t) == "dram")


def layer_policy(model: torch.nn.Module, in_dram: str) -> tt.Policy:
    """Every weight in pm but those of module `in_dram` (and below it)."""
    policy = tt.Policy.uniform(model, weight="pm")
    for path in policy.nodes:
        if path == in_dram or path.startswith(in_dram + "."):
            policy.nodes[path] = tt.Placement(weight="dram")
    return policy


SLACK = 64 << 10  # DRAM beyond the placed weights: rotary buffers and small allocations while loading


def test_weights_load_into_their_tiers_with_no_copy_in_dram(small):
    directory, expected = small
    policy = layer_policy(pretrained.build(directory), "model.layers.0")
    base = tt.stats()["dram"]["live_bytes"]
    tt.reset_peaks()
    with pretrained.from_pretrained(directory, policy=policy, pm="sim") as session:
        peak = tt.stats()["dram"]["peak_bytes"] - base
        model = session.model
        resolved = policy.resolve(model)
        for path, module in model.named_modules():
            for tensor in module.parameters(recurse=False):
                assert tt.tier_of(tensor) == resolved[path].weight, path
        largest_pm = max(t.untyped_storage().nbytes() for t in storages(model).values() if tt.tier_of(t) == "pm")
        assert SLACK < largest_pm  # a copy of it in DRAM would show
        assert 0 < dram_bytes(model) <= peak <= dram_bytes(model) + SLACK
        assert model.lm_head.weight is model.model.embed_tokens.weight  # tied: one Parameter, one storage
        assert tt.tier_of(model.lm_head.weight) == "pm"
        assert torch.equal(generate(model, expected["ids"]), expected["tokens"])


def test_another_dtype_is_converted_in_its_own_tier(tmp_path):
    config = {**SMALL, "dtype": "bfloat16"}
    write_checkpoint(tmp_path, config)
    from safetensors.torch import load_file

    saved = {k: v for shard in shards(tmp_path) for k, v in load_file(shard).items()}
    model = pretrained.build(tmp_path, dtype=torch.float32)
    base = tt.stats()["dram"]["live_bytes"]
    tt.reset_peaks()
    with pretrained.from_pretrained(tmp_path, policy=layer_policy(model, "model.norm"), pm="sim",
                                    dtype=torch.float32) as session:
        peak = tt.stats()["dram"]["peak_bytes"] - base
        weight = session.model.model.layers[1].mlp.up_proj.weight
        assert weight.dtype == torch.float32 and tt.tier_of(weight) == "pm"
        assert torch.equal(weight, saved["model.layers.1.mlp.up_proj.weight"].float())
        # the transient: a DRAM weight's bfloat16 read beside its conversion; pm weights' reads sat in pm
        transient = max(t.numel() * 2 for t in session.model.parameters() if tt.tier_of(t) == "dram")
        assert dram_bytes(session.model) < peak <= dram_bytes(session.model) + transient + SLACK


@pytest.mark.skipif(not memkind.available(), reason="libmemkind0 is not installed")
def test_loads_into_memkind(small):
    directory, expected = small
    with pretrained.from_pretrained(directory, policy=layer_policy(pretrained.build(directory), "model.layers.0"),
                                    pm="memkind:/dev/shm") as session:
        assert "memkind pmem in /dev/shm" in _C.pm_description()
        assert tt.tier_of(session.model.model.layers[1].mlp.up_proj.weight) == "pm"
        assert torch.equal(generate(session.model, expected["ids"]), expected["tokens"])


def test_gpt2_tied_head_stays_one_storage(tmp_path):
    config = {"vocab_size": 1024, "n_embd": 128, "n_layer": 2, "n_head": 4, "n_positions": 128}
    expected = write_checkpoint(tmp_path, config, kind="gpt2", shard="200KB")
    model = pretrained.build(tmp_path)
    with pretrained.from_pretrained(tmp_path, policy=layer_policy(model, "transformer.h.1"), pm="sim") as session:
        model = session.model
        assert model.lm_head.weight is model.transformer.wte.weight
        assert tt.tier_of(model.transformer.wte.weight) == "pm" and tt.tier_of(model.transformer.h[1].mlp.c_fc.weight) == "dram"
        assert torch.equal(generate(model, expected["ids"]), expected["tokens"])


def test_close_leaves_the_weights_in_tier_memory_until_the_model_goes(small):
    directory, expected = small
    gc.collect()  # earlier tests' models
    before = tt.stats()["pm"]["live_bytes"]
    policy = layer_policy(pretrained.build(directory), "model.layers.1")
    session = pretrained.from_pretrained(directory, policy=policy, pm="sim")
    session.close()
    assert _C.cpu_allocator_is_default()
    assert {tt.tier_of(p) for p in session.model.parameters()} == {"dram", "pm"}  # not pulled into plain memory
    assert {tt.tier_of(b) for b in session.model.buffers()} == {None}  # rotary frequencies, built in plain memory
    assert torch.equal(generate(session.model, expected["ids"]), expected["tokens"])
    del session
    gc.collect()
    assert tt.stats()["pm"]["live_bytes"] == before  # freed with the model


def test_placing_again_moves_weights_out_of_dram_before_others_in(small):
    directory, _ = small
    model = pretrained.build(directory)
    later, earlier = layer_policy(model, "model.layers.1"), layer_policy(model, "model.layers.0")
    with pretrained.from_pretrained(directory, policy=later, pm="sim") as session:
        model = session.model
        first = dram_bytes(model)
    base = tt.stats()["dram"]["live_bytes"]
    tt.reset_peaks()
    with tt.enable(earlier, model, pm="sim"):
        second = dram_bytes(model)
        peak = tt.stats()["dram"]["peak_bytes"]
    assert base >= first and second > SLACK
    assert peak - (base - first) <= max(first, second) + SLACK  # never both layers at once


def test_a_budget_places_the_cost_models_optimum_within_it(small):
    directory, expected = small
    budget = 4 << 20  # of 10 MiB of weights
    base = tt.stats()["dram"]["live_bytes"]
    tt.reset_peaks()
    with pretrained.from_pretrained(directory, dram_budget=budget, pm="sim", inputs=expected["ids"],
                                    capture_options={"repeats": 1}) as session:
        tokens = generate(session.model, expected["ids"])
        peak = tt.stats()["dram"]["peak_bytes"] - base
        placed = {tt.tier_of(t) for t in storages(session.model).values()}
        assert session.policy.metadata["found_by"] == "optimal"
    assert torch.equal(tokens, expected["tokens"])
    assert placed == {"dram", "pm"}
    assert peak <= budget + kv_cache_bytes(SMALL)


@pytest.mark.slow
def test_several_hundred_mib_at_a_quarter_of_the_weights_in_dram(tmp_path):
    expected = write_checkpoint(tmp_path, WIDE, shard="100MB")
    weights = sum(f.stat().st_size for f in tmp_path.glob("*.safetensors"))
    assert weights > 400 << 20
    base = tt.stats()["dram"]["live_bytes"]
    tt.reset_peaks()
    with pretrained.from_pretrained(tmp_path, dram_budget="25%", pm="sim", inputs=expected["ids"],
                                    capture_options={"repeats": 1}) as session:
        budget = session.policy.metadata["dram_budget"]
        tokens = generate(session.model, expected["ids"])
        peak = tt.stats()["dram"]["peak_bytes"] - base
    assert torch.equal(tokens, expected["tokens"])
    assert budget < weights / 3
    assert peak <= budget + kv_cache_bytes(WIDE)


def test_capture_within_a_dram_limit_leaves_the_weights_where_they_were():
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(256, 256) for _ in range(6)]).eval()
    x = torch.randn(4, 256)
    values = [p.detach().clone() for p in model.parameters()]
    limit = 2 * 256 * 257 * 4 + 4096  # two layers' weights and the activations
    base = tt.stats()["dram"]["live_bytes"]
    tt.reset_peaks()
    graph = capture(model, x, repeats=1, dram_limit=limit)
    assert tt.stats()["dram"]["peak_bytes"] - base <= limit
    assert all(tt.tier_of(p) is None and torch.equal(p, v) for p, v in zip(model.parameters(), values))
    assert all(node.dram_time > 0 for node in graph.nodes if node.weight_bytes)
    assert graph.metadata["timing"]["in_place"] == []
    small = capture(model, x, repeats=1, dram_limit=200_000)  # under one layer's 263,168 bytes
    assert small.metadata["timing"]["in_place"] == [str(i) for i in range(6)]


# --- errors -------------------------------------------------------------------


def copy_of(small, tmp_path) -> Path:
    directory = tmp_path / "copy"
    shutil.copytree(small[0], directory)
    return directory


def shards(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.safetensors"))


def test_a_directory_without_config_json(tmp_path):
    with pytest.raises(pretrained.CheckpointError, match=rf"{tmp_path}: no config.json"):
        pretrained.from_pretrained(tmp_path, dram_budget="25%", pm="sim")


def test_a_directory_without_safetensors(small, tmp_path):
    shutil.copy(small[0] / "config.json", tmp_path)
    with pytest.raises(pretrained.CheckpointError, match=rf"{tmp_path}: no model.safetensors or "
                                                          r"model.safetensors.index.json"):
        pretrained.from_pretrained(tmp_path, dram_budget="25%", pm="sim")


def test_an_index_naming_a_missing_shard(small, tmp_path):
    directory = copy_of(small, tmp_path)
    shards(directory)[1].unlink()
    with pytest.raises(pretrained.CheckpointError, match=r"index.json: names shard 'model-00002-of-\d+.safetensors'"):
        pretrained.from_pretrained(directory, dram_budget="25%", pm="sim")


def test_a_truncated_shard(small, tmp_path):
    directory = copy_of(small, tmp_path)
    shard = shards(directory)[0]
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(pretrained.CheckpointError, match=rf"{shard}: tensor .* data_offsets .* \(truncated or corrupt\)"):
        pretrained.from_pretrained(directory, dram_budget="25%", pm="sim")


def test_a_corrupt_header(small, tmp_path):
    directory = copy_of(small, tmp_path)
    shard = shards(directory)[0]
    data = bytearray(shard.read_bytes())
    data[8:16] = b"\xff" * 8
    shard.write_bytes(bytes(data))
    with pytest.raises(pretrained.CheckpointError, match=rf"{shard}: malformed safetensors header"):
        pretrained.from_pretrained(directory, dram_budget="25%", pm="sim")


def test_a_tensor_missing_from_the_checkpoint(small, tmp_path):
    from safetensors.torch import load_file, save_file

    directory = copy_of(small, tmp_path)
    shard = next(s for s in shards(directory) if "model.norm.weight" in load_file(s))
    tensors = load_file(shard)
    del tensors["model.norm.weight"]
    save_file(tensors, shard)
    gc.collect()  # earlier tests' models
    before = tt.stats()["pm"]["live_bytes"]
    with pytest.raises(pretrained.CheckpointError, match=rf"{directory}: no tensor 'model.norm.weight'"):
        pretrained.from_pretrained(directory, policy=tt.Policy.uniform(pretrained.build(directory), "pm"), pm="sim")
    gc.collect()
    assert tt.stats()["pm"]["live_bytes"] == before  # what was loaded is freed


def test_a_checkpoint_of_another_shape(small, tmp_path):
    directory = copy_of(small, tmp_path)
    model = pretrained.build(directory)  # the checkpoint's shapes
    config = json.loads((directory / "config.json").read_text())
    config["intermediate_size"] = 512
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(pretrained.CheckpointError, match=r"tensor 'model.layers.0.mlp.\w+_proj.weight' has shape"):
        pretrained.from_pretrained(directory, policy=tt.Policy.uniform(pretrained.build(directory)), pm="sim")
    with pytest.raises(PolicyError, match=rf"{directory}: policy for .* does not match"):
        pretrained.from_pretrained(directory, policy=tt.Policy.uniform(model), pm="sim")


def test_a_budget_below_the_largest_node_times_it_in_pm(small):
    directory, expected = small
    budget = 3 << 19  # the embedding (and the LM head it is) is 2 MiB; an MLP projection 1 MiB
    base = tt.stats()["dram"]["live_bytes"]
    tt.reset_peaks()
    with pretrained.from_pretrained(directory, dram_budget=budget, pm="sim:cxl", inputs=expected["ids"],
                                    capture_options={"repeats": 1}) as session:
        assert torch.equal(generate(session.model, expected["ids"]), expected["tokens"])
        assert session.policy.metadata["capture"]["timing"]["in_place"] == ["model.embed_tokens"]
        assert session.policy.metadata["device"] == "cxl"  # the profile the sim tier runs
        assert tt.tier_of(session.model.model.embed_tokens.weight) == "pm"
    assert tt.stats()["dram"]["peak_bytes"] - base <= budget + kv_cache_bytes(SMALL)


def test_a_budget_below_the_runs_activations(small):
    with pytest.raises(ValueError, match=r"a DRAM limit of 4096 bytes cannot hold the run's \d+ bytes of activations"):
        pretrained.from_pretrained(small[0], dram_budget=4096, pm="sim", capture_options={"repeats": 1})


def test_an_unknown_device(small):
    with pytest.raises(ValueError, match=r"device: 'optane-cached' is not a device profile"):
        pretrained.from_pretrained(small[0], dram_budget="25%", pm="sim", device="optane-cached")


def test_policy_or_budget(small):
    with pytest.raises(ValueError, match="either policy= or dram_budget="):
        pretrained.from_pretrained(small[0], pm="sim")
    with pytest.raises(ValueError, match="either policy= or dram_budget="):
        pretrained.from_pretrained(small[0], policy="p.json", dram_budget="25%", pm="sim")
