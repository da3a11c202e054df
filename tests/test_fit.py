"""torch_tier.fit: the fit environment, request generators, traces, fixed rules,
oracle and agents (issue 7, synthetic half)."""

from __future__ import annotations

import argparse
import ast
import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env

from torch_tier.fit import dqn, linear_q, ppo
from torch_tier.fit.cli import add_parser
from torch_tier.fit.env import INVALID_REWARD, SERVED_REWARD, FitEnv
from torch_tier.fit.evaluate import evaluate, interval, make_policy
from torch_tier.fit.generators import Ledger, Request, StreamFactory, make_generator, mixed
from torch_tier.fit.rules import NextFit, OraclePolicy, RulePolicy, best_fit, first_fit, free_blocks, worst_fit
from torch_tier.fit.trace import TraceEvent, load_trace, save_trace, trace_to_cells

pytestmark = pytest.mark.usefixtures("one_thread")


def scripted(*ops: tuple) -> StreamFactory:
    """A stream factory replaying ("alloc", id, size) and ("free", id) tuples."""
    requests = [Request(op[0], op[1], op[2] if len(op) > 2 else 0) for op in ops]
    return lambda rng: iter(requests)


class UniformRandom:
    """Uniformly random actions: the untrained reference."""

    def __init__(self, actions: str, n: int, seed: int = 0) -> None:
        self.actions, self.n, self.rng = actions, n, np.random.default_rng(seed)

    def reset(self) -> None:
        pass

    def act(self, obs: np.ndarray, info: dict) -> int:
        return int(self.rng.integers(self.n))


# --- environment semantics ---------------------------------------------------


@pytest.mark.parametrize("actions", ["high", "low"])
def test_passes_the_gymnasium_checker(actions: str) -> None:
    check_env(FitEnv("mixed", 64, history=3, actions=actions), skip_render_check=True)


def test_observation_is_bitmap_size_and_history() -> None:
    env = FitEnv(scripted(("alloc", 0, 3), ("alloc", 1, 2), ("alloc", 2, 4)), page_size=10, history=2, actions="low")
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert obs.tolist() == [0] * 10 + [3, -1, -1]
    obs, reward, terminated, truncated, info = env.step(4)
    assert reward == SERVED_REWARD and not terminated and not truncated
    assert obs.tolist() == [0, 0, 0, 0, 1, 1, 1, 0, 0, 0] + [2, -1, 3]
    assert info["blocks"] == {0: (4, 3)} and info["size"] == 2


def test_high_level_actions_apply_first_best_worst_fit() -> None:
    # holes of 3 (at 0), 2 (at 4) and 4 (at 7) around blocks at 3 and 6 (bitmap 0001001000 after frees)
    ops = [("alloc", 0, 3), ("alloc", 1, 1), ("alloc", 2, 2), ("alloc", 3, 1), ("free", 0), ("free", 2), ("alloc", 4, 2)]
    for action, start in [(0, 0), (1, 4), (2, 7)]:
        env = FitEnv(scripted(*ops), page_size=11, actions="high")
        env.reset(seed=0)
        for _ in range(4):
            env.step(0)
        assert env.bitmap.tolist() == [0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0]
        env.step(action)
        assert env.blocks[4] == (start, 2)


def test_invalid_address_costs_ten_and_repeats_the_request() -> None:
    env = FitEnv(scripted(("alloc", 0, 3), ("alloc", 1, 3), ("alloc", 2, 1)), page_size=10, actions="low", max_invalid=3)
    obs, _ = env.reset(seed=0)
    obs, *_ = env.step(0)
    for address in (1, 8):  # overlaps the first block; runs past the page end
        after, reward, terminated, truncated, info = env.step(address)
        assert reward == INVALID_REWARD and not terminated and not truncated
        assert np.array_equal(after, obs) and info["size"] == 3
    *_, truncated, _ = env.step(2)
    assert truncated  # third invalid address in a row ends the episode


def test_episode_terminates_when_no_hole_fits() -> None:
    env = FitEnv(scripted(("alloc", 0, 6), ("alloc", 1, 6)), page_size=10, actions="low")
    env.reset(seed=0)
    _, reward, terminated, truncated, _ = env.step(2)
    assert reward == SERVED_REWARD and terminated and not truncated


def test_frees_are_applied_inside_step() -> None:
    env = FitEnv(scripted(("alloc", 0, 5), ("free", 0), ("alloc", 1, 10)), page_size=10, actions="low")
    env.reset(seed=0)
    obs, _, terminated, _, info = env.step(5)
    assert not terminated and not env.bitmap.any() and info["size"] == 10


