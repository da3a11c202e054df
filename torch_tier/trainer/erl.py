"""train(): find the fastest placement of a model under a DRAM budget by evolutionary RL.

ERL as in MARL (seed paper 001, section 4): a population of Boltzmann
chromosomes and GNN actors proposes placements; each is repaired to the
budget (budget.py), timed or predicted (fitness.py) and stored in the replay
buffer; the population evolves (population.py); a soft actor-critic learner
(sac.py) trains on the replay and its actor migrates into the population.
The result is the fastest placement ever evaluated (for measured fitness:
among those timed `max_repeats` times or more), as a Policy.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Union

import numpy as np
import torch

from .. import baselines, comparison, devices
from ..graph import TierGraph
from ..graph_capture import capture
from ..policy import Policy, fingerprint
from ..cost_model import predict
from ..placement import HEADS, PlacementSpace
from ..tiers import parse_pm
from . import checkpoint as checkpoints
from .budget import Budget
from .fitness import MeasuredFitness, ModelFitness, Scores, measured
from .gnn import Neighbours, node_features
from .population import Population
from .sac import Learner, ReplayBuffer

FOUND_BY = "torch-tier train (ERL: Boltzmann population + GNN soft actor-critic)"
EVALUATIONS_PER_UPDATE = 4  # learner steps per generation: one per this many new evaluations
SEED_BASELINES = ("all-pm", "first-touch", "interleave", "greedy")  # never 'optimal': it is the yardstick


@dataclass(frozen=True)
class Settings:
    """What decides the course of a run; a checkpoint keeps them."""

    budget: int  # bytes of DRAM
    pm: str
    device: str  # the cost model's device profile
    fitness: str  # "model" or "measured"
    population: int
    seed: int
    seed_baselines: bool
    repeats: int
    max_repeats: int
    warmup: int


@dataclass(frozen=True)
class Generation:
    """One generation's outcome: latencies in seconds, totals so far."""

    index: int
    best: float  # the best latency found so far (measured: its median over all its runs so far)
    median: float  # median latency of this generation's placements
    evaluations: int
    wall_time: float


