"""TierGraph: a model's placement graph, as data (torch_tier.capture builds one).

Nodes are what a policy places: leaf modules, modules whose own code
allocates (an attention block computing its scores), and modules that own
tensors. Per node: what it holds (weight bytes), what it allocates and for how
long, what it reads and writes per forward, and its own all-DRAM time. Edges:
which node's outputs each node reads. Buffers: every allocation of the
forward with its lifetime in allocator events, for footprints and planning.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .lifetimes import peak_live_bytes
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
        out = {}
        for tier in TIER_NAMES:
            weights = sum(n.weight_bytes * p.share("weight", tier) for n, p in zip(self.nodes, places))
            shares = [p.share("activation", tier) for p in places]
            out[tier] = round(weights + peak_live_bytes((b.alloc, b.free, b.size * shares[b.node])
                                                        for b in self.buffers if shares[b.node]))
        return out

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
        )

    def summary(self) -> str:
        """A table of the nodes: type, calls, bytes held, allocated and read, own time."""
        timing = self.metadata.get("timing")
        spread = (f" ±{timing['precision']:.1%} (95% interval of the median, {timing['repeats']} forwards)"
                  if timing else "")
        rows = [f"{self.model_name}: {len(self.nodes)} nodes, {len(self.edges)} edges, {len(self.buffers)} "
                f"buffers, {self.base_time * 1e3:.1f} ms per forward (all DRAM){spread}",
                f"{'node':48} {'type':20} {'calls':>5} {'weights':>10} {'allocs':>10} {'reads':>10} {'ms':>8}"]
        for n in self.nodes:
            rows.append(f"{(n.path or '<root>')[-48:]:48} {n.type[:20]:20} {n.calls:5d} {_mib(n.weight_bytes):>10} "
                        f"{_mib(n.alloc_bytes):>10} {_mib(n.input_bytes):>10} {n.dram_time * 1e3:8.3f}")
        return "\n".join(rows)


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f}M"
