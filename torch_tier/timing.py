"""measure(): latency of a model under a policy, on a real or simulated tier, on a clock of torch_tier.clocks."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

import torch

from . import clocks
from .policy import Policy
from .runtime import enable


@dataclass(frozen=True)
class Measurement:
    """Seconds per inference: every sample, and their median and spread."""

    samples: tuple[float, ...]
    stats: dict[str, dict[str, int]] = field(default_factory=dict)  # allocator stats after the runs

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def spread(self) -> float:
        """Half the interquartile range over the median: the relative noise of one sample."""
        if len(self.samples) < 4:
            return (max(self.samples) - min(self.samples)) / 2 / self.median
        q = statistics.quantiles(self.samples, n=4)
        return (q[2] - q[0]) / 2 / self.median

    def interval(self, confidence: float = 0.95) -> tuple[float, float]:
        """A distribution-free confidence interval of the median: the order statistics
        that a Binomial(n, 1/2) count of samples below the true median straddles with
        probability `confidence` (the extremes when there are too few samples for it)."""
        ordered = sorted(self.samples)
        below = binomial_quantile((1 - confidence) / 2, len(ordered))
        return ordered[max(below - 1, 0)], ordered[min(len(ordered) - below, len(ordered) - 1)]

    def __str__(self) -> str:
        return f"{self.median * 1e3:.2f} ms ±{self.spread:.1%} ({len(self.samples)} runs)"


def binomial_quantile(q: float, n: int) -> int:
    """The least k with P(Binomial(n, 1/2) <= k) >= q (scipy's binom.ppf, without importing scipy)."""
    cdf = 0
    for k in range(n + 1):
        cdf += math.comb(n, k)
        if cdf / 2**n >= q:
            return k
    return n


def time_inference(model: torch.nn.Module, inputs: tuple, repeats: int, warmup: int) -> list[float]:
    """Seconds of each of `repeats` forwards under no_grad, after `warmup` untimed ones, on this
    thread's clock (torch_tier.clocks)."""
    samples = []
    with torch.no_grad():
        for i in range(warmup + repeats):
            start = clocks.now()
            model(*inputs)
            if i >= warmup:
                samples.append(clocks.now() - start)
    return samples


def measure(
    model: torch.nn.Module,
    inputs: Any,
    policy: Policy | str,
    pm: str | None = None,
    repeats: int = 10,
    warmup: int = 2,
    clock: str | None = None,
    **enable_options: Any,
) -> Measurement:
    """Time `model(*inputs)` with `policy` enabled on tier `pm` (see torch_tier.enable).

    clock: 'wall' or 'cpu' (torch_tier.clocks; 'cpu' on a machine shared with other jobs,
    with one intra-op thread); None: this thread's current clock, 'wall' unless set.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    with clocks.use(clock), enable(policy, model, pm=pm, **enable_options) as session:
        samples = time_inference(model, inputs, repeats, warmup)
        return Measurement(tuple(samples), session.stats())
