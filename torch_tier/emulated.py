"""The emulated slow tier: a device that exists only as delay, run beside real memory.

On `pm="sim:NAME"` the pm tier's bytes live in a real arena of this
machine's DRAM (torch_tier.arenas, csrc/arena_backend), and every placed node
is metered: after each call the Meter hands what the call moved (a Traffic:
its weights, its inputs and where they live, what its own code allocated in
which tier, its own time) to the device model, and spins out the extra
seconds the model returns, so the time a clock reads (torch_tier.clocks:
wall or the thread's CPU time) reflects the placement. The
device model of a built-in profile is the cost model itself
(CostModel.call_extra), so there a "measured" latency is the cost model's
prediction plus noise; a registered model (torch_tier.register_device,
torch_tier.device_models) can be a device the cost model does not describe.
The Session composes a Meter beside the allocator's backends; capture uses
one too, with every tensor in DRAM, to time each node's own code.

Delay is owed per thread: calls nest (a container's own code around its
children), and each call is charged for its own code only.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable

import torch

from . import _C, clocks, cost_model, tiers
from .tensors import input_tensors
from .traffic import Traffic, TrafficStream

DeviceModel = Callable[[Traffic], float]  # extra seconds the slow tier adds to one call

SPIN_QUANTUM = 20e-6  # seconds of simulated delay gathered before one spin

_local = threading.local()


@dataclass
class Frame:
    """One metered call in progress (its caller keeps it, and its parent's, for exit)."""

    start_ns: int
    allocated_at_start: tuple[int, int]  # this thread's bytes allocated so far, per tier
    child_ns: int = 0
    child_allocated: tuple[int, int] = (0, 0)


# Called after each metered call: (node path, its own seconds, simulated extra seconds).
CallRecorder = Callable[[str, float, float], None]


def _allocated() -> tuple[int, int]:
    return _C.thread_allocated(tiers.DRAM), _C.thread_allocated(tiers.PM)


@dataclass(frozen=True)
class Weights:
    """A metered node's own weights: the stream a call reads of them, made once for a module
    that reads them whole every call, or per call for an embedding lookup (rows at random)."""

    bytes: int
    tier: str
    stream: TrafficStream | None = None

    @classmethod
    def of(cls, module: torch.nn.Module, tensors: list[torch.Tensor]) -> "Weights":
        nbytes = sum(t.untyped_storage().nbytes() for t in tensors)
        tier = "pm" if any(tiers.tier_of(t) == "pm" for t in tensors) else "dram"
        if cost_model.is_sparse(module):
            return cls(nbytes, tier)
        return cls(nbytes, tier, TrafficStream(nbytes, tier=tier, extent=nbytes))

    def read(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> TrafficStream:
        """What this call reads of the weights."""
        if self.stream is not None:
            return self.stream
        rows = cost_model.weight_stream(module, self.bytes, args, kwargs)
        return TrafficStream(rows.bytes, accesses=rows.accesses, random=rows.random, tier=self.tier,
                             extent=self.bytes)


class Meter:
    """Hooks that time each node's call and charge its slow-tier traffic, as `device` prices it."""

    def __init__(self, device: DeviceModel | None, recorder: CallRecorder | None):
        self.device = device
        self.recorder = recorder
        self.threads = torch.get_num_threads()
        # Storages of the model's weights. A call that takes another module's weight as an input
        # (position ids, a tied table) is not charged for reading it: the graph has no such edge,
        # so the cost model does not price it either.
        self.weight_storages: set[int] = set()

    def enter(self, fresh: bool) -> Frame:
        """Start a call on this thread; `fresh`: no metered call encloses it (a forward begins,
        and the delay owed starts afresh)."""
        if fresh:
            _local.debt = 0.0
        return Frame(clocks.now_ns(), _allocated())

    def exit(self, frame: Frame, parent: Frame | None, path: str, module: torch.nn.Module, weights: Weights,
             leaf: bool, args: tuple, kwargs: dict) -> None:
        """End the call `frame` (within `parent`, the innermost metered call enclosing it): spin
        out the extra seconds the device model charges for it. Only leaves are charged for
        reading their inputs: a container passes its arguments on to the children that read them."""
        now = _allocated()
        allocated = tuple(n - s for n, s in zip(now, frame.allocated_at_start))
        own_ns = clocks.now_ns() - frame.start_ns - frame.child_ns
        extra = 0.0
        if self.device is not None:
            inputs = self._input_bytes(args, kwargs) if leaf else (0, 0)
            extra = self.device(self.traffic(path, own_ns * 1e-9, frame, inputs, allocated,
                                             weights.read(module, args, kwargs)))
            if not extra >= 0.0:
                raise ValueError(f"device model {self.device!r} returned {extra!r} seconds for {path!r}: "
                                 "expected a number >= 0")
            # Owed delay is paid in spins of at least SPIN_QUANTUM, each timed from
            # here so that the call's own cost counts as paid. A spin's overrun is
            # credited to the next (at most one quantum: a spin stretched by
            # preemption must not cancel later ones); each forward starts afresh.
            _local.debt += extra
            if _local.debt >= SPIN_QUANTUM or (parent is None and _local.debt > 0):
                start = clocks.now()
                clocks.spin(_local.debt)
                _local.debt = max(_local.debt - (clocks.now() - start), -SPIN_QUANTUM)
        elapsed = clocks.now_ns() - frame.start_ns
        if parent is not None:
            parent.child_ns += elapsed
            parent.child_allocated = tuple(c + a for c, a in zip(parent.child_allocated, allocated))
        if self.recorder is not None:
            self.recorder(path, own_ns * 1e-9, extra)

    def _input_bytes(self, args: tuple, kwargs: dict) -> tuple[int, int]:
        """Bytes of a call's inputs per tier, the model's weights excluded."""
        inputs = [0, 0]
        for tensor in input_tensors(args, kwargs):
            if tensor.untyped_storage().data_ptr() not in self.weight_storages:
                inputs[_C.tier_of(tensor) == tiers.PM] += tensor.nbytes
        return inputs[0], inputs[1]

    def traffic(self, path: str, own: float, frame: Frame, inputs: tuple[int, int], allocated: tuple[int, int],
                weights: TrafficStream) -> Traffic:
        """What the call moved: its weights, its inputs and its own writes, per tier."""
        writes = [a - c for a, c in zip(allocated, frame.child_allocated)]
        streams = [weights] if weights.bytes else []
        for index, tier in enumerate(tiers.TIER_NAMES):
            if inputs[index]:
                streams.append(TrafficStream(inputs[index], tier=tier))
            if writes[index]:
                streams.append(TrafficStream(writes[index], write=True, tier=tier))
        return Traffic(path, own, self.threads, tuple(streams))
