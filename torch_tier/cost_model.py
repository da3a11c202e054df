"""The cost model: what a slow tier adds to a node's time, in one place.

Each stream of bytes a call moves to or from the slow tier costs the
difference between the stream's time on the slow device and on this host's
DRAM; part of that extra overlaps with the call's computation:

    extra(call) = pm_extra - min(OVERLAP * pm_extra, max(0, own - dram))

    pm_extra = sum over the call's streams s placed in pm of  t(s, pm) - t(s, dram)
    dram     = sum over all the call's streams of  t(s, dram)
    own      = the call's own time with everything in DRAM

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
- Overlap: `own - dram` is the time the call spends beyond moving its bytes
  at DRAM speed, i.e. computing. Slow-tier traffic proceeds during that
  time, as out-of-order cores and prefetchers let it, but never all of it:
  at most OVERLAP of the extra hides (a call's time also holds dispatch and
  interpreter overheads, during which no traffic flows). So a memory-bound
  call (a ReLU, a GEMV) pays its whole extra, and a compute-bound one (a
  large convolution) pays (1 - OVERLAP) of it. OVERLAP is a modelling
  choice, not a device figure: 0 gives a model linear in the bytes in pm.
- Device figures are the profile's ratios to the reference DRAM applied to
  this host's measured DRAM (torch_tier.devices, torch_tier.host).

- A split stream (policy format 2: the first pages of each tensor in DRAM,
  the rest in pm) is priced by its parts, served by the two tiers at once:
  its time is that of the slower part, not the sum,

    t(s split, pm share x) = max(t(x s, pm), t((1 - x) s, dram))

  so its extra over DRAM is max(x P - D, -x D) with P = t(s, pm) and
  D = t(s, dram): convex in x, P - D at x = 1, 0 at x = 0, and below 0
  (faster than DRAM alone, both tiers' bandwidth in use) between 0 and
  D / (P + D). This is what Linux's weighted interleave
  (MPOL_WEIGHTED_INTERLEAVE, kernel 6.9) exploits: 24% geomean over
  DRAM-only on Xeon 6 with CXL memory (arXiv 2412.12491); Caption (MICRO
  2023) tunes the share online. It assumes both tiers are kept busy at
  once (an op's threads and the prefetchers reading both parts); a single
  thread reading the parts one after the other would pay the sum. A saving
  is overlapped as an extra is: (1 - OVERLAP) of it shows.

- Parallel tiers under load (an optional structure, which calibration fits
  when timed runs call for it: torch_tier.calibrate): the tiers serve a
  node's streams at once, and this job gets a share s of this host's DRAM
  bandwidth (below 1 when co-running jobs load it), so a node's memory time
  is the slower tier's, and its extra is

    L = max((U - moved) / s, slow) - U
    U     = the node's streams' seconds, all in (unloaded) DRAM
    moved = sum over its streams in pm of  x t(s, dram)       (x: pm share)
    slow  = sum over its streams in pm of  x t(s, pm)

  which can fall below 0: with DRAM loaded, moving streams to the slow tier
  relieves it (Colloid, SOSP 2024; weighted interleave's gain, above). Each
  piece is affine in the pm shares, so L stays convex and the optimum a
  MILP (``GraphCosts.pieces``). With s = 1 and whole tensors it still
  differs from the default: the default adds the tiers' times.

Because of the overlap, a placement's extra is not the sum of its tensors'
extras: two tensors of a compute-bound node may each be free alone in pm
but not together. The simulated tier spins out exactly this extra after
each call (torch_tier.emulated), so prediction and emulation agree, and the
model stays exactly optimisable (convex and piecewise linear in the
placement: baselines.optimal).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import numpy as np
import torch

from . import devices, host
from .graph import Stream, TierGraph
from .placement import is_split, to_array, to_vector
from .policy import Policy
from .traffic import Traffic, TrafficStream

MEMORY_PARALLELISM = 10  # outstanding cache misses per core for independent random accesses
OVERLAP = 0.5  # at most this share of a call's slow-tier extra hides behind its computation


def overlapped(pm_extra: float, own: float, dram: float) -> float:
    """The part of a call's slow-tier extra its computation does not hide (see the module doc)."""
    return pm_extra - min(OVERLAP * pm_extra, max(0.0, own - dram))


