"""The trainer: budget handling, chromosome operators, training, resume, and training on workers."""

import logging
import os
import signal
import socket
import threading
import time

import numpy as np
import psutil
import pytest
import torch
from torch import nn

from torch_tier import baselines, capture, predict, zoo
from torch_tier.placement import PlacementSpace
from torch_tier.trainer import ModelSpec, RemoteWorkers, train, wire
from torch_tier.trainer.budget import Budget
from torch_tier.trainer.chromosome import Chromosome
from torch_tier.trainer.config import TrainConfig
from torch_tier.trainer.workers import Worker


@pytest.fixture(scope="module")
def tiny():
    """A ResNet-50-shaped CNN small enough to train on in seconds, and its graph."""
    workload = zoo.build("resnet50", width=0.25, depth=0.34, image_size=32)
    return workload.model, workload.inputs, capture(workload.model, workload.inputs, name="tiny-resnet", repeats=2)


def test_budget_is_exact_and_repair_fits_and_fills(tiny):
    _, _, graph = tiny
    space = PlacementSpace(graph)
    budget = Budget(space, baselines.dram_budget(graph, "25%"))
    rng = np.random.default_rng(0)
    for _ in range(50):
        placement = space.clean(rng.integers(0, 2, (space.nodes, 2)))
        assert budget.dram_bytes(placement) == graph.footprint(space.policy(placement))["dram"]
        repaired = budget.repair(placement, rng.random((space.nodes, 2)))
        assert graph.footprint(space.policy(repaired))["dram"] <= budget.limit
        assert not budget._fit_alone(repaired).any()  # filled: no PM item could still join DRAM


def test_repair_evicts_what_the_candidate_wants_least(tiny):
    _, _, graph = tiny
    space = PlacementSpace(graph)
    budget = Budget(space, baselines.dram_budget(graph, "25%"))
    preference = np.random.default_rng(1).random((space.nodes, 2))
    repaired = budget.repair(space.all_in(0), preference)
    kept, evicted = preference[(repaired == 0) & space.mask], preference[(repaired == 1) & space.mask]
    assert evicted.size and kept.size
    assert np.median(kept) > np.median(evicted)


def test_crossover_mixes_both_parents_node_by_node():
    rng = np.random.default_rng(0)
    a = Chromosome(np.full((40, 2, 2), 1.0), np.full((40, 2), 0.5))
    b = Chromosome(np.full((40, 2, 2), -1.0), np.full((40, 2), 2.0))
    child = a.crossover(b, rng)
    from_a = (child.prior == 1.0).all(axis=(1, 2))
    from_b = (child.prior == -1.0).all(axis=(1, 2))
    assert (from_a | from_b).all()  # every node's genes come whole from one parent
    assert 5 < from_a.sum() < 35  # and both parents give many of them
    assert (child.temperature[from_a] == 0.5).all() and (child.temperature[from_b] == 2.0).all()


def test_mutation_scales_priors_and_keeps_temperatures_in_range():
    rng = np.random.default_rng(0)
    config = TrainConfig(super_mutation=0.0, reset_mutation=0.0)  # the nudge alone (test_racing: the rest)
    parent = Chromosome(np.ones((500, 2, 2)), np.full((500, 2), config.min_temperature))
    child = parent.mutate(rng, config)
    changed = child.prior != 1.0
    assert 0.05 < changed.mean() < 0.15
    assert abs(child.prior[changed].mean() - 1.0) < 0.05
    assert ((child.temperature >= config.min_temperature) & (child.temperature <= config.max_temperature)).all()
    hot = Chromosome(np.ones((500, 2, 2)), np.full((500, 2), config.max_temperature * 2)).mutate(rng, config)
    assert hot.temperature.max() <= config.max_temperature


def test_seeded_chromosome_samples_its_placement():
    placement = np.random.default_rng(0).integers(0, 2, (30, 2)).astype(np.int8)
    sampled, _ = Chromosome.of_placement(placement, TrainConfig()).sample(np.random.default_rng(1))
    assert (sampled == placement).all()