def test_horizon_is_twice_the_page_size() -> None:
    ops = itertools.chain.from_iterable((("alloc", i, 1), ("free", i)) for i in range(100))
    env = FitEnv(scripted(*ops), page_size=8, actions="high")
    env.reset(seed=0)
    steps = 0
    while True:
        _, _, terminated, truncated, _ = env.step(1)
        steps += 1
        if terminated or truncated:
            break
    assert (steps, truncated, terminated) == (16, True, False)


def test_finite_stream_truncates_at_its_end() -> None:
    env = FitEnv(scripted(("alloc", 0, 2), ("free", 0)), page_size=10, actions="high")
    env.reset(seed=0)
    *_, terminated, truncated, _ = env.step(0)
    assert truncated and not terminated


# --- generators ------------------------------------------------------------------


def test_random_generator_frees_live_blocks_and_draws_sizes_in_range() -> None:
    stream = make_generator("random", 256, sizes=(2, 4))(np.random.default_rng(0))
    live, frees = set(), 0
    for request in itertools.islice(stream, 5000):
        if request.op == "free":
            assert request.id in live
            live.remove(request.id)
            frees += 1
        else:
            assert 2 <= request.size <= 4
            live.add(request.id)
    assert frees / 5000 == pytest.approx(0.4, abs=0.03)


def test_streams_are_seeded_and_continue_as_random() -> None:
    make = make_generator("mixed", 256)
    first = list(itertools.islice(make(np.random.default_rng(3)), 200))
    assert first == list(itertools.islice(make(np.random.default_rng(3)), 200))
    segments = [r.segment for r in first]
    assert segments[-1] == "random" and "clear" in segments


def test_mixed_clears_the_first_segment_before_the_second() -> None:
    ledger, rng = Ledger(), np.random.default_rng(1)
    requests = list(mixed(ledger, rng, 256))
    clear = [i for i, r in enumerate(requests) if r.segment == "clear"]
    live = {r.id for r in requests[: clear[0]] if r.op == "alloc"} - {r.id for r in requests[: clear[0]] if r.op == "free"}
    assert [requests[i].id for i in clear] == sorted(live)


def rule_returns(name: str, generator: str, episodes: int = 40, page_size: int = 256) -> float:
    return float(evaluate(RulePolicy(name), {"generator": generator, "page_size": page_size}, episodes, 0).mean())


def test_bf_good_is_served_only_by_best_fit() -> None:
    # the paper: best fit about 20 to 21, first and worst fit about 1.2
    best, first, worst = (rule_returns(r, "bf-good") for r in ("best", "first", "worst"))
    assert 18.5 < best < 23 and first < 2 and worst < 2


def test_wf_good_is_served_only_by_worst_fit() -> None:
    # the paper: worst fit about 19.4, first and best fit about 0.8 (ours
    # higher: in about 3% of sequences the filler block has size 0, and then
    # every rule finishes the sequence)
    worst, first, best = (rule_returns(r, "wf-good") for r in ("worst", "first", "best"))
    assert 17.5 < worst < 21.5 and first < 3 and best < 3


def test_mixed_baselines_and_oracle() -> None:
    # the paper: best fit 6.6, worst 5.4, first 1.1; the issue: oracle about 23.5
    returns = {r: rule_returns(r, "mixed", 60) for r in ("first", "best", "worst")}
    oracle = evaluate(OraclePolicy(), {"generator": "mixed", "page_size": 256}, 60, 0).mean()
    assert returns["first"] < 2 and 4 < returns["best"] < 10 and 3.5 < returns["worst"] < 9
    assert 21 < oracle < 26


def test_streams_do_not_depend_on_placements() -> None:
    # same seed, same requests: a policy that never fails sees them all
    env_options = {"generator": "random", "page_size": 256}
    env = FitEnv(actions="low", **env_options)
    sizes = []
    for rule in ("first", "worst"):
        obs, info = env.reset(seed=5)
        policy, seen = RulePolicy(rule), []
        for _ in range(60):
            seen.append(info["size"])
            obs, *_, info = env.step(policy.act(obs, info))
        sizes.append(seen)
    assert sizes[0] == sizes[1]


# --- rules -----------------------------------------------------------------------


def test_rules_pick_their_hole() -> None:
    bitmap = np.array([0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0])
    starts, lengths = free_blocks(bitmap)
    assert starts.tolist() == [0, 4, 7] and lengths.tolist() == [3, 2, 4]
    assert (first_fit(bitmap, 2), best_fit(bitmap, 2), worst_fit(bitmap, 2)) == (0, 4, 7)
    assert (first_fit(bitmap, 4), best_fit(bitmap, 4), worst_fit(bitmap, 4)) == (7, 7, 7)
    assert first_fit(bitmap, 5) is None and best_fit(bitmap, 5) is None and worst_fit(bitmap, 5) is None


