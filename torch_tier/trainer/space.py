"""The search space: one graph's placements as small integer arrays.

A placement is an int8 array of shape (nodes, 2): column 0 the tier of a
node's weights, column 1 the tier of its activations, 0 for DRAM and 1 for
PM. A head with no bytes (a ReLU has no weights, a container may allocate
nothing) is no decision at all: it is pinned to DRAM, so two placements that
differ only there are one placement, and the learners never spend effort on it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..graph import TierGraph
from ..policy import Placement, Policy
from ..tiers import DRAM, TIER_NAMES

HEADS = ("weight", "activation")


class PlacementSpace:
    """Converts between placement arrays and Policies for one graph."""

    def __init__(self, graph: TierGraph):
        self.graph = graph
        self.nodes = len(graph.nodes)
        self.mask = np.array([[n.weight_bytes > 0, n.alloc_bytes > 0] for n in graph.nodes], dtype=bool)

    @property
    def decisions(self) -> int:
        """How many (node, head) choices are real."""
        return int(self.mask.sum())

    def clean(self, placement: np.ndarray) -> np.ndarray:
        """`placement` as int8 with every head of no bytes in DRAM."""
        return np.where(self.mask, placement, DRAM).astype(np.int8)

    def all_in(self, tier: int) -> np.ndarray:
        return self.clean(np.full((self.nodes, 2), tier, dtype=np.int8))

    def policy(self, placement: np.ndarray, **metadata: Any) -> Policy:
        places = [Placement(TIER_NAMES[w], TIER_NAMES[a]) for w, a in self.clean(placement)]
        return self.graph.policy(places, **metadata)

    def encode(self, policy: Policy) -> np.ndarray:
        """The placement array of `policy` over this graph's nodes."""
        rows = []
        for node in self.graph.nodes:
            place = policy.placement_of(node.path)
            rows.append([TIER_NAMES.index(place.weight), TIER_NAMES.index(place.activation)])
        return self.clean(np.array(rows, dtype=np.int8))

    @staticmethod
    def key(placement: np.ndarray) -> bytes:
        """A hashable identity of a (clean) placement, for caches and score tables."""
        return np.ascontiguousarray(placement, dtype=np.int8).tobytes()
