"""TierGraph: a model's placement graph, as data (torch_tier.capture builds one).

Nodes are what a policy places: leaf modules, modules whose own code
allocates (an attention block computing its scores), and modules that own
tensors. Per node: what it holds (weight bytes), what it allocates and for how
long, what it reads and writes per forward, and its own all-DRAM time. Edges:
which node's outputs each node reads. Buffers: every allocation of the
forward with its lifetime in allocator events, for footprints and planning.

A *generate graph* (``capture(..., generate=N)``) is the same data for a whole
greedy ``model.generate``: node figures and buffers cover the prefill and
every decode step, and ``generation`` says which share of them is the decode
steps' and which buffers are the KV cache. ``phase("prefill")`` and
``phase("decode")`` are graphs of one phase each (for time to first token and
tokens per second).
"""

from __future__ import annotations

import json
from bisect import bisect_right
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .policy import Placement, Policy
from .tiers import TIER_NAMES

EXTERNAL = -1  # edge source for model inputs and tensors made outside the forward
FORMAT = "torch-tier-graph"
VERSION = 1


@dataclass(frozen=True)
class Stream:
    """Bytes one call moves: `accesses` accesses, sequential or at random (embedding rows)."""

    bytes: int
    write: bool = False
    accesses: int = 1
    random: bool = False


@dataclass
class Node:
    """One placeable module. Byte and time totals are per forward (all its calls)."""

    path: str
    type: str
    calls: int
    leaf: bool
    weight_bytes: int  # its own parameters and buffers (a tied tensor counts at its first owner)
    weight_read: Stream  # what one call reads of its own weights
    alloc_bytes: int  # allocated by its own code
    activation_bytes: int  # of alloc_bytes, what outlives the call
    transient_peak_bytes: int  # peak of what its own code allocates and frees within one call
    input_bytes: int  # read from its inputs (leaves only; containers hand them on)
    output_bytes: int
    dram_time: float  # seconds of its own code, all tiers DRAM, median of repeats


@dataclass
class Edge:
    """Node `src` (or EXTERNAL) produced `bytes` that node `dst` reads per forward."""

    src: int
    dst: int
    bytes: int


@dataclass
class Buffer:
    """One allocation of the forward: its node's own code made it at event `alloc` and freed it at `free`."""

    node: int
    size: int
    alloc: int
    free: int  # == TierGraph.events when still live at the end (outputs)
    kv: bool = False  # part of the KV cache (generate graphs): its node's cache, grown by one step


@dataclass
class Generation:
    """What a generate graph adds: the decode steps' share of each node's and edge's figures.

    The prefill's share is the node's figure less the decode steps'. Figures
    are per generate call: the prefill (one forward over the prompt, giving
    the first token) and `new_tokens - 1` decode steps (one token each).
    """

    prompt_tokens: int
    new_tokens: int
    step_starts: list[int]  # the allocator event at which each forward starts: the prefill, then each decode step
    prefill_time: float  # seconds from the call to the first token, all DRAM (median)
    decode_calls: list[int]  # per node
    decode_alloc_bytes: list[int]
    decode_activation_bytes: list[int]
    decode_input_bytes: list[int]
    decode_output_bytes: list[int]
    decode_dram_time: list[float]
    decode_edge_bytes: list[int]  # per edge

    @property
    def decode_start(self) -> int:
        """The allocator event at which the first decode step starts."""
        return self.step_starts[1]


