"""Every baseline beside a policy: predicted by the cost model, and timed side by side.

One workflow for `torch-tier baselines`, the trainer's final comparison,
policies/make.py and the benchmarks. ``placements`` names the policies
(all-DRAM, the unconstrained reference that ignores the budget; every
baseline of torch_tier.baselines under the budget; a trained policy last when
given) and ``compare`` gives a Row per policy: its predicted latency and peak
bytes per tier, and with a `timer` its latency timed in rounds that each time
every policy in turn, so that a machine's load changing over time falls on
all of them alike. A timer is anything with ``compare(placements, rounds)``
over placement arrays: ``LocalTimer`` times in this process on a simulated
tier; the trainer's MeasuredFitness times on its workers (remote ones too).

Memory mode is a hardware cache, not a placement, so it is never timed: its
predicted latency is baselines.memory_mode_latency, its DRAM the cache, and
with a timer its `measured` latency applies the same model to the timed
all-DRAM and all-PM latencies (all-DRAM + miss ratio x (all-PM - all-DRAM)).
The tables are the CLI's (torch_tier.report.table).

On a generate graph (capture(..., generate=N)) every latency is a whole
generate call's; a Row also holds the predicted time to first token and
decode tokens/s (cost_model.predict_generate), and a timer that keeps each
call's first token (LocalTimer's `first_token`) gives the timed ones.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np
import torch

from . import baselines
from .baselines import BudgetSpec
from .cost_model import GenerateFigures, predict, predict_generate
from .graph import TierGraph
from .placement import PlacementSpace
from .policy import Policy
from .timing import Measurement, measure

MEMORY_MODE = "memory-mode"
TRAINED = "trained"


@dataclass
class Row:
    """One policy's figures: seconds per forward and peak bytes per tier.

    `timing` holds its timed runs (None when not timed); `modelled` is memory
    mode's latency derived from the timed all-DRAM and all-PM rows.
    """

    name: str
    policy: Policy
    predicted: float
    dram_bytes: int  # for memory mode, its DRAM cache
    pm_bytes: int
    timing: Measurement | None = None
    modelled: float | None = None
    generate: GenerateFigures | None = None  # a generate graph's predicted phases (not memory mode's)

    @property
    def measured(self) -> float | None:
        """The timed median, or memory mode's modelled latency; None when neither."""
        return self.timing.median if self.timing is not None else self.modelled

    @property
    def spread(self) -> float | None:
        """The timed runs' spread; None for a row not timed (or modelled)."""
        return self.timing.spread if self.timing is not None else None


class Timer(Protocol):
    """Times named placement arrays side by side: `rounds` rounds, each timing every one in turn."""

    def compare(self, placements: dict[str, np.ndarray], rounds: int) -> dict[str, list[float]]: ...


def placements(graph: TierGraph, budget: BudgetSpec, device: str = baselines.DEFAULT_DEVICE,
               trained: Policy | None = None, split: bool = False) -> dict[str, Policy]:
    """All-DRAM (the unconstrained reference), every baseline under `budget` (with `split`, the
    split ones too: weighted and page interleave, greedy and optimal with splits), and `trained`
    last if given."""
    makers = baselines.BASELINES | (baselines.SPLIT_BASELINES if split else {})
    found = {"all-dram": baselines.all_dram(graph, device=device)}
    found |= {name: make(graph, budget, device) for name, make in makers.items()}
    return found | ({TRAINED: trained} if trained is not None else {})


def compare(graph: TierGraph, named: dict[str, Policy], budget: BudgetSpec, device: str = baselines.DEFAULT_DEVICE,
            timer: Timer | None = None, rounds: int = 1) -> list[Row]:
    """A Row per policy of `named` (as ``placements`` gives them): predicted on `device`, and
    with a `timer` also timed in `rounds` side-by-side rounds (memory mode is modelled)."""
    rows = {name: _row(graph, name, policy, budget, device) for name, policy in named.items()}
    if timer is not None:
        space = PlacementSpace(graph)
        timed = {name: space.encode(policy) for name, policy in named.items() if name != MEMORY_MODE}
        samples_of = timer.compare(timed, rounds)
        first_token = getattr(timer, "first_token", {})  # only timers of generate calls keep them
        for name, samples in samples_of.items():
            rows[name].timing = Measurement(tuple(samples), first_token=tuple(first_token.get(name, ())),
                                            new_tokens=graph.new_tokens or 0)
        if MEMORY_MODE in rows:
            rows[MEMORY_MODE].modelled = baselines.memory_mode_between(
                graph, budget, rows["all-dram"].measured, rows["all-pm"].measured)
    return list(rows.values())


def _row(graph: TierGraph, name: str, policy: Policy, budget: BudgetSpec, device: str) -> Row:
    """`policy`'s predicted row; memory mode's latency and DRAM are its cache's (a model)."""
    footprint = graph.footprint(policy)
    if name != MEMORY_MODE:
        phases = predict_generate(graph, policy, device) if graph.generation else None
        return Row(name, policy, predict(graph, policy, device), footprint["dram"], footprint["pm"], generate=phases)
    cache = min(baselines.dram_budget(graph, budget), graph.footprint(graph.policy())["dram"])
    return Row(name, policy, baselines.memory_mode_latency(graph, budget, device), cache, footprint["pm"])


class LocalTimer:
    """Times placements in this process, on tier `pm` (e.g. 'sim:optane-100'): `repeats` runs of
    each in all, spread over the rounds, each measure() call after one warm-up run. A run is a
    forward, or on a generate graph a generate call, whose times to first token `first_token` keeps."""

    def __init__(self, model: torch.nn.Module, inputs: Any, graph: TierGraph, pm: str, repeats: int = 10,
                 progress: Callable[[str], None] | None = None):
        self.model, self.inputs, self.pm, self.repeats = model, inputs, pm, repeats
        self.space = PlacementSpace(graph)
        self.generate = graph.new_tokens
        self.first_token: dict[str, list[float]] = {}
        self.progress = progress or (lambda line: print(line, file=sys.stderr, flush=True))

    def compare(self, placements: dict[str, np.ndarray], rounds: int) -> dict[str, list[float]]:
        samples: dict[str, list[float]] = {name: [] for name in placements}
        rounds = max(1, min(rounds, self.repeats))
        for r in range(rounds):
            for name, placement in placements.items():
                runs = len(range(r, self.repeats, rounds))  # this round's share of the repeats
                result = measure(self.model, self.inputs, self.space.policy(placement), pm=self.pm, repeats=runs,
                                 warmup=1, generate=self.generate)
                samples[name] += result.samples
                self.first_token.setdefault(name, []).extend(result.first_token)
                self.progress(f"  round {r + 1}/{rounds}  {name:12} measured {result}")
        return samples


def compare_locally(model: torch.nn.Module, inputs: Any, graph: TierGraph, budget: BudgetSpec,
                    device: str = baselines.DEFAULT_DEVICE, repeats: int = 10, rounds: int = 2,
                    progress: Callable[[str], None] | None = None) -> list[Row]:
    """Every baseline (``placements``, the split ones too), predicted and timed in this process on
    the simulated `device` tier, `repeats` runs each in `rounds` rounds (`torch-tier baselines`)."""
    timer = LocalTimer(model, inputs, graph, f"sim:{device}", repeats, progress)
    return compare(graph, placements(graph, budget, device, split=True), budget, device, timer, rounds)
