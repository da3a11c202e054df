"""The emulated slow tier: a device that exists only as delay, run beside real memory.

On `pm="sim:PROFILE"` the pm tier's bytes live in a real arena of this
machine's DRAM (torch_tier.arenas, csrc/arena_backend), and every placed node
is metered: after each call the Meter spins out the extra time that the
call's slow-tier traffic costs, as the cost model (torch_tier.cost_model)
prices it, so wall-clock time reflects the placement. The Session composes a
Meter beside the allocator's backends; it also serves capture, which meters
with every tensor in DRAM to time each node's own code.

Delay is owed per thread: calls nest (a container's own code around its
children), and each call is charged for its own code only.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

import torch

from . import _C, cost_model, tiers
from .cost_model import CostModel
from .graph import Stream
from .tensors import input_tensors

SPIN_QUANTUM = 20e-6  # seconds of simulated delay gathered before one spin

_local = threading.local()


@dataclass
class _Frame:
    """One metered call in progress on this thread."""

    module: torch.nn.Module
    previous_tier: int
    start_ns: int
    allocated_at_start: tuple[int, int]  # this thread's bytes allocated so far, per tier
    input_bytes: tuple[int, int]  # bytes of its inputs, per tier (leaves only)
    child_ns: int = 0
    child_allocated: tuple[int, int] = (0, 0)


# Called after each metered call: (node path, its own seconds, simulated extra seconds).
CallRecorder = Callable[[str, float, float], None]


def _allocated() -> tuple[int, int]:
    return _C.thread_allocated(tiers.DRAM), _C.thread_allocated(tiers.PM)


@dataclass(frozen=True)
class Weights:
    """A metered node's own weights: their bytes, whether they are in pm, and for a
    module that reads them whole every call, its (DRAM seconds, pm extra) computed once."""

    bytes: int
    pm: bool
    fixed: tuple[float, float] | None = None

    @classmethod
    def of(cls, module: torch.nn.Module, tensors: list[torch.Tensor], cost: CostModel | None) -> "Weights":
        nbytes = sum(t.untyped_storage().nbytes() for t in tensors)
        pm = any(tiers.tier_of(t) == "pm" for t in tensors)
        if cost is None or cost_model.is_sparse(module):
            return cls(nbytes, pm)
        stream = Stream(nbytes)
        return cls(nbytes, pm, (cost.in_dram(stream), cost.extra(stream) if pm else 0.0))

    def seconds(self, cost: CostModel, module: torch.nn.Module, args: tuple,
                kwargs: dict) -> tuple[float, float]:
        """This call's weight reads: (seconds in DRAM, extra seconds if in pm)."""
        if self.fixed is not None:
            return self.fixed
        stream = cost_model.weight_stream(module, self.bytes, args, kwargs)
        return cost.in_dram(stream), cost.extra(stream) if self.pm else 0.0


class Meter:
    """Hooks that time each node's call and charge its slow-tier traffic."""

    def __init__(self, cost: CostModel | None, recorder: CallRecorder | None):
        self.cost = cost
        self.recorder = recorder
        # Storages of the model's weights. A call that takes another module's weight as an input
        # (position ids, a tied table) is not charged for reading it: the graph has no such edge,
        # so the cost model does not price it either.
        self.weight_storages: set[int] = set()

    def enter(self, module: torch.nn.Module, tier: int, leaf: bool, args: tuple, kwargs: dict) -> None:
        """Start a call. Only leaves are charged for reading their inputs: a
        container passes its arguments on to the children that read them."""
        stack = _local.__dict__.setdefault("stack", [])
        if not stack:
            _local.debt = 0.0
        inputs = [0, 0]
        if leaf and self.cost is not None:
            for tensor in input_tensors(args, kwargs):
                if tensor.untyped_storage().data_ptr() not in self.weight_storages:
                    inputs[_C.tier_of(tensor) == tiers.PM] += tensor.nbytes
        stack.append(_Frame(module, _C.get_tier(), time.perf_counter_ns(), _allocated(), tuple(inputs)))
        _C.set_tier(tier)

    def exit(self, path: str, module: torch.nn.Module, weights: Weights, args: tuple, kwargs: dict) -> None:
        """End a call: spin out the part of its slow-tier extra that its computation does not hide."""
        stack = _local.__dict__.get("stack")
        if not stack or stack[-1].module is not module:  # its pre-hook never ran
            return
        frame = stack.pop()
        _C.set_tier(frame.previous_tier)
        now = _allocated()
        allocated = tuple(n - s for n, s in zip(now, frame.allocated_at_start))
        own_ns = time.perf_counter_ns() - frame.start_ns - frame.child_ns
        extra = 0.0
        if self.cost is not None:
            extra = self._extra(own_ns * 1e-9, frame, allocated, module, weights, args, kwargs)
            # Owed delay is paid in spins of at least SPIN_QUANTUM, each timed from
            # here so that the call's own cost counts as paid. A spin's overrun is
            # credited to the next (at most one quantum: a spin stretched by
            # preemption must not cancel later ones); each forward starts afresh.
            _local.debt += extra
            if _local.debt >= SPIN_QUANTUM or (not stack and _local.debt > 0):
                start = time.perf_counter()
                _C.spin(_local.debt)
                _local.debt = max(_local.debt - (time.perf_counter() - start), -SPIN_QUANTUM)
        elapsed = time.perf_counter_ns() - frame.start_ns
        if stack:
            parent = stack[-1]
            parent.child_ns += elapsed
            parent.child_allocated = tuple(c + a for c, a in zip(parent.child_allocated, allocated))
        if self.recorder is not None:
            self.recorder(path, own_ns * 1e-9, extra)

    def _extra(self, own: float, frame: _Frame, allocated: tuple[int, int], module: torch.nn.Module,
               weights: Weights, args: tuple, kwargs: dict) -> float:
        """The call's simulated extra (torch_tier.cost_model): its own writes, its inputs, its weights."""
        cost = self.cost
        writes = [a - c for a, c in zip(allocated, frame.child_allocated)]
        weight_dram, weight_extra = weights.seconds(cost, module, args, kwargs)
        dram = cost.dram_write(sum(writes)) + cost.dram_read(sum(frame.input_bytes)) + weight_dram
        pm_extra = cost.write_extra(writes[tiers.PM]) + cost.read_extra(frame.input_bytes[tiers.PM]) + weight_extra
        return cost_model.overlapped(pm_extra, own, dram)
