"""trace(): record the allocation stream of real inference passes or training steps.

What fragments a fixed-capacity tier is the order and sizes of a model's
allocations and frees. This records them from the real allocator, in the
trace format of torch_tier.fit.trace, for replaying under fit rules
(`replay`) or for training learned fit policies on them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch.utils._pytree import tree_leaves

from . import _C, tiers, zoo
from .fit.trace import TraceEvent, peak_live_bytes, save_trace
from .policy import Policy
from .runtime import enable


def trace(
    model: torch.nn.Module,
    inputs: Any,
    passes: int = 3,
    train_step: bool = False,
    policy: Policy | None = None,
    pm: str = "sim",
) -> list[TraceEvent]:
    """Allocation events of `passes` forwards (or forward+backward steps) of `model`.

    Default placement: weights in DRAM, every activation on pm, so the pm
    tier sees the whole activation stream.
    """
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    policy = policy or Policy.uniform(model, weight="dram", activation="pm")
    with enable(policy, model, pm=pm):
        _C.start_trace()
        try:
            for _ in range(passes):
                _run(model, inputs, train_step)
        finally:
            raw = _C.stop_trace()
    for p in model.parameters():
        p.grad = None
    return [TraceEvent("free", ident) if is_free else TraceEvent("alloc", ident, size, tiers.TIER_NAMES[tier])
            for _seq, ident, _addr, size, tier, is_free in raw]


def _run(model: torch.nn.Module, inputs: tuple, train_step: bool) -> None:
    if not train_step:
        with torch.no_grad():
            model(*inputs)
        return
    outputs = [t for t in tree_leaves(model(*inputs)) if torch.is_tensor(t) and t.is_floating_point()]
    sum(o.float().mean() for o in outputs).backward()


def replay(events: list[TraceEvent], capacity: int, fit: str, tier: str | None = "pm") -> dict[str, int]:
    """Replay a trace's `tier` events in a fresh simulated-tier arena of `capacity` bytes under `fit`.

    Returns the arena's high-water mark (the bytes it really needed) and the
    index of the first allocation that did not fit (-1: none).
    """
    kept = [e for e in events if e.op == "free" or tier is None or e.tier == tier]
    return _C.replay_arena(capacity, fit, [(e.op == "free", e.id, e.size) for e in kept])


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("trace", help="record a model's allocation trace",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a zoo name or a dotted path to a function returning (model, inputs)")
    parser.add_argument("--out", type=Path, required=True, help="trace file (.csv or .json)")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--train", action="store_true", help="record forward+backward training steps")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    work = zoo.resolve(args.model)
    if args.train:
        work.model.train()
    events = trace(work.model, work.inputs, passes=args.passes, train_step=args.train)
    save_trace(args.out, events)
    allocs = sum(e.op == "alloc" for e in events)
    print(f"{args.out}: {allocs} allocations, {len(events) - allocs} frees, "
          f"peak live {peak_live_bytes(events) / 2**20:.1f} MiB over {args.passes} "
          f"{'training steps' if args.train else 'inference passes'} of {work.name}")
    return 0