def test_training_improves_on_the_initial_population_within_budget(tiny):
    model, inputs, graph = tiny
    result = train(model, inputs, dram_budget="25%", evaluations=400, population=20, seed=0,
                   seed_baselines=False, progress=False, graph=graph)
    limit = baselines.dram_budget(graph, "25%")
    assert graph.footprint(result.policy)["dram"] <= limit
    assert result.history[-1].best < result.history[0].best
    assert result.history[-1].median < result.history[0].median
    meta = result.policy.metadata
    assert meta["fitness"] == "model" and meta["dram_bytes"] <= meta["dram_budget"] == limit
    assert result.history[-1].evaluations == meta["evaluations"] == 400


class Looped(nn.Module):
    """Many layers whose weights are read once per forward (`cold`) and a few (`hot`) applied
    `loops` times in a row, whose weights are read that often: all weights of one size, so at
    a budget of about `hot` weights, which ones take DRAM decides nearly all of the slow-tier cost."""

    def __init__(self, width: int = 128, cold: int = 40, hot: int = 4, loops: int = 16):
        super().__init__()
        self.cold = nn.ModuleList(nn.Linear(width, width, bias=False) for _ in range(cold))
        self.hot = nn.ModuleList(nn.Linear(width, width, bias=False) for _ in range(hot))
        self.loops = loops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.cold:
            x = layer(x)
        for layer in self.hot:
            for _ in range(self.loops):
                x = layer(x)
        return x


@pytest.fixture(scope="module")
def looped():
    """Looped at a DRAM budget of 4.5 weights, its graph, and the predicted optimum and all-PM latencies."""
    torch.manual_seed(0)
    model = Looped().eval()
    inputs = (torch.randn(1, 128),)
    graph = capture(model, inputs, name="looped", repeats=2)
    limit = 9 * 128 * 128 * 4 // 2
    return model, inputs, graph, limit, predict(graph, baselines.optimal(graph, limit)), \
        predict(graph, baselines.all_pm(graph, limit))


def _random_control(graph, limit: int, evaluations: int, seed: int) -> float:
    """The best predicted latency of `evaluations` random chromosomes' placements, each through
    the trainer's own repair: what the search must beat to have learned anything."""
    space, rng = PlacementSpace(graph), np.random.default_rng(seed)
    budget = Budget(space, limit)
    return min(predict(graph, space.policy(budget.repair(*Chromosome.random(space.nodes, rng).sample(rng))))
               for _ in range(evaluations))


@pytest.mark.parametrize("seed", [0, 1])
def test_training_beats_random_placements_through_the_same_repair(looped, seed):
    """Random placements + repair stay far from the optimum here (most of the budget goes to cold
    weights); the trainer, unseeded, with as many evaluations, must come much closer."""
    model, inputs, graph, limit, optimal, all_pm = looped
    def gap(latency: float) -> float:  # share of the all-PM extra over the optimum still to go
        return (latency - optimal) / (all_pm - optimal)

    control = gap(_random_control(graph, limit, 400, seed))
    assert control > 0.3  # the case has teeth: chance and the repair alone do not find the hot layers
    result = train(model, inputs, dram_budget=limit, evaluations=400, population=20, seed=seed,
                   seed_baselines=False, progress=False, graph=graph)
    assert graph.footprint(result.policy)["dram"] <= limit
    assert gap(result.latency) < control - 0.3, (gap(result.latency), control)


def test_resume_after_ctrl_c_ends_as_an_uninterrupted_run(tiny, tmp_path):
    model, inputs, graph = tiny
    options = dict(dram_budget="25%", evaluations=200, population=10, seed=3, graph=graph)
    straight = train(model, inputs, progress=False, **options)

    def interrupt(generation):
        if generation.index == 6:
            raise KeyboardInterrupt

    checkpoint = tmp_path / "run.ckpt"
    stopped = train(model, inputs, progress=interrupt, checkpoint=checkpoint, **options)
    assert stopped.interrupted and len(stopped.history) == 7
    resumed = train(model, inputs, progress=False, checkpoint=checkpoint, resume=True, **options)
    assert not resumed.interrupted
    assert resumed.policy.nodes == straight.policy.nodes
    assert [g.best for g in resumed.history] == [g.best for g in straight.history]
    assert [g.median for g in resumed.history] == [g.median for g in straight.history]


