"""TrainConfig: every hyperparameter of the trainer, with its default, in one place.

`train(..., config=TrainConfig(...))` takes one; train's own keyword arguments
of the same names (evaluations, population, seed, ...) override its fields.
A checkpoint keeps the config, so a resumed run goes on with the same one.

The switches `evolution`, `learner` and `model_member` turn the three sources
of candidates on and off, for ablations: evolution only, learner only, both,
each with or without the model-based member.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..clocks import CLOCKS
from .racing import looks, wins_needed


@dataclass(frozen=True)
class TrainConfig:
    """The trainer's hyperparameters (see erl.py for how each enters the loop)."""

    # --- the run
    evaluations: int = 2000
    """Evaluations the search may use. Measured fitness: timed runs (one measure() call of one
    placement, `repeats` forwards); a placement timed before is looked up, free; a race costs
    two runs a pair. Model fitness: predictions, one per proposal (fitness.py says why). The
    last generation may be cut short, so a run ends on exactly this many."""
    population: int = 20
    """Members per generation (and so placements proposed per generation)."""
    seed: int = 0
    """Seeds the population, mutations, the learner's networks and its mini-batches."""
    seed_baselines: bool = True
    """Start the population from all-pm, first-touch, interleave and greedy (never 'optimal',
    the yardstick); False: from random chromosomes only."""
    patience: int = 50
    """End the run after this many generations in a row that evaluated nothing new (the
    population has converged; cache hits are free, so the budget alone would not end it)."""

    # --- which parts propose candidates (the ablation switches)
    evolution: bool = True
    """Evolve a population of Boltzmann chromosomes. Off: the learner's actor alone proposes,
    `population` samples of its softmax per generation (needs `learner`)."""
    learner: bool = True
    """Train the GNN soft actor-critic on every evaluated placement, and migrate its actor into
    the population every generation."""
    model_member: bool = True
    """Each generation, fit the cost model to every placement timed so far (calibrate.fit),
    solve its exact optimum within the budget and put that placement into the population."""
    model_member_every: int = 8
    """Fit again once this many more placements have been scored since the last fit (the first
    fit: once this many have been); in between, no new member."""
    model_member_samples: int = 128
    """A fit takes the most recently scored this many placements (its time grows with them)."""

    # --- evolution (ERL: Khadka and Tumer 2018; CERL: Khadka et al. 2019)
    elite_share: float = 0.2
    """Share of the population, the fittest, kept unchanged into the next generation."""
    tournament: int = 3
    """Contenders in the tournament that picks a child's second parent."""
    mutation_probability: float = 0.9
    """Chance that a child is mutated at all."""
    mutated_share: float = 0.1
    """Share of a mutated child's items (node, head) whose genes change."""
    prior_noise: float = 0.1
    """A changed item's prior logits x N(1, prior_noise): a nudge, which never flips a choice."""
    super_mutation: float = 0.05
    """Chance that a changed item gets large noise instead: prior logits x N(1, super_noise)."""
    super_noise: float = 10.0
    """Standard deviation of the super-mutation's factor."""
    reset_mutation: float = 0.05
    """Chance that a changed item is reset instead: redrawn as a random chromosome's (logits
    N(0, 1), temperature 1), which flips its likelier tier with probability 1/2."""
    neighbour_tries: int = 5
    """A proposal timed before (or proposed twice in a generation) gives way to a neighbour: one
    item moved to the other tier, repaired to the budget; up to this many tries for one never
    timed. 0: keep the repeat (a free cache hit), as ERL does."""
    temperature_decay: float = 0.95
    """A changed item's temperature x N(temperature_decay, temperature_noise): populations sharpen."""
    temperature_noise: float = 0.1
    min_temperature: float = 0.05
    """Temperatures stay within [min_temperature, max_temperature]."""
    max_temperature: float = 3.0
    seed_confidence: float = 2.0
    """Prior logit margin of a chromosome made from a known placement (seeds, the model member)."""

    # --- the learner (discrete soft actor-critic over the GNN)
    learner_updates: int = 5
    """Gradient steps per generation, each on a mini-batch of the replay buffer."""
    batch_size: int = 64
    learning_rate: float = 1e-3
    """Adam's step size for actor and critics (ten times this for alpha and lambda)."""
    entropy_target: float = 0.05
    """Nats per item the entropy temperature alpha steers the actor towards (a fair coin: 0.69)."""
    initial_alpha: float = 0.05
    """Rewards are percent faster than generation 0's median; one item's share is often below 1."""
    hidden: int = 32
    """Width of the GNN's layers."""

    # --- measured fitness
    repeats: int = 3
    """Timed forwards per timed run; a run's figure is their median."""
    warmup: int = 1
    """Untimed forwards before them."""
    clock: str = "wall"
    """What timed runs and the capture read (torch_tier.clocks): 'wall', or 'cpu', the timing
    thread's CPU time, which a machine shared with other jobs leaves steady (needs one
    intra-op thread)."""

    # --- racing (racing.py): who may replace the incumbent
    races: int = 1
    """Candidates per generation raced against the incumbent, the best-looking first."""
    min_pairs: int = 6
    """Pairs timed before a race's first look; looks follow at twice as many, up to max_repeats."""
    max_repeats: int = 24
    """The most pairs one race times: each re-times the candidate once and the incumbent once."""
    race_confidence: float = 0.95
    """A race crowns a candidate that is not faster than the incumbent with probability at most
    1 - race_confidence (a one-sided sign test, split over the looks)."""

    def __post_init__(self) -> None:
        if not (self.evolution or self.learner):
            raise ValueError("TrainConfig: evolution and learner are both off; nothing would propose placements")
        if self.population < 2:
            raise ValueError(f"TrainConfig: population must be at least 2, got {self.population}")
        if self.repeats < 1 or not 1 <= self.min_pairs <= self.max_repeats:
            raise ValueError(f"TrainConfig: need repeats >= 1 and 1 <= min_pairs <= max_repeats, got {self.repeats}, "
                             f"{self.min_pairs} and {self.max_repeats}")
        if self.clock not in CLOCKS:
            raise ValueError(f"TrainConfig: clock must be one of {list(CLOCKS)}, got {self.clock!r}")
        if not 0.5 < self.race_confidence < 1:
            raise ValueError(f"TrainConfig: race_confidence must be in (0.5, 1), got {self.race_confidence}")
        schedule = looks(self.min_pairs, self.max_repeats)
        if wins_needed(self.min_pairs, (1 - self.race_confidence) / len(schedule)) > self.min_pairs:
            raise ValueError(f"TrainConfig: even {self.min_pairs} won pairs of {self.min_pairs} are not significant at "
                             f"race_confidence {self.race_confidence} over {len(schedule)} looks: raise min_pairs")