def test_next_fit_resumes_after_the_previous_allocation() -> None:
    rule = NextFit()
    bitmap = np.zeros(10, dtype=np.int8)
    assert rule(bitmap, 3) == 0
    bitmap[0:3] = 1
    bitmap[0] = 0  # a hole opens behind the cursor
    assert rule(bitmap, 1) == 3
    bitmap[3] = 1
    assert rule(bitmap, 7) is None and rule(bitmap, 6) == 4
    bitmap[4:10] = 1
    assert rule(bitmap, 1) == 0  # wraps around


# --- traces ----------------------------------------------------------------------


TRACE = [
    TraceEvent("alloc", 1, 4096, "pm"),
    TraceEvent("alloc", 2, 100, "dram"),
    TraceEvent("free", 99),
    TraceEvent("alloc", 3, 8192, "pm"),
    TraceEvent("free", 1),
    TraceEvent("free", 2),
    TraceEvent("alloc", 4, 1, "pm"),
]


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_trace_round_trip(tmp_path, suffix: str) -> None:
    path = tmp_path / f"t{suffix}"
    save_trace(path, TRACE)
    assert load_trace(path) == TRACE


def test_trace_scaling_keeps_one_tier_and_rounds_up() -> None:
    cells = trace_to_cells(TRACE, page_size=16, tier="pm", cell_bytes=4096)
    assert cells == [
        TraceEvent("alloc", 1, 1, "pm"),
        TraceEvent("alloc", 3, 2, "pm"),
        TraceEvent("free", 1),
        TraceEvent("alloc", 4, 1, "pm"),
    ]
    # by default the peak live bytes (12288 of pm) fill 80% of the page
    assert max(e.size for e in trace_to_cells(TRACE, page_size=10, tier="pm")) == 6


def test_trace_replay_in_the_env(tmp_path) -> None:
    """A trace recorded from a bf-good sequence (in 4 KiB blocks) replays with
    its adversarial property: best fit serves it to the end, first fit fails."""
    stream = make_generator("bf-good", 64)(np.random.default_rng(0))
    events = []
    for request in itertools.takewhile(lambda r: r.segment == "bf-good", stream):
        size = request.size * 4096 if request.op == "alloc" else 0
        events.append(TraceEvent(request.op, request.id, size, "pm" if request.op == "alloc" else ""))
    path = tmp_path / "bf.csv"
    save_trace(path, events)
    options = {"generator": f"trace:{path}", "page_size": 64, "cell_bytes": 4096}
    allocations = sum(e.op == "alloc" for e in events)
    assert evaluate(RulePolicy("best"), options, 1, 0)[0] == pytest.approx(allocations * SERVED_REWARD)
    assert evaluate(RulePolicy("first"), options, 1, 0)[0] == pytest.approx((allocations - 1) * SERVED_REWARD)


# --- agents ----------------------------------------------------------------------


def fit_imports() -> dict[str, set[str]]:
    """The modules of torch_tier.fit, each with the modules of torch_tier.fit it imports (anywhere in it)."""
    graph = {}
    for path in Path(dqn.__file__).parent.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                imported |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        graph[path.stem] = imported
    return graph


def test_no_agent_imports_another_and_fit_has_no_import_circle() -> None:
    graph = fit_imports()
    agents = {"dqn", "linear_q", "ppo"}
    assert {agent: graph[agent] & agents for agent in agents} == {agent: set() for agent in agents}
    reachable = {module: set(imported) for module, imported in graph.items()}
    for _ in graph:  # transitive closure
        reachable = {m: r.union(*(reachable.get(i, set()) for i in r)) for m, r in reachable.items()}
    assert [m for m, r in reachable.items() if m in r] == []


def test_effects_describe_each_rules_placement() -> None:
    # holes of 3 (at 0), 2 (at 4) and 4 (at 7); a request of 2 cells
    obs = np.array([0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 2], np.float32)
    rows = dqn.effects(obs, 11) * 11
    # start, hole length, cells it keeps free, largest hole and holes left after
    assert rows.tolist() == [[0, 3, 1, 4, 3], [4, 2, 0, 4, 2], [7, 4, 2, 3, 3]]
    obs[7:11] = obs[:3] = 1  # only the 2-cell hole left: every rule takes it
    assert np.allclose(dqn.effects(obs, 11), dqn.effects(obs, 11)[1])


def test_dqn_scores_same_placements_equally_and_keeps_best_fit_within_the_margin() -> None:
    env = FitEnv(scripted(("alloc", 0, 2)), page_size=11)
    obs, _ = env.reset(seed=0)  # an empty page: the three rules place at 0
    torch.manual_seed(0)
    policy = dqn.DQNPolicy(dqn.EffectScorer(11, len(obs), (8,)), env.scale, margin=0.3)
    values = policy.values(obs)
    assert values[0] == values[1] == values[2]
    assert policy.act(obs, {}) == dqn.DEFAULT
    policy.values = lambda obs: torch.tensor([0.5, 0.3, 0.2])
    assert policy.act(obs, {}) == dqn.DEFAULT
    policy.values = lambda obs: torch.tensor([0.7, 0.3, 0.2])
    assert policy.act(obs, {}) == 0