def split_extra(extra: np.ndarray | float, dram: np.ndarray | float, pm_share: np.ndarray | float) -> np.ndarray:
    """Extra seconds of streams whose whole extra is `extra` and DRAM time `dram`, with `pm_share` of
    their bytes in pm served beside the rest in DRAM: max(x P - D, -x D) with P = extra + D (module doc);
    exactly extra * x at x = 0 and 1."""
    return np.maximum(pm_share * (extra + dram) - dram, -pm_share * dram)


@dataclass(frozen=True)
class CostModel:
    """Per-stream seconds on this host's DRAM, and extra seconds on the slow tier `device`."""

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

    def in_dram(self, stream: Stream) -> float:
        """Seconds `stream` takes in DRAM."""
        return self.seconds(stream, self.dram) if stream.bytes > 0 else 0.0

    def call_extra(self, traffic: Traffic) -> float:
        """The device model of a built-in profile: one call's extra seconds, as this cost model prices
        the streams the call moved (the emulated tier calls it after every call); the parts of a split
        stream are served at once, so it takes as long as its slower part."""
        pm_extra = dram = 0.0
        parts: dict[int, list[TrafficStream]] = {}
        for stream in traffic.streams:
            dram += self.in_dram(stream)
            if stream.split:
                parts.setdefault(stream.split, []).append(stream)
            elif stream.tier == "pm":
                pm_extra += self.extra(stream)
        for split in parts.values():
            slowest = max((self.seconds(s, self.pm if s.tier == "pm" else self.dram) for s in split if s.bytes > 0),
                          default=0.0)
            pm_extra += slowest - sum(self.in_dram(s) for s in split)
        return overlapped(pm_extra, traffic.seconds, dram)

    @cached_property
    def _per_byte(self) -> dict[tuple[bool, bool], float]:
        """(write, extra) -> seconds per byte of a sequential stream: its extra, or its DRAM time."""
        gib = 1 << 30
        return {(write, extra): (self.extra if extra else self.in_dram)(Stream(gib, write=write)) / gib
                for write in (False, True) for extra in (False, True)}

    def write_extra(self, nbytes: int) -> float:
        """Extra seconds to write `nbytes` sequentially to the slow tier (cheap: called per node call)."""
        return nbytes * self._per_byte[True, True]

    def read_extra(self, nbytes: int) -> float:
        """Extra seconds to read `nbytes` sequentially from the slow tier."""
        return nbytes * self._per_byte[False, True]

    def dram_write(self, nbytes: int) -> float:
        """Seconds to write `nbytes` sequentially to DRAM."""
        return nbytes * self._per_byte[True, False]

    def dram_read(self, nbytes: int) -> float:
        """Seconds to read `nbytes` sequentially from DRAM."""
        return nbytes * self._per_byte[False, False]


@lru_cache(maxsize=16)
def cost_model(device: str = "optane-100") -> CostModel:
    """The cost model of `device` on this host (calibrated once, cached)."""
    memory = host.host()
    return CostModel(device, devices.scaled(device, memory), devices.scaled(devices.reference().name, memory))


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


