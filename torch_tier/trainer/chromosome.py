"""Boltzmann chromosomes: a stateless policy of per-item prior logits and temperatures.

For every node and head (weights, activations) a chromosome holds two prior
logits (DRAM, PM) and a temperature; a placement is sampled item by item from
softmax(prior / temperature). Cheap to sample and to recombine, they are the
bulk of the population (CERL, and MARL section 4.2.2).

Operators, as MARL's code meant them (docs/design-notes.md lists what it got wrong),
their rates in TrainConfig:
- crossover takes each node's genes (both heads' priors and temperatures)
  from either parent with equal odds, so children really mix their parents;
- mutation changes a random share of the items (node, head). Most get
  MARL's nudge, prior logits x N(1, 0.1), which never flips an item's
  likelier tier; as in ERL (Khadka and Tumer 2018), a few get a
  super-mutation, logits x N(1, 10), which flips a confident item about
  half the time, and a few are reset to a random chromosome's genes. So a
  converged population still tries the other tier of single items. Some
  temperatures are scaled by N(0.95, 0.1), clipped to the configured range,
  so populations slowly sharpen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..tiers import DRAM
from .config import TrainConfig


@dataclass
class Chromosome:
    """Prior logits (nodes, 2 heads, 2 tiers) and temperatures (nodes, 2 heads)."""

    prior: np.ndarray
    temperature: np.ndarray

    @classmethod
    def random(cls, nodes: int, rng: np.random.Generator) -> "Chromosome":
        return cls(rng.normal(0.0, 1.0, (nodes, 2, 2)), np.ones((nodes, 2)))

    @classmethod
    def of_placement(cls, placement: np.ndarray, config: TrainConfig) -> "Chromosome":
        """A chromosome that samples `placement` almost surely: a confident prior, coldest temperature."""
        prior = np.zeros(placement.shape + (2,))
        np.put_along_axis(prior, placement[..., None].astype(np.int64), config.seed_confidence, axis=-1)
        return cls(prior, np.full(placement.shape, config.min_temperature))

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

    def mutate(self, rng: np.random.Generator, config: TrainConfig) -> "Chromosome":
        """A copy with a share of its items nudged, super-mutated or reset, and a share of its
        temperatures cooled (see the module doc; the rates are `config`'s)."""
        items = self.temperature.shape
        changed = rng.random(items) < config.mutated_share
        kind = rng.random(items)
        big = changed & (kind < config.super_mutation)
        reset = changed & ~big & (kind < config.super_mutation + config.reset_mutation)
        nudged = changed & ~big & ~reset
        prior = self.prior.copy()
        prior[nudged] *= rng.normal(1.0, config.prior_noise, (int(nudged.sum()), 2))
        prior[big] *= rng.normal(1.0, config.super_noise, (int(big.sum()), 2))
        prior[reset] = rng.normal(0.0, 1.0, (int(reset.sum()), 2))
        temperature = self.temperature.copy()
        cooled = rng.random(items) < config.mutated_share
        temperature[cooled] *= rng.normal(config.temperature_decay, config.temperature_noise, int(cooled.sum()))
        temperature[reset] = 1.0
        return Chromosome(prior, np.clip(temperature, config.min_temperature, config.max_temperature))
