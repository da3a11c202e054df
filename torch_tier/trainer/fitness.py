"""Fitness: the latency of placements, from the cost model or from timed inference.

- ModelFitness: torch_tier.cost_model.predict, thousands per second and
  deterministic, so each placement is predicted once and then looked up.
- MeasuredFitness: wall-clock latency from torch_tier.timing() in worker
  processes (workers.WorkerPool), which load the model once and reapply each
  placement. Timing is noisy, so it is noise-aware:
    * every run has warm-up forwards, and a placement's latency is the
      median of all the samples it ever got (Scores), never one run;
    * adaptive repeats: a placement is first timed `repeats` times; if its
      median is within NOISE_MARGIN spreads of the best so far it is a
      contender and is topped up to `max_repeats`;
    * the best HALL_OF_FAME placements are re-timed every generation, so a
      lucky run does not stay on top: more samples pull it to its median;
    * only placements with `max_repeats` samples or more can be returned as
      the best.
Every timed run of a placement (a measure() call) counts as one evaluation.
"""

from __future__ import annotations

import statistics
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

from ..graph import TierGraph
from ..timing import Measurement
from ..cost_model import graph_costs, predict
from ..placement import PlacementSpace
from .workers import Job, WorkerPool

NOISE_MARGIN = 2.0
HALL_OF_FAME = 3


class Scores:
    """Latency samples (seconds) of every evaluated placement; a placement's score is their median."""

    def __init__(self) -> None:
        self.samples: dict[bytes, list[float]] = {}
        self.placements: dict[bytes, np.ndarray] = {}

    def add(self, placement: np.ndarray, samples: list[float]) -> None:
        key = PlacementSpace.key(placement)
        self.placements.setdefault(key, placement)
        self.samples.setdefault(key, []).extend(samples)

    def score(self, placement: np.ndarray) -> float:
        return statistics.median(self.samples[PlacementSpace.key(placement)])

    def ranked(self, min_samples: int = 1) -> list[bytes]:
        """Keys of placements with at least `min_samples` samples, fastest first."""
        keys = [k for k, s in self.samples.items() if len(s) >= min_samples]
        return sorted(keys, key=lambda k: statistics.median(self.samples[k]))

    def best(self, min_samples: int = 1) -> tuple[np.ndarray, float]:
        """The fastest placement with `min_samples` samples (of any, if none has that many)."""
        keys = self.ranked(min_samples) or self.ranked()
        return self.placements[keys[0]], statistics.median(self.samples[keys[0]])

    def state_dict(self) -> dict:
        return {"samples": self.samples, "placements": self.placements}

    def load_state_dict(self, state: dict) -> None:
        self.samples, self.placements = state["samples"], state["placements"]


class ModelFitness:
    """Predicted latency on the cost model of `device` (its terms computed once per run)."""

    min_samples = 1

    def __init__(self, space: PlacementSpace, device: str):
        self.space = space
        self.device = device
        self.costs = graph_costs(space.graph, device)

    def evaluate(self, placements: list[np.ndarray], scores: Scores, spare: int) -> int:
        """Score each placement (predicted once, looked up after); returns the evaluations used.
        (`spare`, the evaluations allowed beyond the placements, is for the measured kind.)"""
        for placement in placements:
            if PlacementSpace.key(placement) not in scores.samples:
                scores.add(placement, [self.costs.latency(self.space.clean(placement))])
        return len(placements)

    def compare(self, placements: dict[str, np.ndarray], rounds: int) -> dict[str, list[float]]:
        """Each named placement's latency (one prediction; `rounds` is for the measured kind)."""
        return {name: [predict(self.space.graph, self.space.policy(p), self.device)]
                for name, p in placements.items()}


class MeasuredFitness:
    """Timed latency from the workers of `pool`, `repeats` runs a time, `max_repeats` for contenders."""

    def __init__(self, pool: WorkerPool, repeats: int = 3, max_repeats: int = 9):
        if not 1 <= repeats <= max_repeats:
            raise ValueError(f"need 1 <= repeats <= max_repeats, got {repeats} and {max_repeats}")
        self.pool = pool
        self.repeats = repeats
        self.min_samples = max_repeats

    def evaluate(self, placements: list[np.ndarray], scores: Scores, spare: int) -> int:
        """Time the placements, then with at most `spare` more evaluations re-time the hall of
        fame and top up the contenders; returns the evaluations used."""
        fresh = {PlacementSpace.key(p) for p in placements}
        hall = [scores.placements[k] for k in scores.ranked(self.min_samples)[:HALL_OF_FAME] if k not in fresh]
        hall = hall[:spare]
        batch = placements + hall
        for placement, samples in zip(batch, self.pool.run([(p, self.repeats) for p in batch])):
            scores.add(placement, samples)
        contenders = self._contenders(placements, scores)[:spare - len(hall)]
        top_ups = [(p, self.min_samples - len(scores.samples[PlacementSpace.key(p)])) for p in contenders]
        for (placement, _), samples in zip(top_ups, self.pool.run(top_ups)):
            scores.add(placement, samples)
        return len(batch) + len(top_ups)

    def _contenders(self, placements: list[np.ndarray], scores: Scores) -> list[np.ndarray]:
        """Distinct placements short of min_samples whose median is within the noise of the best."""
        best = scores.best(self.min_samples)[1]
        noise = statistics.median(Measurement(tuple(s)).spread for s in scores.samples.values())
        out: dict[bytes, np.ndarray] = {}
        for placement in placements:
            key = PlacementSpace.key(placement)
            samples = scores.samples[key]
            if len(samples) < self.min_samples and statistics.median(samples) <= best * (1 + NOISE_MARGIN * noise):
                out[key] = placement
        return list(out.values())

    def compare(self, placements: dict[str, np.ndarray], rounds: int) -> dict[str, list[float]]:
        """Time the named placements side by side: `rounds` rounds, each timing every one in turn,
        so drifts of the machine's speed fall on all of them alike."""
        names = list(placements)
        samples: dict[str, list[float]] = {name: [] for name in names}
        for _ in range(rounds):
            for name, got in zip(names, self.pool.run([(placements[n], self.repeats) for n in names])):
                samples[name].extend(got)
        return samples



@contextmanager
def measured(model: torch.nn.Module, inputs: tuple, graph: TierGraph, pm: str, workers: int | str = 1,
             repeats: int = 3, max_repeats: int = 9, warmup: int = 1) -> Iterator[MeasuredFitness]:
    """MeasuredFitness over a worker pool for `model`, closed on exit.

    `workers`: a number of local worker processes (on a loopback port), or an address
    to bind (e.g. 'tcp://0.0.0.0:5555') for `torch-tier worker --connect` workers.
    """
    job = Job.of(model, inputs, graph.model_name, [n.path for n in graph.nodes], pm, warmup)
    address, local = (workers, 0) if isinstance(workers, str) else ("tcp://127.0.0.1:*", workers)
    with WorkerPool(job, address, local=local) as pool:
        yield MeasuredFitness(pool, repeats, max_repeats)
