"""measure(): latency of a model under a policy, on a real or simulated tier, on a clock of torch_tier.clocks.

With ``generate=N`` the timed call is a whole greedy
``model.generate(*inputs, max_new_tokens=N)`` of exactly N new tokens
(``generate_options``), and a Measurement also holds each call's time to first
token: the end of its first forward (the prefill), whose logits give the
first token. The other N - 1 tokens are the decode steps, one forward each.
"""

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
    first_token: tuple[float, ...] = ()  # generate calls: seconds to each call's first token
    new_tokens: int = 0  # generate calls: tokens each call generated

    @property
    def time_to_first_token(self) -> float:
        """The median seconds from a generate call to its first token (the prefill)."""
        self._check_generate()
        return statistics.median(self.first_token)

    @property
    def decode_tokens_per_s(self) -> float:
        """Decode tokens per second: the median over calls of (new tokens - 1) / (call - first token)."""
        self._check_generate()
        return statistics.median((self.new_tokens - 1) / (total - first)
                                 for total, first in zip(self.samples, self.first_token))

    def _check_generate(self) -> None:
        if not self.first_token or self.new_tokens < 2:
            raise ValueError("not a timing of generate calls of two or more tokens (measure(..., generate=N))")

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
        text = f"{self.median * 1e3:.2f} ms ±{self.spread:.1%} ({len(self.samples)} runs)"
        if self.first_token and self.new_tokens > 1:
            text += (f", first token {self.time_to_first_token * 1e3:.2f} ms, "
                     f"{self.decode_tokens_per_s:.2f} decode tokens/s")
        return text


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


def generate_options(new_tokens: int, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """``generate()``'s keyword arguments for exactly `new_tokens` greedy tokens with a KV cache:
    no end-of-sequence stop (random weights may emit one), then `options`, which win."""
    if not isinstance(new_tokens, int) or isinstance(new_tokens, bool) or new_tokens < 1:
        raise ValueError(f"generate: expected a number of new tokens >= 1, got {new_tokens!r}")
    return {"max_new_tokens": new_tokens, "do_sample": False, "use_cache": True, "eos_token_id": None,
            "pad_token_id": 0, **(options or {})}


def check_generates(model: torch.nn.Module) -> None:
    """Raise ValueError unless `model` has transformers' ``generate()``."""
    if not callable(getattr(model, "generate", None)):
        raise ValueError(f"generate: {type(model).__name__} has no generate() (a transformers causal LM has)")


def time_generate(model: torch.nn.Module, inputs: tuple, options: dict[str, Any], repeats: int,
                  warmup: int) -> tuple[list[float], list[float]]:
    """Seconds of each of `repeats` ``model.generate(*inputs, **options)`` calls after `warmup`
    untimed ones, and of each call's first token (the end of its first forward)."""
    totals, first = [], []
    ends: list[float] = []
    hook = model.register_forward_hook(lambda *_: ends.append(clocks.now()))
    try:
        with torch.no_grad():
            for i in range(warmup + repeats):
                ends.clear()
                start = clocks.now()
                model.generate(*inputs, **options)
                if i >= warmup:
                    totals.append(clocks.now() - start)
                    first.append(ends[0] - start)
    finally:
        hook.remove()
    return totals, first


def measure(
    model: torch.nn.Module,
    inputs: Any,
    policy: Policy | str,
    pm: str | None = None,
    repeats: int = 10,
    warmup: int = 2,
    clock: str | None = None,
    generate: int | None = None,
    generate_kwargs: dict[str, Any] | None = None,
    **enable_options: Any,
) -> Measurement:
    """Time `model(*inputs)` with `policy` enabled on tier `pm` (see torch_tier.enable).

    clock: 'wall' or 'cpu' (torch_tier.clocks; 'cpu' on a machine shared with other jobs,
    with one intra-op thread); None: this thread's current clock, 'wall' unless set.

    generate: time whole ``model.generate(*inputs, max_new_tokens=generate)`` calls instead
    (greedy, exactly that many tokens; `generate_kwargs` passed through), with each call's
    time to first token (Measurement.time_to_first_token, .decode_tokens_per_s).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    if generate is not None:
        check_generates(model)
        options = generate_options(generate, generate_kwargs)
    with clocks.use(clock), enable(policy, model, pm=pm, **enable_options) as session:
        if generate is None:
            return Measurement(tuple(time_inference(model, inputs, repeats, warmup)), session.stats())
        totals, first = time_generate(model, inputs, options, repeats, warmup)
        return Measurement(tuple(totals), session.stats(), tuple(first), options["max_new_tokens"])
