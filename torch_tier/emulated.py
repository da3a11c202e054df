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

Split tensors (policy format 2) are charged by their parts, as the
allocator placed them: a split weight or input is one stream in two parts
(its DRAM bytes and its pm bytes, TrafficStream.split), and so are the
bytes a call wrote into split blocks (_C.thread_split_allocated), which the
cost model prices as both tiers serving them at once.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Callable

import torch

from . import _C, clocks, cost_model, tiers
from .graph import Stream
from .tensors import input_tensors
from .traffic import Traffic, TrafficStream, in_tiers

DeviceModel = Callable[[Traffic], float]  # extra seconds the slow tier adds to one call

SPIN_QUANTUM = 20e-6  # seconds of simulated delay gathered before one spin
WEIGHT_SPLIT = 1  # the TrafficStream.split number of a call's split weights (its first streams)

_local = threading.local()


@dataclass
class Frame:
    """One metered call in progress (its caller keeps it, and its parent's, for exit)."""

    start_ns: int
    allocated_at_start: tuple[int, int, int, int]  # this thread's _allocated() when the call began
    child_ns: int = 0
    child_allocated: tuple[int, int, int, int] = (0, 0, 0, 0)


# Called after each metered call: (node path, its own seconds, simulated extra seconds).
CallRecorder = Callable[[str, float, float], None]


def _allocated() -> tuple[int, int, int, int]:
    """This thread's bytes allocated so far in DRAM and pm, then those of them in split blocks."""
    return (_C.thread_allocated(tiers.DRAM), _C.thread_allocated(tiers.PM),
            _C.thread_split_allocated(tiers.DRAM), _C.thread_split_allocated(tiers.PM))


def pm_share(tensor: torch.Tensor) -> float:
    """The share of the bytes of `tensor`'s storage in pm: 0 or 1 for a whole block (DRAM for memory
    torch-tier did not allocate), between for a split block (whose first bytes are in DRAM)."""
    dram, pm = _C.tier_bytes(tensor)
    if not (dram and pm):
        return 1.0 if pm else 0.0
    nbytes = tensor.untyped_storage().nbytes()
    return (nbytes - min(dram, nbytes)) / nbytes


@dataclass(frozen=True)
class Weights:
    """A metered node's own weights: the streams a call reads of them (two parts when split), made
    once for a module that reads them whole every call, or per call for an embedding lookup (rows
    at random)."""

    bytes: int
    pm_share: float  # of the bytes: 0 or 1 (whole), or between (split)
    streams: tuple[TrafficStream, ...] | None = None

    @classmethod
    def of(cls, module: torch.nn.Module, tensors: list[torch.Tensor]) -> "Weights":
        nbytes = sum(t.untyped_storage().nbytes() for t in tensors)
        shares = [pm_share(t) for t in tensors]
        if all(share in (0, 1) for share in shares):
            share = float(any(shares))
        else:
            share = sum(t.untyped_storage().nbytes() * s for t, s in zip(tensors, shares)) / nbytes
        if cost_model.is_sparse(module):
            return cls(nbytes, share)
        return cls(nbytes, share, tuple(in_tiers(Stream(nbytes), share, WEIGHT_SPLIT, extent=nbytes)))

    def read(self, module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[TrafficStream, ...]:
        """What this call reads of the weights."""
        if self.streams is not None:
            return self.streams
        rows = cost_model.weight_stream(module, self.bytes, args, kwargs)
        return tuple(in_tiers(rows, self.pm_share, WEIGHT_SPLIT, extent=self.bytes))


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
            inputs = self._inputs(args, kwargs) if leaf else ((0, 0), [])
            traffic = self.traffic(path, own_ns * 1e-9, frame, inputs, allocated, weights.read(module, args, kwargs))
            extra = self.device(traffic)
            split = any(s.split for s in traffic.streams)
            if not (extra >= 0.0 or (split and extra > -math.inf)):
                raise ValueError(f"device model {self.device!r} returned {extra!r} seconds for {path!r}: "
                                 "expected a number >= 0 (below 0 only for a call with split streams)")
            # Owed delay is paid in spins of at least SPIN_QUANTUM, each timed from
            # here so that the call's own cost counts as paid. A spin's overrun is
            # credited to the next (at most one quantum: a spin stretched by
            # preemption must not cancel later ones); each forward starts afresh.
            # A call faster than DRAM alone (split streams served by both tiers at
            # once) is a credit against the delay later calls of the forward owe:
            # the emulated tier cannot make this machine's DRAM faster, so a credit
            # left at the forward's end is lost, and timed splits read slower than
            # the cost model predicts them by that much.
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

    def _inputs(self, args: tuple, kwargs: dict) -> tuple[tuple[int, int], list[tuple[int, float]]]:
        """A call's inputs, the model's weights excluded: bytes of whole ones per tier, and
        (bytes, pm share) of each split one."""
        whole, split = [0, 0], []
        for tensor in input_tensors(args, kwargs):
            if tensor.untyped_storage().data_ptr() not in self.weight_storages:
                share = pm_share(tensor)
                if share in (0, 1):
                    whole[int(share)] += tensor.nbytes
                else:
                    split.append((tensor.nbytes, share))
        return (whole[0], whole[1]), split

    def traffic(self, path: str, own: float, frame: Frame,
                inputs: tuple[tuple[int, int], list[tuple[int, float]]], allocated: tuple[int, int, int, int],
                weights: tuple[TrafficStream, ...]) -> Traffic:
        """What the call moved: its weights, its inputs and its own writes, per tier; split ones in parts."""
        dram, pm, split_dram, split_pm = (a - c for a, c in zip(allocated, frame.child_allocated))
        whole_inputs, split_inputs = inputs
        streams = [s for s in weights if s.bytes]
        for index, (tier, written) in enumerate(zip(tiers.TIER_NAMES, (dram - split_dram, pm - split_pm))):
            if whole_inputs[index]:
                streams.append(TrafficStream(whole_inputs[index], tier=tier))
            if written:
                streams.append(TrafficStream(written, write=True, tier=tier))
        for nbytes, share in split_inputs:
            streams += in_tiers(Stream(nbytes), share, len(streams) + 1)
        if split_dram or split_pm:
            number = len(streams) + 1
            streams += [TrafficStream(split_dram, write=True, tier="dram", split=number),
                        TrafficStream(split_pm, write=True, tier="pm", split=number)]
        return Traffic(path, own, self.threads, tuple(streams))
