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
    tensors the stream touched (an embedding table, not just the rows read; else `bytes`).

    A stream of split tensors (policy format 2) is two TrafficStreams, its DRAM part and its pm
    part, with the same nonzero `split`: a device model that sums per tier sees both, and the
    cost model prices the two tiers serving the parts at once (CostModel.call_extra).
    """

    tier: str = "dram"
    extent: int = 0
    split: int = 0  # nonzero: a part of the split stream of that number (unique within its Traffic)

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


def in_tiers(stream: Stream, pm_share: float, split: int, extent: int = 0) -> list[TrafficStream]:
    """`stream` with `pm_share` of its bytes (and accesses) in pm: one TrafficStream of its tier
    when whole, else its DRAM and its pm part, numbered `split`."""
    if pm_share in (0, 1):
        return [TrafficStream(stream.bytes, stream.write, stream.accesses, stream.random,
                              tier="pm" if pm_share else "dram", extent=extent)]
    pm_bytes, pm_accesses = round(stream.bytes * pm_share), round(stream.accesses * pm_share)
    return [TrafficStream(nbytes, stream.write, max(accesses, 1), stream.random, tier=tier,
                          extent=round(extent * share), split=split)
            for tier, nbytes, accesses, share in (("dram", stream.bytes - pm_bytes, stream.accesses - pm_accesses,
                                                   1 - pm_share), ("pm", pm_bytes, pm_accesses, pm_share))]


def graph_traffic(graph: TierGraph, placement: np.ndarray) -> list[Traffic]:
    """One Traffic per node, per forward, as the graph says it moves under `placement` ((nodes, 2) PM
    shares, 0/1 = DRAM/PM: weights, activations). The capture's averages, not an observation: for
    analysing a device model offline (its optimum on a graph), never for timing."""
    whole: dict[int, list[int]] = {}  # per reader: bytes read from whole producers, per tier
    split: dict[int, list[tuple[int, float]]] = {}  # per reader: (bytes, pm share) read from each split producer
    for edge in graph.edges:
        if edge.src >= 0:
            share = placement[edge.src, 1]
            if share in (0, 1):
                whole.setdefault(edge.dst, [0, 0])[int(share)] += edge.bytes
            else:
                split.setdefault(edge.dst, []).append((edge.bytes, share))
    out = []
    for i, node in enumerate(graph.nodes):
        calls = max(node.calls, 1)
        w = node.weight_read
        streams = []
        if node.weight_bytes and w.bytes:
            streams += in_tiers(Stream(w.bytes * calls, accesses=w.accesses * calls, random=w.random),
                                placement[i, 0], len(streams) + 1, extent=node.weight_bytes)
        for tier, nbytes in zip(("dram", "pm"), whole.get(i, [0, 0])):
            if nbytes:
                streams.append(TrafficStream(nbytes, tier=tier))
        for nbytes, share in split.get(i, []):
            streams += in_tiers(Stream(nbytes), share, len(streams) + 1)
        external = node.input_bytes - sum(whole.get(i, [0, 0])) - sum(b for b, _ in split.get(i, []))
        if external > 0:
            streams.append(TrafficStream(external, tier="dram"))
        if node.alloc_bytes:
            streams += in_tiers(Stream(node.alloc_bytes, write=True), placement[i, 1], len(streams) + 1)
        out.append(Traffic(node.path, node.dram_time, 1, tuple(streams)))
    return out
