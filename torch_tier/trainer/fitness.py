"""Fitness: the latency of placements, from the cost model or from timed inference.

- ModelFitness: the cost model's prediction (cost_model.GraphCosts, its
  terms computed once per run), thousands per second and deterministic.
- MeasuredFitness: latency from torch_tier.measure() in worker
  processes (workers.WorkerPool), which load the model once and reapply each
  placement. A timed run is one measure() call of one placement: `warmup`
  untimed forwards, then `repeats` timed ones.

An evaluation is what a fitness pays for. Measured: a timed run; each new
placement is timed once and looked up after (Scores), so a cache hit is
free. Model: a prediction, every proposal one, looked up or not: it costs
next to nothing either way, and counting it keeps a model-fitness run's
generations, whose learner updates are its real cost, within the budget.

Neither decides which placement is best: timing is noisy, so that is
racing's job (racing.py), and both give it pairs of the incumbent and a
candidate: MeasuredFitness times the two in turn on one worker (two
evaluations a pair), ModelFitness looks both up (free: they are known). A
placement's score, the median of every sample it got (first runs and
racing's), ranks the population and is the learner's reward; it is never
reported as the best latency.
"""

from __future__ import annotations

import statistics
from contextlib import contextmanager
from typing import Iterator, Protocol

import numpy as np
import torch

from ..graph import TierGraph
from ..cost_model import graph_costs
from ..placement import PlacementSpace, is_split
from . import wire
from .config import TrainConfig
from .racing import Pair
from .workers import Job, RemoteWorkers, WorkerPool


class Scores:
    """Latency samples (seconds) of every evaluated placement; a placement's score is their median."""

    def __init__(self) -> None:
        self.samples: dict[bytes, list[float]] = {}
        self.placements: dict[bytes, np.ndarray] = {}

    def __contains__(self, placement: np.ndarray) -> bool:
        return PlacementSpace.key(placement) in self.samples

    def add(self, placement: np.ndarray, samples: list[float]) -> None:
        key = PlacementSpace.key(placement)
        self.placements.setdefault(key, placement)
        self.samples.setdefault(key, []).extend(samples)

    def score(self, placement: np.ndarray) -> float:
        return statistics.median(self.samples[PlacementSpace.key(placement)])

    def unscored(self, placements: list[np.ndarray]) -> list[np.ndarray]:
        """The distinct placements of `placements` that have no score yet, in order."""
        new: dict[bytes, np.ndarray] = {}
        for placement in placements:
            if placement not in self:
                new.setdefault(PlacementSpace.key(placement), placement)
        return list(new.values())

    def timed(self) -> tuple[np.ndarray, np.ndarray]:
        """Every scored whole placement, (k, nodes, 2) int8, and its score, (k,) seconds (a split
        start is left out: calibrate.fit models whole placements)."""
        keys = [k for k in self.samples if not is_split(self.placements[k])]
        return (np.array([self.placements[k] for k in keys], dtype=np.int8),
                np.array([statistics.median(self.samples[k]) for k in keys]))

    def state_dict(self) -> dict:
        return {"samples": self.samples, "placements": self.placements}

    def load_state_dict(self, state: dict) -> None:
        self.samples, self.placements = state["samples"], state["placements"]


class Fitness(Protocol):
    """What the search asks of a fitness."""

    pair_cost: int  # evaluations one racing pair costs

    def evaluate(self, placements: list[np.ndarray], scores: Scores, limit: int) -> int:
        """Score the placements that have no score yet, within `limit` evaluations (placements
        beyond it stay unscored); returns the evaluations used."""

    def pairs(self, incumbent: np.ndarray, candidate: np.ndarray, n: int, scores: Scores) -> list[Pair]:
        """`n` pairs (incumbent seconds, candidate seconds) for a race; their samples join `scores`."""


