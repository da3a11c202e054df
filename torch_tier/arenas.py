"""Planned arenas: each tier's activations laid out ahead of time, from a captured graph.

Inference allocates the same buffers in the same order every forward, so
their lifetimes, captured once, let the planner (torch_tier.planner) place
them in one arena per tier as small as it can be. A session with
`arena="planned"` reserves each arena once and serves every forward's
allocations at their planned offsets; anything unplanned falls back to the
tier's ordinary backend and is counted (see csrc/planned_backend.h).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch  # noqa: F401  (loads libc10, which torch_tier._C links against)

from . import _C, planner, tiers
from .graph import Buffer, TierGraph
from .policy import Policy


@dataclass(frozen=True)
class ArenaPlan:
    """One tier's arena: an offset per forward allocation, in allocation order."""

    tier: str
    request_sizes: tuple[int, ...]  # bytes each allocation asks the tier's backend for
    offsets: tuple[int, ...]
    arena_bytes: int
    lower_bound: int  # the most bytes live at one moment: no arena can be smaller
    optimal: bool
    seconds: float


def planner_buffers(buffers: "list[Buffer]", alignment: int, overhead: int = 0) -> list[planner.Buffer]:
    """Graph buffers as the planner's problem: each `overhead` bytes larger, rounded up to `alignment`.

    Sizes and offsets both in whole multiples of `alignment`, so every slot starts on it.
    """
    return [planner.Buffer(i, b.alloc, b.free, -(-(b.size + overhead) // alignment) * alignment, alignment)
            for i, b in enumerate(buffers)]


def plan_arenas(graph: TierGraph, policy: Policy, time_limit: float = 10.0) -> dict[str, ArenaPlan]:
    """Plan each tier's activation buffers of `graph` under `policy` into one arena per tier.

    Slots are aligned as the tier's blocks are (_C.tier_alignment: 64 bytes in DRAM, 256 in pm,
    Optane's line), and the allocator refuses a plan that is not.
    """
    header = _C.block_overhead()
    act_tier = [policy.placement_of(node.path).activation for node in graph.nodes]
    plans = {}
    for tier in tiers.TIER_NAMES:
        mine = [b for b in sorted(graph.buffers, key=lambda b: b.alloc) if act_tier[b.node] == tier]
        requests = tuple(b.size + header for b in mine)
        alignment = _C.tier_alignment(tiers.TIER_NAMES.index(tier))
        plan = planner.solve(planner_buffers(mine, alignment, header), time_limit=time_limit)
        plans[tier] = ArenaPlan(tier, requests, plan.offsets, plan.peak, plan.lower_bound, plan.optimal,
                                plan.stats.seconds)
    return plans


def install(plans: dict[str, ArenaPlan]) -> None:
    """Reserve each planned arena in the enabled allocator."""
    for tier, plan in plans.items():
        if plan.request_sizes:
            _C.plan(tiers.TIER_NAMES.index(tier), list(plan.request_sizes), list(plan.offsets), plan.arena_bytes)


def stats() -> dict[str, dict[str, int]]:
    """Per tier: allocations served at their planned offset, unplanned ones, and the arena's bytes."""
    return {name: _C.planned_stats(index) for index, name in enumerate(tiers.TIER_NAMES)}
