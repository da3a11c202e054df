"""Boltzmann chromosomes: a stateless policy of per-item prior logits and temperatures.

For every node and head (weights, activations) a chromosome holds two prior
logits (DRAM, PM) and a temperature; a placement is sampled item by item from
softmax(prior / temperature). Cheap to sample and to recombine, they are the
bulk of the population (CERL, and MARL section 4.2.2).

Operators, as MARL's code meant them (docs/design-notes.md lists what it got wrong):
- crossover takes each node's genes (both heads' priors and temperatures)
  from either parent with equal odds, so children really mix their parents;
- mutation scales a random subset of prior logits by N(1, 0.1) and of
  temperatures by N(0.95, 0.1), the temperatures clipped to
  [MIN_TEMPERATURE, MAX_TEMPERATURE], so populations slowly sharpen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..tiers import DRAM

MIN_TEMPERATURE = 0.05
MAX_TEMPERATURE = 3.0
SEED_CONFIDENCE = 2.0  # prior logit margin of a chromosome seeded from a known placement
MUTATED_SHARE = 0.1  # share of genes a mutation touches


@dataclass
class Chromosome:
    """Prior logits (nodes, 2 heads, 2 tiers) and temperatures (nodes, 2 heads)."""

    prior: np.ndarray
    temperature: np.ndarray

    @classmethod
    def random(cls, nodes: int, rng: np.random.Generator) -> "Chromosome":
        return cls(rng.normal(0.0, 1.0, (nodes, 2, 2)), np.ones((nodes, 2)))

    @classmethod
    def of_placement(cls, placement: np.ndarray) -> "Chromosome":
        """A chromosome that samples `placement` almost surely: a confident prior, coldest temperature."""
        prior = np.zeros(placement.shape + (2,))
        np.put_along_axis(prior, placement[..., None].astype(np.int64), SEED_CONFIDENCE, axis=-1)
        return cls(prior, np.full(placement.shape, MIN_TEMPERATURE))

    def probabilities(self) -> np.ndarray:
        """(nodes, 2 heads, 2 tiers): softmax(prior / temperature) of each item."""
        z = self.prior / self.temperature[..., None]
        z = np.exp(z - z.max(axis=-1, keepdims=True))
        return z / z.sum(axis=-1, keepdims=True)

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """A placement (nodes, 2) and each item's probability of DRAM (the repair order)."""
        p_dram = self.probabilities()[..., DRAM]
        placement = (rng.random(p_dram.shape) >= p_dram).astype(np.int8)  # 1 = PM
        return placement, p_dram

    def mode(self) -> tuple[np.ndarray, np.ndarray]:
        """The most likely placement and each item's probability of DRAM."""
        p_dram = self.probabilities()[..., DRAM]
        return (p_dram < 0.5).astype(np.int8), p_dram

    def crossover(self, other: "Chromosome", rng: np.random.Generator) -> "Chromosome":
        """Each node's genes from `self` or `other`, by a fair coin per node."""
        take = rng.random(len(self.prior)) < 0.5
        return Chromosome(np.where(take[:, None, None], self.prior, other.prior),
                          np.where(take[:, None], self.temperature, other.temperature))

    def mutate(self, rng: np.random.Generator) -> "Chromosome":
        """A copy with some priors scaled by N(1, 0.1) and some temperatures by N(0.95, 0.1)."""
        prior = self.prior.copy()
        hit = rng.random(prior.shape) < MUTATED_SHARE
        prior[hit] *= rng.normal(1.0, 0.1, int(hit.sum()))
        temperature = self.temperature.copy()
        hit = rng.random(temperature.shape) < MUTATED_SHARE
        temperature[hit] *= rng.normal(0.95, 0.1, int(hit.sum()))
        return Chromosome(prior, np.clip(temperature, MIN_TEMPERATURE, MAX_TEMPERATURE))