@dataclass(frozen=True)
class GraphCosts:
    """The cost model of one graph on one device, per node and forward (all its calls):
    the extra each placement decision adds to each node's slow-tier traffic, and
    how much of a node's extra its computation hides."""

    weight: np.ndarray  # (nodes,) if the node's weights are in pm
    write: np.ndarray  # (nodes,) if its activations are in pm: its own writes
    read_src: np.ndarray  # (edges,) per edge between nodes: the producer,
    read_dst: np.ndarray  # the reader,
    read: np.ndarray  # and the reader's extra when the producer's activations are in pm
    compute: np.ndarray  # (nodes,) max(0, own time - time of all its traffic in DRAM)
    base_time: float  # the graph's seconds per forward, all DRAM
    # The same streams' seconds in DRAM, for pricing splits (None: terms fitted without them, whole only).
    weight_dram: np.ndarray | None = None  # (nodes,)
    write_dram: np.ndarray | None = None  # (nodes,)
    read_dram: np.ndarray | None = None  # (edges,)
    node_dram: np.ndarray | None = None  # (nodes,) seconds of all the node's traffic in DRAM, inputs from outside too
    # None: a node's tiers serve its streams one after the other (the default model); a share of this
    # host's DRAM bandwidth: they serve them at once, DRAM loaded to that share (module doc, parallel tiers)
    dram_share: float | None = None

    def linear(self, placement: np.ndarray) -> np.ndarray:
        """Each node's slow-tier extra before overlap, for a (nodes, 2) array of
        0/1 = DRAM/PM (column 0 weights, column 1 activations), or of PM shares (splits)."""
        weights, activations = placement[:, 0], placement[:, 1]
        if self.dram_share is not None:
            return self._parallel(placement)
        if is_split(placement):
            node, decision, extra, dram = self.entries()
            out = np.zeros(len(self.weight))
            np.add.at(out, node, split_extra(extra, dram, to_vector(placement)[decision]))
            return out
        out = self.weight * weights + self.write * activations
        np.add.at(out, self.read_dst, self.read * activations[self.read_src])
        return out

    def _parallel(self, placement: np.ndarray) -> np.ndarray:
        """Each node's extra before overlap with parallel tiers and loaded DRAM (module doc)."""
        node, decision, extra, dram = self.entries()
        x = to_vector(placement)[decision].astype(float)
        n = len(self.weight)
        moved = np.bincount(node, weights=x * dram, minlength=n)
        slow = np.bincount(node, weights=x * (extra + dram), minlength=n)
        return np.maximum((self._node_dram() - moved) / self.dram_share, slow) - self._node_dram()

    def _node_dram(self) -> np.ndarray:
        if self.node_dram is None:
            raise ValueError("these cost terms have no DRAM seconds per node, so they cannot price parallel tiers")
        return self.node_dram

    def pieces(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """Affine pieces (A (nodes, decisions), b (nodes,)) whose largest, A x + b, is each node's extra
        before overlap, x the decision vector: one piece when tiers add (whole placements only), two
        when they serve at once (exact for split shares too)."""
        if self.dram_share is None:
            return [(self.terms(), np.zeros(len(self.weight)))]
        node, decision, _, dram = self.entries()
        moved = np.zeros((len(self.weight), 2 * len(self.weight)))
        np.add.at(moved, (node, decision), dram)
        total = self._node_dram()
        return [(-moved / self.dram_share, total / self.dram_share - total), (self.terms() + moved, -total)]

    def entries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every stream of the model as (node, decision, extra, dram): the node whose extra it adds to,
        the decision that puts it in pm (every node's weights, then every node's activations), its extra
        when wholly in pm and its seconds in DRAM (ValueError if these terms have none)."""
        if self.weight_dram is None or self.write_dram is None or self.read_dram is None:
            raise ValueError("these cost terms have no DRAM seconds per stream, so they cannot price splits")
        n = len(self.weight)
        nodes = np.arange(n)
        return (np.concatenate([nodes, nodes, self.read_dst]),
                np.concatenate([nodes, n + nodes, n + self.read_src]),
                np.concatenate([self.weight, self.write, self.read]),
                np.concatenate([self.weight_dram, self.write_dram, self.read_dram]))

    def terms(self) -> np.ndarray:
        """(nodes, 2 * nodes): what each decision alone in pm adds to each node's extra before
        overlap; decisions are every node's weights, then every node's activations."""
        n = len(self.weight)
        out = np.zeros((n, 2 * n))
        out[np.arange(n), np.arange(n)] = self.weight
        out[np.arange(n), n + np.arange(n)] = self.write
        np.add.at(out, (self.read_dst, n + self.read_src), self.read)
        return out

    def extras(self, placement: np.ndarray) -> np.ndarray:
        """Each node's extra seconds per forward under `placement`."""
        linear = self.linear(placement)
        return linear - np.minimum(OVERLAP * linear, self.compute)

    def latency(self, placement: np.ndarray) -> float:
        """Seconds per forward under `placement`: the all-DRAM time plus every node's extra."""
        return self.base_time + float(self.extras(placement).sum())


def dram_seconds(graph: TierGraph, cost: CostModel) -> np.ndarray:
    """(nodes,) seconds per forward each node's traffic takes with all of it in DRAM: inputs, writes, weights."""
    return np.array([cost.dram_read(node.input_bytes) + cost.dram_write(node.alloc_bytes)
                     + max(node.calls, 1) * cost.in_dram(node.weight_read) for node in graph.nodes])


def graph_costs(graph: TierGraph, device: str = "optane-100") -> GraphCosts:
    """The per-node, per-decision terms of the cost model of `graph` on `device`."""
    cost = cost_model(device)
    calls = np.array([max(node.calls, 1) for node in graph.nodes], dtype=float)
    edges = [e for e in graph.edges if e.src >= 0]
    dram = dram_seconds(graph, cost)
    own = np.array([node.dram_time for node in graph.nodes])
    return GraphCosts(
        weight=np.array([c * cost.extra(node.weight_read) if node.weight_bytes else 0.0
                         for c, node in zip(calls, graph.nodes)]),
        write=np.array([cost.write_extra(node.alloc_bytes) for node in graph.nodes]),
        read_src=np.array([e.src for e in edges], dtype=int),
        read_dst=np.array([e.dst for e in edges], dtype=int),
        read=np.array([cost.read_extra(e.bytes) for e in edges]),
        compute=np.maximum(0.0, own - dram),
        base_time=graph.base_time,
        weight_dram=np.array([c * cost.in_dram(node.weight_read) if node.weight_bytes else 0.0
                              for c, node in zip(calls, graph.nodes)]),
        write_dram=np.array([cost.dram_write(node.alloc_bytes) for node in graph.nodes]),
        read_dram=np.array([cost.dram_read(e.bytes) for e in edges]),
        node_dram=dram,
    )


def predict(graph: TierGraph, policy: Policy, device: str = "optane-100") -> float:
    """Seconds per forward under `policy`: the all-DRAM time plus every node's slow-tier extra."""
    return graph_costs(graph, device).latency(to_array(graph, policy))


@dataclass(frozen=True)
class GenerateFigures:
    """Predicted seconds of one generate call: to its first token (the prefill), then its decode steps."""

    first_token: float
    decode: float
    new_tokens: int

    @property
    def seconds(self) -> float:
        return self.first_token + self.decode

    @property
    def decode_tokens_per_s(self) -> float:
        """The new tokens after the first, per second of the decode steps (as Measurement's)."""
        return (self.new_tokens - 1) / self.decode


def predict_generate(graph: TierGraph, policy: Policy, device: str = "optane-100") -> GenerateFigures:
    """Time to first token and decode time of a generate graph under `policy`, each phase
    priced apart (graph.phase): `predict` prices each node's calls of both phases together,
    so their sum can differ from it by how much of a node's traffic in one phase its
    computation in the other would hide."""
    if graph.generation is None:
        raise ValueError(f"{graph.model_name}: not a generate graph (capture(..., generate=N))")
    return GenerateFigures(predict(graph.phase("prefill"), policy, device), predict(graph.phase("decode"), policy, device),
                           graph.generation.new_tokens)
