"""Fixed fit rules, as placement functions and as baseline policies.

A rule looks at the page bitmap (1 = allocated) and returns the start
address of the free block it picks, or None when no block is large enough.
Blocks are placed at the start of the chosen hole; ties go to the lowest
address. `HIGH_LEVEL_RULES` is the environment's high-level action space
(0 = first, 1 = best, 2 = worst fit), in the paper's order.

Baselines act through the low-level action space (an address), so next fit,
which is not a high-level action, is evaluated the same way as the others.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Rule = Callable[[np.ndarray, int], "int | None"]


def free_blocks(bitmap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start addresses and lengths of the maximal free runs of `bitmap`, by address."""
    edges = np.diff(np.concatenate(([1], bitmap, [1])).astype(np.int8))
    starts = np.flatnonzero(edges == -1)
    return starts, np.flatnonzero(edges == 1) - starts


def first_fit(bitmap: np.ndarray, size: int) -> int | None:
    """The lowest hole that holds `size` cells."""
    starts, lengths = free_blocks(bitmap)
    fits = np.flatnonzero(lengths >= size)
    return int(starts[fits[0]]) if len(fits) else None


def best_fit(bitmap: np.ndarray, size: int) -> int | None:
    """The smallest hole that holds `size` cells."""
    starts, lengths = free_blocks(bitmap)
    fits = np.flatnonzero(lengths >= size)
    return int(starts[fits[np.argmin(lengths[fits])]]) if len(fits) else None


def worst_fit(bitmap: np.ndarray, size: int) -> int | None:
    """The largest hole, if it holds `size` cells."""
    starts, lengths = free_blocks(bitmap)
    if not len(lengths) or lengths.max() < size:
        return None
    return int(starts[np.argmax(lengths)])


HIGH_LEVEL_RULES: tuple[Rule, ...] = (first_fit, best_fit, worst_fit)
RULES: dict[str, Rule] = {"first": first_fit, "best": best_fit, "worst": worst_fit}


class NextFit:
    """Next fit: the first hole, in address order wrapping around, that starts
    at or after the end of the previous allocation and holds `size` cells."""

    def __init__(self) -> None:
        self.cursor = 0

    def reset(self) -> None:
        self.cursor = 0

    def __call__(self, bitmap: np.ndarray, size: int) -> int | None:
        starts, lengths = free_blocks(bitmap)
        order = np.argsort((starts - self.cursor) % len(bitmap), kind="stable")
        for i in order:
            if lengths[i] >= size:
                self.cursor = int(starts[i]) + size
                return int(starts[i])
        return None


class RulePolicy:
    """A baseline that places every request with one rule (low-level actions)."""

    actions = "low"

    def __init__(self, name: str) -> None:
        self.name = name
        self.rule = NextFit() if name == "next" else RULES[name]

    def reset(self) -> None:
        if isinstance(self.rule, NextFit):
            self.rule.reset()

    def act(self, obs: np.ndarray, info: dict) -> int:
        return self.rule(obs[: info["page_size"]], int(info["size"]))


class OraclePolicy:
    """The segment-aware oracle: it is told which generator segment issued the
    request and applies the rule that segment is built for (best fit on
    bf-good, worst fit on wf-good, `default` elsewhere). Not a realizable
    allocator, an upper reference for the high-level policies."""

    actions = "low"
    SEGMENT_RULES = {"bf-good": "best", "wf-good": "worst"}

    def __init__(self, default: str = "best") -> None:
        self.default = default

    def reset(self) -> None:
        pass

    def act(self, obs: np.ndarray, info: dict) -> int:
        rule = RULES[self.SEGMENT_RULES.get(info["segment"], self.default)]
        return rule(obs[: info["page_size"]], int(info["size"]))
