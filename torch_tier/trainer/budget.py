"""The DRAM budget as a hard constraint: exact footprints, repair, and a smooth relaxation.

Candidates over the budget are *repaired*, never penalised: the DRAM items
the candidate itself wants least (lowest probability of DRAM under the member
that proposed it) move to PM, fewest first, until the placement fits; then
the PM items it wants most come back to DRAM while they still fit, so no
DRAM is left idle (the trainer times the model member's optimum unrepaired:
on a fitted model with DRAM loaded, leaving some free can be the point). So
every placement that is timed, stored in the replay buffer or returned fits,
and the search learns nothing from placements that could not run. The
repair order comes from the candidate, not from a cost heuristic, so it adds
no knowledge of its own: a member that ranks its items well is repaired well.

The footprint is graph.footprint's, computed for many placements at once:
weights in DRAM plus the peak over time of DRAM-resident live activations.
The live activation bytes of every node at each moment the live set stops
growing form a matrix `live` (placement.live_activations, one row per such
moment), so the DRAM activation peak of a placement is `max(live @ in_dram)`,
exact: every peak of graph.footprint is at one of those moments.
"""

from __future__ import annotations

import numpy as np
import torch

from ..baselines import BudgetSpec, dram_budget
from ..placement import PlacementSpace, live_activations
from ..tiers import DRAM, PM


class Budget:
    """A DRAM budget over one graph's placement arrays: the limit in bytes (`spec` read by
    baselines.dram_budget, BudgetError if unreadable or below what every placement needs)
    and the exact footprint of arrays against it."""

    def __init__(self, space: PlacementSpace, spec: BudgetSpec):
        self.space = space
        self.limit = dram_budget(space.graph, spec)
        self.weights = np.array([n.weight_bytes for n in space.graph.nodes], dtype=np.float64)
        self.live = live_activations(space.graph)

    def dram_bytes(self, placement: np.ndarray) -> int:
        """DRAM footprint of one placement, (nodes, 2) or flattened (equal to graph.footprint's)."""
        in_dram = placement.reshape(-1, 2) == DRAM
        return int(self.weights @ in_dram[:, 0] + (self.live @ in_dram[:, 1]).max())

    def fits(self, placement: np.ndarray) -> bool:
        return self.dram_bytes(placement) <= self.limit

    def repair(self, placement: np.ndarray, dram_preference: np.ndarray) -> np.ndarray:
        """`placement` made to fit the budget, and to fill it, in the order of `dram_preference`.

        `dram_preference` (nodes, 2) ranks the items (higher: wanted more in DRAM).
        Evict: while over budget, the least-wanted DRAM items go to PM; the
        footprint only falls as items leave DRAM, so the fewest evictions that
        fit are found by bisection. Fill: then the most-wanted PM items come
        back to DRAM, each if it still fits (DRAM left empty is speed given away).
        """
        placement = self.space.clean(placement)
        if not self.fits(placement):
            placement = self._evict(placement, dram_preference.ravel())
        return self._fill(placement, dram_preference.ravel())

    def _evict(self, placement: np.ndarray, preference: np.ndarray) -> np.ndarray:
        flat = placement.ravel()
        candidates = np.flatnonzero((flat == DRAM) & self.space.mask.ravel())
        order = candidates[np.argsort(preference[candidates], kind="stable")]
        # The fewest evictions that fit; evicting all fits, since the limit is at least the all-PM footprint.
        k = _first_true(1, len(order), lambda k: self.fits(_moved(flat, order[:k], PM)))
        return _moved(flat, order[:k], PM).reshape(placement.shape)

    def _fill(self, placement: np.ndarray, preference: np.ndarray) -> np.ndarray:
        """Move PM items to DRAM, most wanted first, each if it fits.

        An item that does not fit now never will (the footprint only grows),
        so each round takes the items that fit alone, most wanted first, and
        moves the longest run of them that fits together (found by bisection);
        the item that ended the run is skipped and the next round goes on.
        """
        flat = placement.ravel().copy()
        while True:
            order = np.flatnonzero(self._fit_alone(flat.reshape(placement.shape)).ravel())
            if not len(order):
                return flat.reshape(placement.shape)
            order = order[np.argsort(-preference[order], kind="stable")]
            k = _first_true(1, len(order), lambda k: not self.fits(_moved(flat, order[:k + 1], DRAM)))
            flat = _moved(flat, order[:k], DRAM)
            if k == len(order):
                return flat.reshape(placement.shape)

    def _fit_alone(self, placement: np.ndarray) -> np.ndarray:
        """(nodes, 2): PM items that would fit if moved to DRAM alone."""
        in_dram = placement == DRAM
        weights = self.weights @ in_dram[:, 0]
        live = self.live @ in_dram[:, 1]
        with_weight = weights + self.weights + live.max()
        with_activation = weights + (live[:, None] + self.live).max(axis=0)
        return (np.stack([with_weight, with_activation], axis=1) <= self.limit) & ~in_dram & self.space.mask

    def relaxed_usage(self, p_dram: torch.Tensor) -> torch.Tensor:
        """Expected-placement footprint over the limit (1.0 = exactly at budget), differentiable.

        `p_dram` (nodes, 2) is each item's probability of DRAM; heads of no
        bytes count for nothing since their bytes are zero.
        """
        weights = torch.as_tensor(self.weights, dtype=p_dram.dtype)
        live = torch.as_tensor(self.live, dtype=p_dram.dtype)
        return (weights @ p_dram[:, 0] + (live @ p_dram[:, 1]).max()) / self.limit


def _moved(flat: np.ndarray, items: np.ndarray, tier: int) -> np.ndarray:
    out = flat.copy()
    out[items] = tier
    return out


def _first_true(low: int, high: int, predicate) -> int:
    """The least k in [low, high] with predicate(k), for a predicate false then true; `high` is
    taken to be true without asking."""
    while low < high:
        mid = (low + high) // 2
        if predicate(mid):
            high = mid
        else:
            low = mid + 1
    return low
