"""The evolutionary population: Boltzmann chromosomes and GNN actors, evolved generation by generation.

One generation (MARL's Algorithm 1 with its crossover made to work; rates in TrainConfig):
- every member proposes a placement: chromosomes sample their priors, GNN
  actors act on the argmax of their logits (population actors are
  deterministic, as in CERL: exploring is the chromosomes' job, and the
  learner's best guess is timed every generation);
- after evaluation the fittest `elite_share` are kept unchanged;
- every other slot is refilled by a child of a random elite and a parent
  picked by a tournament: a chromosome taking each node's genes from
  either parent; from a GNN parent, its logits (at temperature 1) become
  the child's prior on those nodes, which is how the learner seeds the
  Boltzmann members;
- children are mutated (chromosome.py: nudges, super-mutations, resets);
- newcomers migrate in, taking the last slots: the learner's actor, and
  the model-based member (erl.py).
"""

from __future__ import annotations

import copy
from typing import Callable, Union

import numpy as np

from .chromosome import Chromosome
from .config import TrainConfig
from .gnn import Actor

Genome = Union[Chromosome, Actor]


class Population:
    """Members, how to read an actor member's logits (`logits_of`), and the evolution's rates."""

    def __init__(self, members: list[Genome], logits_of: Callable[[Actor], np.ndarray], config: TrainConfig):
        self.members = members
        self.logits_of = logits_of
        self.config = config

    @classmethod
    def initial(cls, config: TrainConfig, nodes: int, seeds: list[np.ndarray], rng: np.random.Generator,
                logits_of: Callable[[Actor], np.ndarray]) -> "Population":
        """`seeds` (known placements, e.g. baselines) as confident chromosomes, the rest random."""
        members: list[Genome] = [Chromosome.of_placement(p, config) for p in seeds[:config.population]]
        members += [Chromosome.random(nodes, rng) for _ in range(config.population - len(members))]
        return cls(members, logits_of, config)

    def as_chromosome(self, member: Genome) -> Chromosome:
        """The Boltzmann view of a member: an actor's logits at temperature 1."""
        if isinstance(member, Chromosome):
            return member
        logits = self.logits_of(member)
        return Chromosome(logits, np.ones(logits.shape[:2]))

    def propose(self, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each member's placement and its items' probabilities of DRAM (the repair order)."""
        return [m.sample(rng) if isinstance(m, Chromosome) else self.as_chromosome(m).mode()
                for m in self.members]

    def evolve(self, latencies: list[float], rng: np.random.Generator) -> None:
        """Replace the population by elites and mutated children, ranked by `latencies` (lower is fitter)."""
        c = self.config
        ranked = [self.members[i] for i in np.argsort(latencies, kind="stable")]
        elites = ranked[:max(1, round(c.elite_share * len(ranked)))]
        children = []
        for _ in range(len(ranked) - len(elites)):
            contenders = rng.integers(0, len(ranked), c.tournament)
            child = self.cross(elites[rng.integers(len(elites))], ranked[contenders.min()], rng)
            children.append(child.mutate(rng, c) if rng.random() < c.mutation_probability else child)
        self.members = elites + children

    def cross(self, elite: Genome, other: Genome, rng: np.random.Generator) -> Chromosome:
        """A chromosome child mixing the parents' (Boltzmann views of their) genes node by node.

        From an actor parent a node takes the actor's logits as its prior: the GNN seeds the
        chromosome. Children are always chromosomes, so actors enter only by migration and
        stay only as elites, and the population keeps its mixture.
        """
        return self.as_chromosome(elite).crossover(self.as_chromosome(other), rng)

    def sample_of(self, actor: Actor) -> None:
        """Learner only (no evolution): every member samples `actor`'s softmax (its Boltzmann view)."""
        self.members = [self.as_chromosome(actor)] * self.config.population

    def migrate(self, newcomers: list[Genome]) -> None:
        """Copies of `newcomers` take the last slots, children's (MARL's "weakest": the children
        are not ranked until evaluated)."""
        for slot, member in zip(range(len(self.members) - len(newcomers), len(self.members)), newcomers):
            self.members[slot] = copy.deepcopy(member)

    def state_dict(self) -> list[dict]:
        return [{"prior": m.prior, "temperature": m.temperature} if isinstance(m, Chromosome)
                else {"actor": m.state_dict()} for m in self.members]

    def load_state_dict(self, state: list[dict], new_actor: Callable[[], Actor]) -> None:
        self.members = []
        for entry in state:
            if "actor" in entry:
                actor = new_actor()
                actor.load_state_dict(entry["actor"])
                self.members.append(actor)
            else:
                self.members.append(Chromosome(entry["prior"], entry["temperature"]))