@dataclass
class TierGraph:
    model_name: str
    fingerprint: str
    nodes: list[Node]
    edges: list[Edge]
    buffers: list[Buffer]
    events: int
    base_time: float  # seconds per forward, all DRAM, with every node metered
    metadata: dict[str, Any] = field(default_factory=dict)
    generation: Generation | None = None  # set on a generate graph

    def index(self) -> dict[str, int]:
        return {node.path: i for i, node in enumerate(self.nodes)}

    def policy(self, placements: Sequence[Placement] | None = None, **metadata: Any) -> Policy:
        """A policy over this graph's nodes (all DRAM unless `placements` gives one per node)."""
        placements = placements or [Placement()] * len(self.nodes)
        return Policy(
            fingerprint=self.fingerprint,
            model_name=self.model_name,
            nodes={node.path: place for node, place in zip(self.nodes, placements)},
            metadata=dict(metadata),
        )

    def footprint(self, policy: Policy) -> dict[str, int]:
        """Peak bytes each tier holds under `policy`: its weights plus the peak of its live activations
        (of a split placement, the tier's exact share of the bytes, rounded once at the end)."""
        places = [policy.placement_of(n.path) for n in self.nodes]
        nodes, deltas = self._changes()
        out = {}
        for tier in TIER_NAMES:
            weights = sum(n.weight_bytes * p.share("weight", tier) for n, p in zip(self.nodes, places))
            shares = np.array([p.share("activation", tier) for p in places] or [0.0])
            live = np.cumsum(deltas * shares[nodes]) if len(deltas) else np.zeros(1)
            out[tier] = round(weights + max(0.0, float(live.max())))
        return out

    def _changes(self) -> tuple[np.ndarray, np.ndarray]:
        """(node, signed bytes) of every buffer's allocation and free in time order, frees before
        allocations at one event (lifetimes' order): the peak of any placement's live activations
        is the running sum's. Sorted once per list of buffers (a generate graph has thousands)."""
        key = (id(self.buffers), len(self.buffers))
        cached = self.__dict__.get("_changes_cache")
        if cached is None or cached[0] != key:
            changes = sorted([(b.alloc, True, b.node, b.size) for b in self.buffers] +
                             [(b.free, False, b.node, -b.size) for b in self.buffers], key=lambda c: c[:2])
            nodes = np.array([c[2] for c in changes], dtype=np.int64)
            cached = (key, (nodes, np.array([c[3] for c in changes], dtype=np.float64)))
            self.__dict__["_changes_cache"] = cached
        return cached[1]

    @property
    def new_tokens(self) -> int | None:
        """Tokens per generate call of a generate graph (what measure(generate=) takes); None for a forward."""
        return None if self.generation is None else self.generation.new_tokens

    def kv_bytes(self) -> list[int]:
        """The KV cache's bytes after each forward (the prefill, then each decode step): each step
        allocates the whole cache anew (one token longer), so what it allocates of it. Empty for a
        single forward."""
        if self.generation is None:
            return []
        starts = self.generation.step_starts
        sizes = [0] * len(starts)
        for b in self.buffers:
            if b.kv:
                sizes[bisect_right(starts, b.alloc) - 1] += b.size
        return sizes

    def phase(self, name: str) -> "TierGraph":
        """The graph of one phase of a generate graph, 'prefill' or 'decode': each node's and
        edge's share of that phase, the buffers it allocates, and its all-DRAM seconds."""
        gen = self.generation
        if gen is None:
            raise ValueError(f"{self.model_name}: not a generate graph (capture(..., generate=N))")
        if name not in ("prefill", "decode"):
            raise ValueError(f"phase: expected 'prefill' or 'decode', got {name!r}")
        decode = name == "decode"

        def share(total: float, in_decode: float) -> Any:
            return in_decode if decode else total - in_decode

        nodes = [replace(n, calls=share(n.calls, gen.decode_calls[i]),
                         alloc_bytes=share(n.alloc_bytes, gen.decode_alloc_bytes[i]),
                         activation_bytes=share(n.activation_bytes, gen.decode_activation_bytes[i]),
                         input_bytes=share(n.input_bytes, gen.decode_input_bytes[i]),
                         output_bytes=share(n.output_bytes, gen.decode_output_bytes[i]),
                         dram_time=share(n.dram_time, gen.decode_dram_time[i]))
                 for i, n in enumerate(self.nodes)]
        edges = [replace(e, bytes=share(e.bytes, b)) for e, b in zip(self.edges, gen.decode_edge_bytes)]
        buffers = [b for b in self.buffers if (b.alloc >= gen.decode_start) == decode]
        return replace(self, nodes=nodes, edges=[e for e in edges if e.bytes], buffers=buffers,
                       base_time=share(self.base_time, self.base_time - gen.prefill_time),
                       metadata={**self.metadata, "phase": name}, generation=None)

    def save(self, path: str | Path) -> None:
        data = {"format": FORMAT, "version": VERSION, **asdict(self)}
        Path(path).write_text(json.dumps(data) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "TierGraph":
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: cannot read a torch-tier graph ({err})") from None
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            raise ValueError(f"{path}: not a {FORMAT} version {VERSION} file")
        nodes = [Node(**{**n, "weight_read": Stream(**n["weight_read"])}) for n in data["nodes"]]
        return cls(
            model_name=data["model_name"],
            fingerprint=data["fingerprint"],
            nodes=nodes,
            edges=[Edge(**e) for e in data["edges"]],
            buffers=[Buffer(**b) for b in data["buffers"]],
            events=data["events"],
            base_time=data["base_time"],
            metadata=data.get("metadata", {}),
            generation=Generation(**data["generation"]) if data.get("generation") else None,
        )

    def summary(self) -> str:
        """A table of the nodes: type, calls, bytes held, allocated and read, own time."""
        timing = self.metadata.get("timing")
        spread = (f" ±{timing['precision']:.1%} (95% interval of the median, {timing['repeats']} forwards)"
                  if timing else "")
        run = "forward" if self.generation is None else f"generate call of {self.generation.new_tokens} tokens"
        rows = [f"{self.model_name}: {len(self.nodes)} nodes, {len(self.edges)} edges, {len(self.buffers)} "
                f"buffers, {self.base_time * 1e3:.1f} ms per {run} (all DRAM){spread}",
                f"{'node':48} {'type':20} {'calls':>5} {'weights':>10} {'allocs':>10} {'reads':>10} {'ms':>8}"]
        for n in self.nodes:
            rows.append(f"{(n.path or '<root>')[-48:]:48} {n.type[:20]:20} {n.calls:5d} {_mib(n.weight_bytes):>10} "
                        f"{_mib(n.alloc_bytes):>10} {_mib(n.input_bytes):>10} {n.dram_time * 1e3:8.3f}")
        return "\n".join(rows)


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f}M"