class ModelFitness:
    """Predicted latency on the cost model of `device`."""

    pair_cost = 0

    def __init__(self, space: PlacementSpace, device: str):
        self.space = space
        self.costs = graph_costs(space.graph, device)

    def evaluate(self, placements: list[np.ndarray], scores: Scores, limit: int) -> int:
        """Predict the first `limit` placements (each one evaluation; the known ones looked up)."""
        placements = placements[:limit]
        for placement in scores.unscored(placements):
            scores.add(placement, [self.costs.latency(self.space.clean(placement))])
        return len(placements)

    def pairs(self, incumbent: np.ndarray, candidate: np.ndarray, n: int, scores: Scores) -> list[Pair]:
        """The predictions, looked up: deterministic, so every pair is alike and free."""
        return [(scores.score(incumbent), scores.score(candidate))] * n

    def compare(self, placements: dict[str, np.ndarray], rounds: int) -> dict[str, list[float]]:
        """Each named placement's latency (one prediction; `rounds` is for the measured kind)."""
        return {name: [self.costs.latency(self.space.clean(p))] for name, p in placements.items()}


class MeasuredFitness:
    """Timed latency from the workers of `pool`: `repeats` timed forwards a run."""

    pair_cost = 2

    def __init__(self, pool: WorkerPool, repeats: int = TrainConfig.repeats):
        if repeats < 1:
            raise ValueError(f"need repeats >= 1, got {repeats}")
        self.pool = pool
        self.repeats = repeats

    def evaluate(self, placements: list[np.ndarray], scores: Scores, limit: int) -> int:
        """Time each new placement once (one evaluation each), the runs spread over the workers."""
        new = scores.unscored(placements)[:limit]
        for placement, samples in zip(new, self.pool.run([(p, self.repeats) for p in new])):
            scores.add(placement, samples)
        return len(new)

    def pairs(self, incumbent: np.ndarray, candidate: np.ndarray, n: int, scores: Scores) -> list[Pair]:
        """`n` pairs, each the two timed in turn on one worker (which runs first alternates); a pair
        is the two runs' medians."""
        groups = [[incumbent, candidate] if j % 2 == 0 else [candidate, incumbent] for j in range(n)]
        pairs = []
        for j, runs in enumerate(self.pool.side_by_side(groups, self.repeats)):
            incumbent_runs, candidate_runs = runs if j % 2 == 0 else runs[::-1]
            scores.add(incumbent, incumbent_runs)
            scores.add(candidate, candidate_runs)
            pairs.append((statistics.median(incumbent_runs), statistics.median(candidate_runs)))
        return pairs

    def compare(self, placements: dict[str, np.ndarray], rounds: int) -> dict[str, list[float]]:
        """Time the named placements side by side: `rounds` rounds, each timing every one in turn on
        one worker (the order rotated round by round), so drifts of the machine's speed fall on all
        of them alike."""
        names = list(placements)
        orders = [names[r % len(names):] + names[:r % len(names)] for r in range(rounds)]
        samples: dict[str, list[float]] = {name: [] for name in names}
        for order, runs in zip(orders, self.pool.side_by_side([[placements[n] for n in o] for o in orders],
                                                              self.repeats)):
            for name, got in zip(order, runs):
                samples[name] += got
        return samples


@contextmanager
def measured(model: torch.nn.Module, inputs: tuple, graph: TierGraph, pm: str, workers: int | RemoteWorkers = 1,
             repeats: int = TrainConfig.repeats, warmup: int = TrainConfig.warmup,
             clock: str = TrainConfig.clock) -> Iterator[MeasuredFitness]:
    """MeasuredFitness over a worker pool for `model`, closed on exit.

    `workers`: a number of local worker processes (on a loopback port, given `model` in a
    private file), or RemoteWorkers: an address to bind (e.g. 'tcp://0.0.0.0:5555') for
    `torch-tier worker --connect` workers, which build the model from its spec.
    """
    if isinstance(workers, str):
        raise ValueError(f"remote workers build the model themselves from its spec: pass "
                         f"workers=RemoteWorkers({workers!r}, ModelSpec(NAME, SIZE)) (README, Remote workers)")
    remote = workers if isinstance(workers, RemoteWorkers) else None
    job = Job.of(model, inputs, graph.model_name, [n.path for n in graph.nodes], pm, warmup, clock,
                 spec=remote.model if remote else None, base_time=graph.base_time, generate=graph.new_tokens)
    pool = (WorkerPool(job, remote.address, secret=wire.trainer_secret(remote.secret)) if remote
            else WorkerPool(job, local=workers))
    with pool:
        yield MeasuredFitness(pool, repeats)
