"""The evolutionary population: Boltzmann chromosomes and GNN actors, evolved generation by generation.

One generation (MARL's Algorithm 1 with its crossover made to work):
- every member proposes a placement: chromosomes sample their priors, GNN
  actors act on the argmax of their logits (population actors are
  deterministic, as in CERL: exploring is the chromosomes' job, and the
  learner's best guess is timed every generation);
- after evaluation the fittest ELITE_SHARE are kept unchanged;
- every other slot is refilled by a child of a random elite and a parent
  picked by a tournament of 3: a chromosome taking each node's genes from
  either parent; from a GNN parent, its logits (at temperature 1) become
  the child's prior on those nodes, which is how the learner seeds the
  Boltzmann members;
- children are mutated (priors and temperatures);
- the learner's actor migrates in, taking the last slot.
"""

from __future__ import annotations

import copy
from typing import Callable, Union

import numpy as np

from .chromosome import Chromosome
from .gnn import Actor

Genome = Union[Chromosome, Actor]
ELITE_SHARE = 0.2
TOURNAMENT = 3
MUTATION_PROBABILITY = 0.9


class Population:
    """Members and how to read an actor member's logits (`logits_of`)."""

    def __init__(self, members: list[Genome], logits_of: Callable[[Actor], np.ndarray]):
        self.members = members
        self.logits_of = logits_of

    @classmethod
    def initial(cls, size: int, nodes: int, seeds: list[np.ndarray], rng: np.random.Generator,
                logits_of: Callable[[Actor], np.ndarray]) -> "Population":
        """`seeds` (known placements, e.g. baselines) as confident chromosomes, the rest random."""
        members: list[Genome] = [Chromosome.of_placement(p) for p in seeds[:size]]
        members += [Chromosome.random(nodes, rng) for _ in range(size - len(members))]
        return cls(members, logits_of)

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
        ranked = [self.members[i] for i in np.argsort(latencies, kind="stable")]
        elites = ranked[:max(1, round(ELITE_SHARE * len(ranked)))]
        children = []
        for _ in range(len(ranked) - len(elites)):
            contenders = rng.integers(0, len(ranked), TOURNAMENT)
            child = self.cross(elites[rng.integers(len(elites))], ranked[contenders.min()], rng)
            children.append(child.mutate(rng) if rng.random() < MUTATION_PROBABILITY else child)
        self.members = elites + children

    def cross(self, elite: Genome, other: Genome, rng: np.random.Generator) -> Chromosome:
        """A chromosome child mixing the parents' (Boltzmann views of their) genes node by node.

        From an actor parent a node takes the actor's logits as its prior: the GNN seeds the
        chromosome. Children are always chromosomes, so actors enter only by migration and
        stay only as elites, and the population keeps its mixture.
        """
        return self.as_chromosome(elite).crossover(self.as_chromosome(other), rng)

    def migrate(self, actor: Actor) -> None:
        """A copy of the learner's actor takes the last slot, a child's (MARL's "weakest": the
        children are not ranked until evaluated)."""
        self.members[-1] = copy.deepcopy(actor)

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