@dataclass
class TrainResult:
    """The best policy found, the training history and the graph it was found on."""

    policy: Policy
    history: list[Generation]
    graph: TierGraph
    interrupted: bool = False
    comparison: list[comparison.Row] | None = None  # beside the baselines (train's compare_rounds)

    @property
    def latency(self) -> float:
        return self.policy.metadata["latency"]

    def save_plot(self, path: str | Path, references: dict[str, float] | None = None) -> None:
        """A PNG of the best and median latency per evaluation, with optional reference lines (seconds)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        figure = Figure(figsize=(7, 4.5))
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        evaluations = [g.evaluations for g in self.history]
        axes.plot(evaluations, [g.median * 1e3 for g in self.history], color="0.6", label="generation median")
        measured = self.policy.metadata["fitness"] == "measured"
        label = "best so far" + (" (median of all its runs: re-timing can raise it)" if measured else "")
        axes.plot(evaluations, [g.best * 1e3 for g in self.history], color="C0", label=label)
        for i, (name, seconds) in enumerate((references or {}).items()):
            axes.axhline(seconds * 1e3, color=f"C{i + 1}", linestyle="--", linewidth=1, label=name)
        axes.set_xlabel("evaluations")
        axes.set_ylabel(f"latency, ms ({self.policy.metadata['fitness']})")
        axes.set_title(f"{self.graph.model_name}: DRAM budget {self.policy.metadata['dram_budget'] / 2**20:.1f} MiB")
        axes.legend(fontsize="small")
        figure.tight_layout()
        figure.savefig(path, dpi=120)


class Search:
    """A run's whole state, one generation at a time: what a checkpoint holds."""

    def __init__(self, graph: TierGraph, settings: Settings):
        self.graph = graph
        self.settings = settings
        self.space = PlacementSpace(graph)
        self.budget = Budget(self.space, settings.budget)
        costs = baselines.item_costs(graph, settings.device)
        costs = np.array([[costs[(i, head)] for head in HEADS] for i in range(self.space.nodes)])
        self.learner = Learner(node_features(graph, self.budget, costs), Neighbours.of(graph), self.space.mask,
                               self.budget, settings.seed)
        self.rng = np.random.default_rng(settings.seed)
        seeds = [self.space.encode(baselines.BASELINES[name](graph, settings.budget, settings.device))
                 for name in SEED_BASELINES] if settings.seed_baselines else []
        self.population = Population.initial(settings.population, self.space.nodes, seeds, self.rng,
                                             self.learner.logits_of)
        self.replay = ReplayBuffer(self.space.nodes)
        self.scores = Scores()
        self.reference: float | None = None  # latency that rewards are relative to: generation 0's median
        self.evaluations = 0
        self.history: list[Generation] = []

    def step(self, fitness: ModelFitness | MeasuredFitness, spare: int) -> Generation:
        """Propose, repair, evaluate (with at most `spare` evaluations beyond the proposals),
        evolve, learn, migrate."""
        with _one_thread():
            return self._step(fitness, spare)

    def _step(self, fitness: ModelFitness | MeasuredFitness, spare: int) -> Generation:
        start = time.perf_counter()
        placements = [self.budget.repair(p, dram_preference) for p, dram_preference in
                      self.population.propose(self.rng)]
        self.evaluations += fitness.evaluate(placements, self.scores, spare)
        latencies = [self.scores.score(p) for p in placements]
        for placement, latency in zip(placements, latencies):
            self.replay.add(placement, latency)
        if self.reference is None:
            self.reference = statistics.median(latencies)
        self.population.evolve(latencies, self.rng)
        self.learner.update(self.replay, self.reference, -(-len(placements) // EVALUATIONS_PER_UPDATE), self.rng)
        self.population.migrate(self.learner.actor)
        elapsed = time.perf_counter() - start + (self.history[-1].wall_time if self.history else 0.0)
        self.history.append(Generation(len(self.history), self.scores.best(fitness.min_samples)[1],
                                       statistics.median(latencies), self.evaluations, elapsed))
        return self.history[-1]

    def result(self, min_samples: int, interrupted: bool) -> TrainResult:
        """The best placement so far as a policy; never over the budget."""
        placement, latency = self.scores.best(min_samples)
        s = self.settings
        policy = self.space.policy(placement)
        dram = self.graph.footprint(policy)["dram"]
        if dram > s.budget:
            raise RuntimeError(f"internal error: the best placement holds {dram} bytes of DRAM, "
                               f"over the budget of {s.budget}")
        policy.metadata = {
            "found_by": FOUND_BY, "fitness": s.fitness, "latency": latency,
            "predicted_latency": predict(self.graph, policy, s.device), "dram_budget": s.budget,
            "dram_bytes": dram, "pm": s.pm, "device": s.device, "evaluations": self.evaluations,
            "generations": len(self.history), "population": s.population, "seed": s.seed,
            "seeded_from_baselines": s.seed_baselines, "samples": len(self.scores.samples[self.space.key(placement)]),
        }
        return TrainResult(policy, list(self.history), self.graph, interrupted)

    def state_dict(self) -> dict[str, Any]:
        return {"population": self.population.state_dict(), "learner": self.learner.state_dict(),
                "replay": self.replay.state_dict(), "scores": self.scores.state_dict(),
                "rng": self.rng.bit_generator.state, "reference": self.reference,
                "evaluations": self.evaluations, "history": [asdict(g) for g in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.population.load_state_dict(state["population"], self.learner.new_actor)
        self.learner.load_state_dict(state["learner"])
        self.replay.load_state_dict(state["replay"])
        self.scores.load_state_dict(state["scores"])
        self.rng.bit_generator.state = state["rng"]
        self.reference = state["reference"]
        self.evaluations = state["evaluations"]
        self.history = [Generation(**g) for g in state["history"]]


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run torch on one intra-op thread: the networks are too small to gain from more (on a
    busy machine more threads cost several times over), and measured runs own the other cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


Progress = Union[bool, Callable[[Generation], None]]


def train(
    model: torch.nn.Module,
    example_inputs: Any,
    dram_budget: baselines.BudgetSpec = "25%",
    pm: str = "sim:optane-100",
    fitness: str = "model",
    evaluations: int = 2000,
    population: int = 20,
    seed: int = 0,
    workers: int | str = 1,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    seed_baselines: bool = True,
    progress: Progress = True,
    graph: TierGraph | None = None,
    repeats: int = 3,
    max_repeats: int = 9,
    warmup: int = 1,
    compare_rounds: int = 0,
    device: str | None = None,
) -> TrainResult:
    """Search placements of `model` under `dram_budget` and return the fastest found.

    dram_budget: bytes, '512MiB', a fraction (0.25) or a share of the all-DRAM footprint ('25%').
    pm: the slow tier measured runs use ('sim:NAME', 'memkind:DIR', 'kmem').
    device: the profile the model-based parts assume (seeding, greedy and optimal baselines,
        model fitness, predictions in tables), apart from `pm`, which is what runs. Default:
        the sim's profile when `pm` names one, else optane-100 (e.g. for a device model).
    fitness: 'model' (the cost model's prediction) or 'measured' (timed inference in workers).
    evaluations: the evaluation budget: a generation starts only if its population's
        proposals fit in what is left; re-timing and top-ups (measured) use the rest.
    workers: measured fitness only: a number of local worker processes, or an address
        ('tcp://0.0.0.0:5555') to bind and wait for `torch-tier worker --connect` workers.
    checkpoint: written after every generation; with resume=True, read first and continued
        (its settings win over the arguments; a model-fitness run resumed ends as an
        uninterrupted one would).
    seed_baselines: start the population from all-pm, first-touch, interleave and greedy.
    progress: a progress bar on stderr, or a function called with each Generation.
    graph: a captured graph of `model` to reuse (default: capture it now).
    repeats, max_repeats, warmup: measured fitness: runs per first timing, per contender, untimed.
    compare_rounds: if set, the result's `comparison` holds the trained policy beside the
        baselines (torch_tier.comparison), predicted, and with measured fitness also timed in that
        many side-by-side rounds on the same workers (so remote ones too).

    Ctrl-C ends the run: the checkpoint of the last complete generation stands, and the
    best policy so far is returned with `interrupted` set.
    """
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    if fitness not in ("model", "measured"):
        raise ValueError(f"fitness must be 'model' or 'measured', got {fitness!r}")
    if evaluations < population:
        raise ValueError(f"evaluations ({evaluations}) must be at least the population ({population})")
    if resume:
        if checkpoint is None:
            raise ValueError("resume=True needs the checkpoint to resume from")
        state = checkpoints.load(checkpoint)
        graph, settings = state["graph"], state["settings"]
        if graph.fingerprint != fingerprint(model):
            raise ValueError(f"{checkpoint}: checkpoint of model {graph.fingerprint}, "
                             f"this model is {fingerprint(model)}")
    else:
        graph = graph or capture(model, inputs)
        spec = parse_pm(pm)
        settings = Settings(budget=baselines.dram_budget(graph, dram_budget), pm=str(spec),
                            device=device or devices.assumed_profile(spec.profile), fitness=fitness, population=population,
                            seed=seed, seed_baselines=seed_baselines, repeats=repeats, max_repeats=max_repeats,
                            warmup=warmup)
    search = Search(graph, settings)
    if resume:
        search.load_state_dict(state["search"])
        _warn_unlike(settings, fitness=fitness, population=population, seed=seed, seed_baselines=seed_baselines)
    report = ProgressBar(evaluations) if progress is True else (progress or (lambda generation: None))
    interrupted = False
    with _fitness(search, model, inputs, workers) as judge:
        try:
            while search.evaluations + settings.population <= evaluations:
                generation = search.step(judge, evaluations - search.evaluations - settings.population)
                if checkpoint is not None:
                    checkpoints.save(checkpoint, {"settings": settings, "graph": graph, "search": search.state_dict()})
                report(generation)
        except KeyboardInterrupt:
            if not search.history:
                raise
            interrupted = True
        finally:
            if isinstance(report, ProgressBar):
                report.close()
        result = search.result(judge.min_samples, interrupted)
        if compare_rounds and not interrupted:
            named = comparison.placements(graph, settings.budget, settings.device, result.policy)
            timer = judge if isinstance(judge, MeasuredFitness) else None
            result.comparison = comparison.compare(graph, named, settings.budget, settings.device, timer, compare_rounds)
    return result


@contextmanager
def _fitness(search: Search, model: torch.nn.Module, inputs: tuple,
             workers: int | str) -> Iterator[ModelFitness | MeasuredFitness]:
    s = search.settings
    if s.fitness == "model":
        yield ModelFitness(search.space, s.device)
        return
    with measured(model, inputs, search.graph, s.pm, workers, s.repeats, s.max_repeats, s.warmup) as judge:
        yield judge


def _warn_unlike(settings: Settings, **requested: Any) -> None:
    unlike = {k: (v, getattr(settings, k)) for k, v in requested.items() if getattr(settings, k) != v}
    if unlike:
        detail = ", ".join(f"{k}={now!r} (checkpoint: {then!r})" for k, (now, then) in unlike.items())
        warnings.warn(f"resuming with the checkpoint's settings, not {detail}", stacklevel=3)


class ProgressBar:
    """A one-line progress bar on stderr: evaluations used, generation, best latency so far."""

    def __init__(self, total: int, width: int = 30):
        self.total = total
        self.width = width
        self.shown = False

    def __call__(self, generation: Generation) -> None:
        done = min(generation.evaluations / self.total, 1.0)
        bar = "#" * round(done * self.width)
        sys.stderr.write(f"\r[{bar:<{self.width}}] {generation.evaluations}/{self.total} evaluations, "
                         f"generation {generation.index + 1}, best {generation.best * 1e3:.3f} ms, "
                         f"{generation.wall_time:.0f} s ")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