def test_margin_is_chosen_on_validation_episodes_ties_to_the_larger() -> None:
    """A scorer valuing every action alike keeps best fit at every margin: a tie, so the
    most conservative margin; one that always prefers first fit wants the smallest."""
    env = FitEnv(generator="random", page_size=32, history=2)
    obs, _ = env.reset(seed=0)
    policy = dqn.DQNPolicy(dqn.EffectScorer(32, len(obs), (8,)), env.scale, margin=0.0)
    policy.values = lambda obs: torch.zeros(3)
    assert dqn.choose_margin(policy, env, episodes=3, seed=0) == max(dqn.MARGINS)
    returns = {}
    for margin in dqn.MARGINS:  # first fit by a value gap between the smallest and the next margin
        policy.margin = margin
        policy.values = lambda obs: torch.tensor([0.35, 0.0, 0.0])
        returns[margin] = evaluate(policy, {"generator": "random", "page_size": 32, "history": 2}, 3,
                                   dqn.VALIDATION_SEED).mean()
    chosen = dqn.choose_margin(policy, env, episodes=3, seed=0)
    assert returns[chosen] == max(returns.values())


def test_ppo_masks_addresses_that_cannot_hold_the_request() -> None:
    env = FitEnv(scripted(("alloc", 0, 3)), page_size=10, actions="low")
    obs = np.array([0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 3], np.float32)  # free: 0-2, 4-7, 9; request 3
    actor = ppo.AddressScorer(10, len(obs), (8,))
    logits = actor(torch.from_numpy(obs * env.scale))
    valid = [0, 4, 5]
    assert (logits[valid] > ppo.INVALID_LOGIT).all()
    assert (logits[[a for a in range(10) if a not in valid]] == ppo.INVALID_LOGIT).all()


def test_dqn_learns_to_leave_best_fit_on_wf_good() -> None:
    """On wf-good only worst fit finishes the sequence, so best fit, which the policy
    keeps unless another action is clearly better, serves about 1.2 here: an
    untrained network keeps it, and uniformly random rules reach about 2.4 at
    best. Beating best fit by 2 takes learning when to leave it (about 4.4)."""
    options = {"generator": "wf-good", "page_size": 64, "history": 4}
    policy = dqn.train(FitEnv(**options), dqn.DQNConfig(steps=10_000, learning_starts=500), seed=0)
    trained = evaluate(policy, options, 30, 100).mean()
    best = evaluate(RulePolicy("best"), options, 30, 100).mean()
    untrained = evaluate(UniformRandom("high", 3), options, 30, 100).mean()
    assert trained > best + 2.0 and trained > untrained + 1.5


def test_linear_q_learns_bf_good() -> None:
    options = {"generator": "bf-good", "page_size": 64}
    policy = linear_q.train(FitEnv(**options), linear_q.LinearQConfig(steps=6000), seed=0)
    trained = evaluate(policy, options, 30, 100).mean()
    untrained = evaluate(UniformRandom("high", 3), options, 30, 100).mean()
    assert trained > untrained + 1.0


def test_ppo_never_pays_for_an_invalid_address_and_learns() -> None:
    options = {"generator": "random", "page_size": 10}
    untrained, trained = (
        evaluate(ppo.train(lambda: FitEnv(actions="low", **options), ppo.PPOConfig(steps=steps), seed=0), options, 100, 100)
        for steps in (0, 8192)
    )
    assert untrained.min() > 0 and trained.min() > 0  # every episode serves its first request, no -10
    assert trained.mean() > untrained.mean() + 0.03


def test_training_is_seeded() -> None:
    options = {"generator": "bf-good", "page_size": 32}
    a, b = (make_policy("linear-q", options, seed=7, steps=500) for _ in range(2))
    assert np.array_equal(a.w, b.w)


# --- reporting -------------------------------------------------------------------


def test_interval_is_student_t() -> None:
    mean, half = interval(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    assert mean == 3.0 and half == pytest.approx(2.776 * np.sqrt(2.5) / np.sqrt(5), rel=1e-3)


def test_cli_prints_a_table(capsys) -> None:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    args = parser.parse_args(
        ["fit", "--generator", "bf-good", "--agent", "linear-q", "--page-size", "32", "--steps", "300",
         "--runs", "2", "--episodes", "3"]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "| oracle |" in out and "| linear-q |" in out and "| next |" in out
