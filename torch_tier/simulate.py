"""The cost model: what a slow tier adds to a node's time, in one place.

A node's time under a placement is its measured all-DRAM time plus, for each
stream of bytes it moves to or from the slow tier, the difference between the
stream's time on the slow device and on this host's DRAM:

    extra(node) = sum over streams s placed in pm of  t(s, pm) - t(s, dram)

    t(s, dev) = s.bytes / bandwidth(dev, s.direction)                  sequential
    t(s, dev) = s.accesses * round_up(s.bytes / s.accesses, granularity(dev))
                  / bandwidth(dev, s.direction)
                + s.accesses * random_latency(dev) / MEMORY_PARALLELISM     random

- A sequential stream (a whole tensor) streams at bandwidth; its one
  latency is hidden by prefetching. A random stream (embedding rows) is one
  access per row, each rounded up to the device's access granularity, paying
  random latency with MEMORY_PARALLELISM misses in flight.
- A call's streams: its own weights read (every call), the bytes its own
  code allocates written into its activation tier, and each input read from
  wherever it lives (the producer's activation tier).
- Device figures are the profile's ratios to the reference DRAM applied to
  this host's calibrated DRAM (torch_tier.devices, torch_tier.calibrate).

The model is linear in the bytes placed in pm, and ignores overlap of compute with memory traffic, so it
is pessimistic for compute-bound layers; its merit is that prediction and the
simulated tier (which spins out exactly this extra time after each call)
agree, and that placements can be optimised exactly under it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING

import torch

from . import calibrate, devices

if TYPE_CHECKING:
    from .graph import TierGraph
    from .policy import Policy

MEMORY_PARALLELISM = 10  # outstanding cache misses per core for independent random accesses


@dataclass(frozen=True)
class Stream:
    """Bytes moved by one call: `accesses` accesses of `access_bytes` each."""

    bytes: int
    write: bool = False
    accesses: int = 1
    random: bool = False


@dataclass(frozen=True)
class CostModel:
    """Per-stream extra seconds of the slow tier `device` over this host's DRAM."""

    device: str
    pm: devices.ScaledProfile
    dram: devices.ScaledProfile

    def seconds(self, stream: Stream, dev: devices.ScaledProfile) -> float:
        bandwidth = (dev.write_bw_gbs if stream.write else dev.read_bw_gbs) * 1e9
        if stream.random:
            per_access = -(-stream.bytes // max(stream.accesses, 1))
            moved = stream.accesses * (-(-per_access // dev.granularity_bytes) * dev.granularity_bytes)
            latency = stream.accesses * dev.rand_latency_ns / MEMORY_PARALLELISM
        else:
            moved, latency = stream.bytes, 0.0
        return moved / bandwidth + latency * 1e-9

    def extra(self, stream: Stream) -> float:
        """Seconds `stream` costs on the slow tier beyond DRAM."""
        if stream.bytes <= 0:
            return 0.0
        return max(0.0, self.seconds(stream, self.pm) - self.seconds(stream, self.dram))

    @cached_property
    def _write_per_byte(self) -> float:
        return self.extra(Stream(1 << 30, write=True)) / (1 << 30)

    @cached_property
    def _read_per_byte(self) -> float:
        return self.extra(Stream(1 << 30)) / (1 << 30)

    def write_extra(self, nbytes: int) -> float:
        """Extra seconds to write `nbytes` sequentially to the slow tier (cheap: called per node call)."""
        return nbytes * self._write_per_byte

    def read_extra(self, nbytes: int) -> float:
        """Extra seconds to read `nbytes` sequentially from the slow tier."""
        return nbytes * self._read_per_byte


@lru_cache(maxsize=16)
def cost_model(device: str = "optane-100") -> CostModel:
    """The cost model of `device` on this host (calibrated once, cached)."""
    host = calibrate.host()
    return CostModel(device, devices.scaled(device, host), devices.scaled(devices.reference().name, host))


def is_sparse(module: torch.nn.Module) -> bool:
    """Whether the module reads only the weight rows its input indexes (embedding lookups)."""
    return isinstance(module, (torch.nn.Embedding, torch.nn.EmbeddingBag))


def weight_stream(module: torch.nn.Module, weight_bytes: int, args: tuple, kwargs: dict) -> Stream:
    """What one call reads of the module's own weights.

    Embedding lookups read only the rows they index, at random; every other
    module reads its weights once, sequentially.
    """
    if is_sparse(module) and args and torch.is_tensor(args[0]):
        rows = args[0].numel()
        row_bytes = module.embedding_dim * module.weight.element_size()
        return Stream(rows * row_bytes, accesses=rows, random=True)
    return Stream(weight_bytes)


def node_extras(graph: "TierGraph", policy: "Policy", device: str = "optane-100") -> list[float]:
    """Extra seconds per forward that each node of `graph` pays under `policy` on `device`."""
    cost = cost_model(device)
    places = [policy.placement_of(node.path) for node in graph.nodes]
    pm_inputs: dict[int, int] = defaultdict(int)
    for edge in graph.edges:
        if edge.src >= 0 and places[edge.src].activation == "pm":
            pm_inputs[edge.dst] += edge.bytes
    extras = []
    for i, (node, place) in enumerate(zip(graph.nodes, places)):
        calls = max(node.calls, 1)
        extra = calls * cost.read_extra(pm_inputs[i] // calls)
        if place.activation == "pm":
            extra += calls * cost.write_extra(node.alloc_bytes // calls)
        if place.weight == "pm" and node.weight_bytes:
            extra += calls * cost.extra(node.weight_read)
        extras.append(extra)
    return extras


def predict(graph: "TierGraph", policy: "Policy", device: str = "optane-100") -> float:
    """Seconds per forward under `policy`: the all-DRAM time plus every node's slow-tier extra."""
    return graph.base_time + sum(node_extras(graph, policy, device))