def test_plot_is_written(tiny, tmp_path):
    model, inputs, graph = tiny
    result = train(model, inputs, evaluations=40, population=10, progress=False, graph=graph)
    result.save_plot(tmp_path / "curve.png", {"greedy": result.latency})
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"


# --- workers (the protocol's own tests are in test_wire.py) -------------------


@pytest.mark.slow
def test_training_goes_on_when_one_of_two_loopback_workers_is_killed(tiny, caplog):
    model, inputs, graph = tiny
    me = psutil.Process()
    killed: list[int] = []

    def kill_one_worker_mid_generation(generation):
        if generation.index == 1:
            workers = [p for p in me.children() if "worker" in " ".join(p.cmdline())]
            assert len(workers) == 2
            victim = workers[0].pid
            threading.Timer(0.2, os.kill, (victim, signal.SIGKILL)).start()
            killed.append(victim)

    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="torch_tier.trainer.workers"):
        result = train(model, inputs, fitness="measured", workers=2, evaluations=60, population=8, repeats=2,
                       progress=kill_one_worker_mid_generation, graph=graph)
    assert killed and "its process exited" in caplog.text
    assert 60 - 8 < result.history[-1].evaluations <= 60
    assert graph.footprint(result.policy)["dram"] <= baselines.dram_budget(graph, "25%")
    assert not [p for p in me.children() if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert time.monotonic() - start < 120


def test_comparison_is_timed_on_the_remote_workers_that_trained(tiny, tmp_path):
    """A `torch-tier worker` times the search and then, before it is told to stop, the
    side-by-side comparison with the baselines."""
    model, inputs, graph = tiny
    with socket.socket() as probe:  # a free port for the trainer to bind
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    worker = Worker(f"tcp://127.0.0.1:{port}", wire.trainer_secret(tmp_path / "worker.key"))
    thread = threading.Thread(target=worker.serve, daemon=True)
    thread.start()
    spec = ModelSpec("resnet50", {"width": 0.25, "depth": 0.34, "image_size": 32})  # as `tiny` is built
    remote = RemoteWorkers(f"tcp://127.0.0.1:{port}", spec, tmp_path / "worker.key")
    result = train(model, inputs, fitness="measured", workers=remote, evaluations=16,
                   population=8, repeats=1, progress=False, graph=graph, compare_rounds=1)
    thread.join(10)
    worker.close()
    rows = {row.name: row for row in result.comparison}
    assert {"all-dram", "all-pm", "first-touch", "interleave", "memory-mode", "greedy", "optimal",
            "weighted-interleave", "page-interleave", "greedy (split)", "optimal (split)", "trained"} <= set(rows)
    assert rows["optimal (split)"].policy.split  # split placements timed on the remote worker too
    assert all(row.measured and row.measured > 0 for row in rows.values())
    assert all(row.spread is not None for name, row in rows.items() if name != "memory-mode")  # timed, not modelled
    assert not thread.is_alive()


def test_cli_train_starts_from_the_split_optimum(tmp_path, capsys):
    """`--start optimal-split`: the model's own optimum with splits is the first incumbent; with
    model fitness nothing whole beats it, so the policy written splits tensors, and the comparison
    lists the split baselines beside it."""
    from torch_tier import Policy
    from torch_tier.cli import main

    out = tmp_path / "split-start.json"
    assert main(["train", "resnet50", "--size", "width=0.25", "depth=0.34", "image_size=32", "--capture-repeats",
                 "2", "--evaluations", "40", "--population", "10", "--start", "optimal-split", "--out", str(out)]) == 0
    policy = Policy.load(out)
    assert policy.split and policy.metadata["comparison"]["trained"] == policy.metadata["comparison"]["optimal (split)"]
    assert "weighted-interleave" in capsys.readouterr().out
