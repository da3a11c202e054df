"""Traffic: what one call of one node moved, as the emulated tier observed it.

A device model (torch_tier.register_device) is a function of a Traffic:
the extra seconds the slow tier adds to that call. The streams are what the
call really touched while it ran (its own weights, what its own code
allocated and in which tier, its inputs and where they live), not the
capture's per-forward averages.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .graph import Stream, TierGraph


@dataclass(frozen=True)
class TrafficStream(Stream):
    """Bytes one call moved in one tier: `tier` is "dram" or "pm"; `extent` is the bytes of the
    tensors the stream touched (an embedding table, not just the rows read; else `bytes`)."""

    tier: str = "dram"
    extent: int = 0

    @property
    def footprint(self) -> int:
        return self.extent or self.bytes


@dataclass(frozen=True)
class Traffic:
    """One call of node `path`: its own seconds as it ran (children excluded, no delay included),
    the intra-op threads it could use, and every stream it moved."""

    path: str
    seconds: float
    threads: int
    streams: tuple[TrafficStream, ...]

    def in_tier(self, tier: str) -> tuple[TrafficStream, ...]:
        return tuple(s for s in self.streams if s.tier == tier and s.bytes > 0)


def graph_traffic(graph: TierGraph, placement: np.ndarray) -> list[Traffic]:
    """One Traffic per node, per forward, as the graph says it moves under `placement` ((nodes, 2) 0/1 =
    DRAM/PM: weights, activations). The capture's averages, not an observation: for analysing a device
    model offline (its optimum on a graph), never for timing."""
    tiers = ("dram", "pm")
    reads: dict[int, list[int]] = {}
    for edge in graph.edges:
        if edge.src >= 0:
            reads.setdefault(edge.dst, [0, 0])[placement[edge.src, 1]] += edge.bytes
    out = []
    for i, node in enumerate(graph.nodes):
        calls = max(node.calls, 1)
        weight_tier, act_tier = tiers[placement[i, 0]], tiers[placement[i, 1]]
        w = node.weight_read
        streams = []
        if node.weight_bytes and w.bytes:
            streams.append(TrafficStream(w.bytes * calls, accesses=w.accesses * calls, random=w.random,
                                         tier=weight_tier, extent=node.weight_bytes))
        external = node.input_bytes - sum(reads.get(i, [0, 0]))
        for tier, nbytes in zip(tiers, reads.get(i, [0, 0])):
            if nbytes:
                streams.append(TrafficStream(nbytes, tier=tier))
        if external > 0:
            streams.append(TrafficStream(external, tier="dram"))
        if node.alloc_bytes:
            streams.append(TrafficStream(node.alloc_bytes, write=True, tier=act_tier))
        out.append(Traffic(node.path, node.dram_time, 1, tuple(streams)))
    return out
