"""Placements of one graph in their three encodings, and every conversion between them.

- a Policy (policy.py): per node path, the tier of its weights and of its
  activations, by name: what is saved, loaded and run;
- a placement *array*: shape (nodes, 2), column 0 a node's weights,
  column 1 its activations, tiers.DRAM (0) or tiers.PM (1): what the
  trainer searches and the cost model prices. int8 for whole placements;
  float64 when any head is split, each entry then the share of the head's
  bytes in PM (0 < share < 1 for a split), so a whole entry reads the same;
- a decision *vector*: shape (2 * nodes,), every node's weights, then every
  node's activations: the MILP's variables and the columns of
  cost_model.GraphCosts.terms. ``items(graph)`` names its entries.

A head with no bytes (a ReLU has no weights, a container may allocate
nothing) is no decision: ``PlacementSpace.clean`` pins it to DRAM, so two
placements that differ only there are one placement. ``live_activations``
gives the exact DRAM footprint of arrays (see ``PlacementSpace``'s users,
trainer.budget and baselines.optimal). Imports only graph, policy, tiers and
lifetimes: the cost model, the baselines and the trainer all build on it.
"""

from __future__ import annotations

from typing import Any, Iterable, Literal

import numpy as np

from .graph import TierGraph
from .lifetimes import live_at_peaks
from .policy import HEADS, Placement, Policy
from .tiers import DRAM, PM, TIER_NAMES

SHARE_DIGITS = 12  # a split's share as Policies carry it from an array: 1 - (1 - 0.3) is not 0.3 in binary
Item = tuple[int, Literal["weight", "activation"]]  # (node index, which of its tensors): one decision


def items(graph: TierGraph) -> list[Item]:
    """The decision vector's entries: all nodes' weights, then all nodes' activations."""
    n = len(graph.nodes)
    return [(i, "weight") for i in range(n)] + [(i, "activation") for i in range(n)]


def to_array(graph: TierGraph, policy: Policy) -> np.ndarray:
    """`policy` over `graph`'s nodes as a placement array, as the policy says it (heads of
    no bytes included: PlacementSpace.encode also pins those to DRAM); float64 if any is split."""
    places = [policy.placement_of(node.path) for node in graph.nodes]
    if any(p.split for p in places):
        return np.array([[p.share(head, "pm") for head in HEADS] for p in places], dtype=float).reshape(-1, 2)
    return np.array([[TIER_NAMES.index(p.weight), TIER_NAMES.index(p.activation)] for p in places],
                    dtype=np.int8).reshape(-1, 2)


def is_split(placement: np.ndarray) -> bool:
    """Whether a placement array may hold splits (float64) rather than whole tiers (int8)."""
    return np.asarray(placement).dtype.kind == "f"


def placement_of(row: np.ndarray) -> Placement:
    """One node's Placement from its row of a placement array (whole or split)."""
    if not is_split(row):
        return Placement(TIER_NAMES[row[0]], TIER_NAMES[row[1]])
    return Placement(*(round(1.0 - float(pm), SHARE_DIGITS) for pm in row))


def of_items(graph: TierGraph, pm: Iterable[Item]) -> np.ndarray:
    """The placement array putting the items of `pm` on the slow tier, all others in DRAM."""
    out = np.full((len(graph.nodes), 2), DRAM, dtype=np.int8)
    for node, head in pm:
        out[node, HEADS.index(head)] = PM
    return out


def to_vector(placement: np.ndarray) -> np.ndarray:
    """A placement array as a decision vector (weights of every node, then activations)."""
    return placement.T.reshape(-1)


def from_vector(vector: np.ndarray) -> np.ndarray:
    """A decision vector as a placement array: the inverse of ``to_vector``."""
    return np.asarray(vector).reshape(2, -1).T.copy()


def live_activations(graph: TierGraph) -> np.ndarray:
    """(peaks, nodes): each node's live activation bytes at every moment the live set stops growing.

    Every peak of DRAM-resident activations, under any placement, is at one of
    these moments (lifetimes.live_at_peaks), so the DRAM footprint of an array
    p is exactly weights @ (p[:, 0] == DRAM) + max(live @ (p[:, 1] == DRAM)),
    graph.footprint's figure.
    """
    peaks = live_at_peaks((b.alloc, b.free, b.size, b.node) for b in graph.buffers)
    live = np.zeros((len(peaks), len(graph.nodes)))
    for row, held in enumerate(peaks):
        for node, nbytes in held.items():
            live[row, node] = nbytes
    return live


class PlacementSpace:
    """One graph's placement arrays: which heads are real decisions, and arrays <-> Policies."""

    def __init__(self, graph: TierGraph):
        self.graph = graph
        self.nodes = len(graph.nodes)
        self.mask = np.array([[n.weight_bytes > 0, n.alloc_bytes > 0] for n in graph.nodes],
                             dtype=bool).reshape(-1, 2)

    @property
    def decisions(self) -> int:
        """How many (node, head) choices are real."""
        return int(self.mask.sum())

    def clean(self, placement: np.ndarray) -> np.ndarray:
        """`placement` with every head of no bytes in DRAM: int8, or float64 if it may hold splits."""
        return np.where(self.mask, placement, DRAM).astype(float if is_split(placement) else np.int8)

    def all_in(self, tier: int) -> np.ndarray:
        """Every real decision in `tier`."""
        return self.clean(np.full((self.nodes, 2), tier, dtype=np.int8))

    def policy(self, placement: np.ndarray, **metadata: Any) -> Policy:
        """The Policy of a placement array (heads of no bytes in DRAM), with `metadata`."""
        return self.graph.policy([placement_of(row) for row in self.clean(placement)], **metadata)

    def encode(self, policy: Policy) -> np.ndarray:
        """The clean placement array of `policy` over this graph's nodes."""
        return self.clean(to_array(self.graph, policy))

    @staticmethod
    def key(placement: np.ndarray) -> bytes:
        """A hashable identity of a (clean) placement, for caches and score tables."""
        return np.ascontiguousarray(placement, dtype=float if is_split(placement) else np.int8).tobytes()
