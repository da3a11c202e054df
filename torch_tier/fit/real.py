"""Real allocation traces in a fixed-capacity arena (issue 7, real half).

Two views of the same recorded trace (`torch_tier.trace.trace`):

- bytes, in the real C++ simulated-tier arena (`torch_tier.trace.replay`):
  per fixed fit, the peak extent (the high-water mark in a roomy arena) over
  the peak live bytes, and the first allocation that fails in a tight arena
  of a few percent above the peak live bytes;
- cells, in the `FitEnv` page: the trace scaled so the page holds a given
  factor times its peak live cells, one episode per factor, where the fixed
  rules and a learned high-level policy are compared on the same requests.

A trace episode is the whole trace: its horizon is the trace's allocation
count, not the synthetic generators' `2 * page_size`, since the question on
a real trace is whether (and how far) it fits, not how it does in 512 steps.

Imports torch_tier's replay lazily, so the rest of torch_tier.fit stays
independent of the compiled extension.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import dqn
from .env import FitEnv, Policy, run_episode
from .generators import Request
from .trace import TraceEvent, peak_live_bytes, trace_to_cells

FITS = ("first", "best", "worst", "next")
"""The C++ arena's fit rules, the same names as the cell-level baselines."""

Episode = list[Request]


def tier_events(events: list[TraceEvent], tier: str) -> list[TraceEvent]:
    """The allocations served from `tier`, and all frees (frees of other tiers' blocks are ignored on replay)."""
    return [e for e in events if e.op == "free" or e.tier == tier]


@dataclass(frozen=True)
class Fragmentation:
    """One trace under one fit in the byte-level arena.

    `extent_ratio`: high-water mark in a roomy arena over peak live bytes
    (1.0 = no fragmentation; the arena's 64-byte block tags count as used).
    `first_failure`: for each capacity factor (capacity = factor * peak live
    bytes), the ordinal of the first allocation that fails, None if all fit.
    """

    fit: str
    peak_live: int
    allocations: int
    extent_ratio: float
    first_failure: dict[float, int | None]


def fragmentation(
    events: list[TraceEvent],
    tight: Sequence[float] = (1.05, 1.10),
    roomy: float = 16.0,
    tier: str = "pm",
) -> list[Fragmentation]:
    """The fragmentation of `tier`'s events under each fit in `FITS`."""
    from torch_tier.trace import replay

    kept = tier_events(events, tier)
    peak = peak_live_bytes(kept)
    ordinals = np.cumsum([e.op == "alloc" for e in kept]) - 1  # event index -> allocation ordinal
    report = []
    for fit in FITS:
        wide = replay(kept, int(roomy * peak), fit, tier=None)
        if wide["first_failure"] >= 0:
            raise ValueError(f"{fit} fit needs more than {roomy}x the peak live bytes; raise `roomy`")
        failures = {}
        for factor in tight:
            index = replay(kept, int(factor * peak), fit, tier=None)["first_failure"]
            failures[factor] = None if index < 0 else int(ordinals[index])
        report.append(Fragmentation(fit, peak, int(ordinals[-1]) + 1, wide["high_water"] / peak, failures))
    return report


def cell_episodes(
    events: list[TraceEvent], page_size: int, factors: Sequence[float], tier: str = "pm"
) -> list[Episode]:
    """The trace as cell-level request streams, one per capacity factor: the
    page holds `factor` times the trace's peak live cells, as the byte-level
    arena holds `factor` times its peak live bytes."""
    kept = tier_events(events, tier)
    return [
        [Request(e.op, e.id, e.size, "trace") for e in trace_to_cells(kept, page_size, cell_bytes=cell_bytes)]
        for cell_bytes in (cell_bytes_for(kept, page_size, factor) for factor in factors)
    ]


def cell_bytes_for(events: list[TraceEvent], page_size: int, factor: float) -> int:
    """The smallest cell size at which the trace's peak live cells (sizes
    rounded up to whole cells) are at most `page_size / factor`.

    Scaling by peak live bytes alone would let the rounding of many small
    blocks overfill the page, so every rule would fail at the same request.
    """
    def fits(cell_bytes: int) -> bool:
        return peak_live_bytes(trace_to_cells(events, page_size, cell_bytes=cell_bytes)) <= page_size / factor

    largest = max(e.size for e in events if e.op == "alloc")
    low, high = max(1, -(-largest // page_size)), largest  # at `largest` every block is one cell
    if not fits(high):
        raise ValueError(f"more than {page_size / factor:.0f} blocks live at once: use a larger page")
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if fits(middle) else (middle + 1, high)
    return low


def episode_env(episodes: Sequence[Episode], page_size: int, history: int, actions: str = "high") -> FitEnv:
    """A `FitEnv` whose every reset replays one of `episodes`, drawn uniformly
    with the reset's seed, to its end (the horizon is the longest episode)."""
    env = FitEnv(lambda rng: iter(episodes[int(rng.integers(len(episodes)))]), page_size, history, actions)
    env.horizon = max(sum(r.op == "alloc" for r in episode) for episode in episodes)
    return env


def episode_returns(policy: Policy, episodes: Sequence[Episode], page_size: int, history: int) -> np.ndarray:
    """The return of `policy` on each of `episodes`, in order (0.1 per served allocation)."""
    return np.array(
        [run_episode(episode_env([episode], page_size, history, policy.actions), policy, seed=0) for episode in episodes]
    )


def train_dqn(
    episodes: Sequence[Episode], page_size: int, history: int, steps: int, seed: int
) -> dqn.DQNPolicy:
    """A DQN high-level policy trained from `seed` for `steps` steps on `episodes` (drawn at random per episode)."""
    return dqn.train(episode_env(episodes, page_size, history), dqn.DQNConfig(steps=steps), seed)
