"""train(): find the fastest placement of a model under a DRAM budget by evolutionary RL.

ERL as in MARL (seed paper 001, section 4), made honest under timing noise.
One generation (Search.step), top to bottom:
1. propose: every member of the population (population.py: Boltzmann
   chromosomes sample, GNN actors take their argmax) proposes a placement,
   repaired to the budget (budget.py);
2. evaluate: each placement never scored before is timed once (measured) or
   predicted (model) (fitness.py); a cache hit is free, and the budget may
   cut the last generation short: measured, it stops `min_pairs` pairs
   before the end, so that what the last generation found can still race;
3. race: placements scored below the incumbent race it, best first, in
   paired runs (racing.py); only a significant win replaces it, so the best
   so far, a chain of paired estimates, never rises;
4. learn: the scored placements join the replay buffer, and the soft
   actor-critic learner (sac.py) takes `learner_updates` gradient steps;
5. evolve: elites, tournament, crossover, mutation (population.py); or,
   learner only, every member becomes a sampler of the learner's actor;
6. migrate: the learner's actor and the model-based member take the last
   slots. The model-based member is the exact optimum (baselines.optimal)
   of the cost model fitted to every placement scored so far
   (calibrate.fit): what the measurements say the device is, searched
   exactly, then judged by racing like any other candidate.
A run may start from a placement (`start`, e.g. the planner's): it is timed
first, exactly as given, and is the first incumbent. The population itself
searches whole-tensor placements only, so a start that splits tensors between
the tiers (baselines.optimal(split=True), policy format 2) stays the
incumbent until a whole placement beats it in a race, and seeds the
population rounded to whole tiers. Why not fractions in the search: the
split optimum's shares are exact for the cost model (a linear program), a
few levels per item would multiply the space the population samples, and on
a split the measurements can only confirm or refute the model's claim that
the two tiers serve one stream at once, which racing the split start against
whole placements does.
Every hyperparameter is a field of TrainConfig (config.py); its switches
evolution, learner and model_member turn the three sources of candidates on
and off for ablations. The result is the incumbent, as a Policy, with its
paired latency estimate.
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Union

import numpy as np
import torch

from .. import baselines, calibrate, clocks, comparison, devices
from ..graph import TierGraph
from ..graph_capture import capture
from ..policy import Policy, fingerprint
from ..cost_model import graph_costs, predict
from ..placement import HEADS, PlacementSpace
from ..tiers import DRAM, PM, parse_pm
from . import checkpoint as checkpoints
from . import racing
from .budget import Budget
from .chromosome import Chromosome
from .config import TrainConfig
from .fitness import Fitness, MeasuredFitness, ModelFitness, Scores, measured
from .gnn import Neighbours, node_features
from .population import Genome, Population
from .racing import Champion
from .sac import Learner, ReplayBuffer
from .workers import RemoteWorkers

FOUND_BY = "torch-tier train (ERL: Boltzmann population + GNN soft actor-critic + fitted-model member, raced)"
SEED_BASELINES = ("all-pm", "first-touch", "interleave", "greedy")  # never 'optimal': it is the yardstick


@dataclass(frozen=True)
class Settings:
    """What decides the course of a run; a checkpoint keeps them."""

    budget: int  # bytes of DRAM
    pm: str  # the slow tier that runs
    device: str  # the profile the model-based parts assume: seeds, model fitness, the model member's prior
    fitness: str  # "model" or "measured"
    config: TrainConfig


@dataclass(frozen=True)
class Generation:
    """One generation's outcome: latencies in seconds, totals so far."""

    index: int
    best: float  # the incumbent's latency, a paired estimate (racing.py): it never rises
    median: float  # median score of this generation's placements
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
        label = "best so far" + (" (paired estimates)" if measured else "")
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

    def __init__(self, graph: TierGraph, settings: Settings, start: np.ndarray | None = None):
        self.graph = graph
        self.settings = settings
        self.config = c = settings.config
        self.space = PlacementSpace(graph)
        self.budget = Budget(self.space, settings.budget)
        self.assumed = graph_costs(graph, settings.device)  # the model member's fit starts from it
        costs = baselines.item_costs(graph, settings.device)
        costs = np.array([[costs[(i, head)] for head in HEADS] for i in range(self.space.nodes)])
        self.learner = Learner(node_features(graph, self.budget, costs), Neighbours.of(graph), self.space.mask,
                               self.budget, c)
        self.rng = np.random.default_rng(c.seed)
        self.start = start  # timed first: the first incumbent
        seeds = [] if start is None else [np.rint(start).astype(np.int8)]  # a split start rounded to whole tiers
        seeds += [self.space.encode(baselines.BASELINES[name](graph, settings.budget, settings.device))
                  for name in SEED_BASELINES] if c.seed_baselines else []
        self.population = Population.initial(c, self.space.nodes, seeds, self.rng, self.learner.logits_of)
        self.replay = ReplayBuffer(self.space.nodes)
        self.scores = Scores()
        self.champion: Champion[np.ndarray] | None = None  # the incumbent: `start`, else generation 0's first
        self.raced: set[bytes] = set()  # placements that raced: an incumbent only gets faster, so never again
        self.reference: float | None = None  # latency that rewards are relative to: generation 0's median
        self.evaluations = 0
        self.idle = 0  # generations in a row that evaluated nothing new
        self.final = False  # the evaluations left are the last race's: no more proposals
        self.fitted = 0  # placements scored when the model member was last fitted
        # the model member's optimum, proposed next as it is by the last slot (where it migrated): the
        # repair's fill would change it where DRAM is loaded and leaving some free is the point
        self.member_proposal: np.ndarray | None = None
        self.history: list[Generation] = []

    def done(self) -> bool:
        """The evaluation budget is spent (but for a last race's reserve), or the population has
        stopped proposing anything new."""
        return self.final or self.evaluations >= self.config.evaluations or self.idle >= self.config.patience

    def run(self, fitness: Fitness, after: Callable[[Generation], None] = lambda generation: None) -> None:
        """Generations until done; `after` is called with each (to checkpoint, to report)."""
        while not self.done():
            after(self.step(fitness))

    def step(self, fitness: Fitness) -> Generation:
        """One generation: propose, evaluate, race, learn, evolve, migrate (see the module doc)."""
        with _one_thread():
            start = time.perf_counter()
            c = self.config
            if self.champion is None and self.start is not None:
                self.evaluations += fitness.evaluate([self.start], self.scores, c.evaluations - self.evaluations)
                self.champion = Champion(self.start, self.scores.score(self.start))
            # 1. propose: every member's placement, repaired to the budget; a repeat of one timed
            #    before (a converged population's) gives way to a neighbour never timed
            own = [self.budget.repair(p, dram_preference) for p, dram_preference in self.population.propose(self.rng)]
            if self.member_proposal is not None:
                own[-1], self.member_proposal = self.member_proposal, None
            placements = self._untimed(own)
            # 2. evaluate what was never scored, keeping one race's runs for after (the budget may
            #    leave some of the last generation unscored: a placement scored too late to race is wasted)
            left = c.evaluations - self.evaluations
            reserve = min(c.min_pairs * fitness.pair_cost, left)
            used = fitness.evaluate(placements, self.scores, left - reserve)
            self.evaluations += used
            scored = [p for p in placements if p in self.scores]
            latencies = [self.scores.score(p) for p in scored]
            if self.champion is None:
                self.champion = Champion(scored[0], latencies[0])
            if self.reference is None:
                self.reference = statistics.median(latencies)
            # 3. race the placements that look faster than the incumbent
            races = self._race(fitness, scored)
            self.idle = 0 if used or races else self.idle + 1
            self.final = c.evaluations - self.evaluations <= reserve  # nothing left to propose with
            # 4.-6. learn, evolve, migrate; not after a generation cut short: its unscored members have no rank
            if len(scored) == len(placements):
                ranks = [min(latency, self.scores.score(mine)) if mine in self.scores else latency
                         for mine, latency in zip(own, latencies)]  # a member is as good as its own proposal
                self._next_generation(scored, latencies, ranks)
            elapsed = time.perf_counter() - start + (self.history[-1].wall_time if self.history else 0.0)
            self.history.append(Generation(len(self.history), self.champion.latency, statistics.median(latencies),
                                           self.evaluations, elapsed))
            return self.history[-1]

    def _untimed(self, proposals: list[np.ndarray]) -> list[np.ndarray]:
        """`proposals`, each one scored before (or proposed twice) replaced by a neighbour never
        scored, within `neighbour_tries` tries: local search around the population's members."""
        seen: set[bytes] = set()
        out = []
        for placement in proposals:
            for _ in range(self.config.neighbour_tries):
                if PlacementSpace.key(placement) not in seen and placement not in self.scores:
                    break
                placement = self._neighbour(placement)
            seen.add(PlacementSpace.key(placement))
            out.append(placement)
        return out

    def _neighbour(self, placement: np.ndarray) -> np.ndarray:
        """`placement` with one random item moved to the other tier, repaired to the budget: moving
        an item into DRAM evicts others, moving one out lets others in (a swap, most often)."""
        flat = placement.ravel().copy()
        item = self.rng.choice(np.flatnonzero(self.space.mask.ravel()))
        flat[item] = DRAM if flat[item] == PM else PM
        preference = np.where(flat == DRAM, 0.75, 0.25) + self.rng.uniform(0.0, 0.1, flat.shape)  # random tie-breaks
        preference[item] = 1.0 if flat[item] == DRAM else 0.0  # the moved item stays where it was moved
        return self.budget.repair(flat.reshape(placement.shape), preference.reshape(placement.shape))

    def _race(self, fitness: Fitness, placements: list[np.ndarray]) -> int:
        """Race the placements scored below the incumbent, best first, at most `races` of them and
        none twice, within the evaluations left; returns how many raced."""
        c = self.config
        contenders = {PlacementSpace.key(p): p for p in placements}
        ran = 0
        for key, candidate in sorted(contenders.items(), key=lambda kv: self.scores.score(kv[1])):
            incumbent = self.champion.placement
            if ran == c.races or self.scores.score(candidate) >= self.scores.score(incumbent):
                break
            if key in self.raced or key == PlacementSpace.key(incumbent):
                continue
            left = c.evaluations - self.evaluations
            most = min(c.max_repeats, left // fitness.pair_cost) if fitness.pair_cost else c.max_repeats
            if most < c.min_pairs:
                break
            verdict = self.champion.challenge(
                candidate, lambda n: fitness.pairs(incumbent, candidate, n, self.scores),
                racing.looks(c.min_pairs, most), c.race_confidence)
            self.evaluations += verdict.pairs * fitness.pair_cost
            self.raced.add(key)
            ran += 1
        return ran

    def _next_generation(self, placements: list[np.ndarray], latencies: list[float], ranks: list[float]) -> None:
        """Learn from the generation, evolve the population (or, learner only, sample the learner's
        actor), and migrate in the learner's actor and the model-based member."""
        c = self.config
        if c.learner:
            for placement, latency in zip(placements, latencies):
                self.replay.add(placement, latency)
            self.learner.update(self.replay, self.reference, self.rng)
        if c.evolution:
            self.population.evolve(ranks, self.rng)
        else:
            self.population.sample_of(self.learner.actor)
        newcomers: list[Genome] = [self.learner.actor] if c.learner else []
        member = self._model_member() if c.model_member else None
        if member is not None:
            newcomers.append(Chromosome.of_placement(member, c))
            self.member_proposal = member
        self.population.migrate(newcomers)

    def _model_member(self) -> np.ndarray | None:
        """The exact optimum, within the budget, of the cost model fitted to the placements scored
        so far; None unless `model_member_every` more have been since the last fit. It joins the
        population, and its first proposal is itself, unrepaired: it fits the budget, and the
        fitted model may leave DRAM free on purpose (parallel tiers, DRAM loaded)."""
        c = self.config
        placements, seconds = self.scores.timed()
        if len(seconds) < self.fitted + c.model_member_every:
            return None
        self.fitted = len(seconds)
        recent = slice(-c.model_member_samples, None)
        fitted = calibrate.fit(self.graph, placements[recent], seconds[recent], self.settings.device,
                               assumed=self.assumed)
        optimum = baselines.optimal(self.graph, self.settings.budget, self.settings.device, costs=fitted.costs)
        return self.space.encode(optimum)

    def result(self, interrupted: bool) -> TrainResult:
        """The incumbent as a policy, with its paired latency estimate; never over the budget."""
        s, placement = self.settings, self.champion.placement
        policy = self.space.policy(placement)
        dram = self.graph.footprint(policy)["dram"]
        if dram > s.budget:
            raise RuntimeError(f"internal error: the best placement holds {dram} bytes of DRAM, "
                               f"over the budget of {s.budget}")
        policy.metadata = {
            "found_by": FOUND_BY, "fitness": s.fitness, "latency": self.champion.latency,
            "predicted_latency": predict(self.graph, policy, s.device), "dram_budget": s.budget,
            "dram_bytes": dram, "pm": s.pm, "device": s.device, "evaluations": self.evaluations,
            "generations": len(self.history), "population": s.config.population, "seed": s.config.seed,
            "seeded_from_baselines": s.config.seed_baselines,
            "samples": len(self.scores.samples[PlacementSpace.key(placement)]), "config": asdict(s.config),
        }
        return TrainResult(policy, list(self.history), self.graph, interrupted)

    def state_dict(self) -> dict[str, Any]:
        return {"population": self.population.state_dict(), "learner": self.learner.state_dict(),
                "replay": self.replay.state_dict(), "scores": self.scores.state_dict(),
                "champion": asdict(self.champion), "raced": sorted(self.raced),
                "rng": self.rng.bit_generator.state, "reference": self.reference,
                "evaluations": self.evaluations, "idle": self.idle, "final": self.final, "fitted": self.fitted,
                "member_proposal": self.member_proposal,
                "history": [asdict(g) for g in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.population.load_state_dict(state["population"], self.learner.new_actor)
        self.learner.load_state_dict(state["learner"])
        self.replay.load_state_dict(state["replay"])
        self.scores.load_state_dict(state["scores"])
        self.champion = Champion(**state["champion"])
        self.raced = set(state["raced"])
        self.rng.bit_generator.state = state["rng"]
        self.reference = state["reference"]
        self.evaluations = state["evaluations"]
        self.idle = state["idle"]
        self.final = state["final"]
        self.fitted = state["fitted"]
        self.member_proposal = state.get("member_proposal")
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
    evaluations: int | None = None,
    population: int | None = None,
    seed: int | None = None,
    workers: int | RemoteWorkers = 1,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    seed_baselines: bool | None = None,
    progress: Progress = True,
    graph: TierGraph | None = None,
    repeats: int | None = None,
    max_repeats: int | None = None,
    warmup: int | None = None,
    compare_rounds: int = 0,
    device: str | None = None,
    config: TrainConfig | None = None,
    start: Policy | str | None = None,
    generate: int | None = None,
) -> TrainResult:
    """Search placements of `model` under `dram_budget` and return the fastest found.

    dram_budget: bytes, '512MiB', a fraction (0.25) or a share of the all-DRAM footprint ('25%').
    pm: the slow tier measured runs use ('sim:NAME', 'memkind:DIR', 'kmem').
    device: the profile the model-based parts assume (seeding, greedy and optimal baselines,
        model fitness, predictions in tables), apart from `pm`, which is what runs. Default:
        the sim's profile when `pm` names one, else optane-100 (e.g. for a device model).
    fitness: 'model' (the cost model's prediction) or 'measured' (timed inference in workers).
    config: every hyperparameter (TrainConfig, whose fields say what they do); default TrainConfig().
    start: a placement to start from (e.g. the planner's, baselines.optimal), or a baseline's
        name ('optimal', 'optimal (split)': see baselines.BASELINES and SPLIT_BASELINES, made on
        `device`): timed first as given, the first incumbent, so the curve of the best so far
        starts at its timed latency and falls only by paired wins over it. It joins the first
        population (rounded to whole tiers if it splits tensors) beside the seeds (if seed_baselines).
    evaluations, population, seed, seed_baselines, repeats, max_repeats, warmup: when given,
        override the config's fields of those names. evaluations: timed runs (measured) or
        predictions (model); a placement already scored is free, and the last generation may
        be cut short to end the run on exactly that many.
    workers: measured fitness only: a number of local worker processes, or RemoteWorkers
        (an address such as 'tcp://0.0.0.0:5555' to bind and wait for `torch-tier worker
        --connect` workers, the ModelSpec they build the model from, the secret's key file).
    checkpoint: written after every generation; with resume=True, read first and continued
        (its settings and config win over the arguments; a model-fitness run resumed ends as
        an uninterrupted one would).
    progress: a progress bar on stderr, or a function called with each Generation.
    graph: a captured graph of `model` to reuse (default: capture it now).
    generate: capture a whole generate call of that many tokens (capture(..., generate=N)) and
        search placements of it; a timed run is then one generate call (so with a generate
        `graph` too).
    compare_rounds: if set, the result's `comparison` holds the trained policy beside the
        baselines (torch_tier.comparison), predicted, and with measured fitness also timed in that
        many side-by-side rounds on one worker (so a remote one too).

    Ctrl-C ends the run: the checkpoint of the last complete generation stands, and the
    best policy so far is returned with `interrupted` set.
    """
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    overrides = {"evaluations": evaluations, "population": population, "seed": seed, "seed_baselines": seed_baselines,
                 "repeats": repeats, "max_repeats": max_repeats, "warmup": warmup}
    config = replace(config or TrainConfig(), **{k: v for k, v in overrides.items() if v is not None})
    if fitness not in ("model", "measured"):
        raise ValueError(f"fitness must be 'model' or 'measured', got {fitness!r}")
    if config.evaluations < config.population:
        raise ValueError(f"evaluations ({config.evaluations}) must be at least the population ({config.population})")
    if resume:
        if checkpoint is None:
            raise ValueError("resume=True needs the checkpoint to resume from")
        state = checkpoints.load(checkpoint)
        graph, settings = state["graph"], state["settings"]
        if graph.fingerprint != fingerprint(model):
            raise ValueError(f"{checkpoint}: checkpoint of model {graph.fingerprint}, "
                             f"this model is {fingerprint(model)}")
    else:
        clocks.check(config.clock)  # before any work: 'cpu' needs one intra-op thread
        graph = graph or capture(model, inputs, clock=config.clock, generate=generate)
        spec = parse_pm(pm)
        settings = Settings(budget=baselines.dram_budget(graph, dram_budget), pm=str(spec),
                            device=device or devices.assumed_profile(spec.profile), fitness=fitness, config=config)
    search = Search(graph, settings, None if start is None else PlacementSpace(graph).encode(
        _start_policy(start, graph, settings)))
    if resume:
        search.load_state_dict(state["search"])
        _warn_unlike(settings, fitness, config)
    report = ProgressBar(settings.config.evaluations) if progress is True else (progress or (lambda generation: None))

    def after(generation: Generation) -> None:
        if checkpoint is not None:
            checkpoints.save(checkpoint, {"settings": settings, "graph": graph, "search": search.state_dict()})
        report(generation)

    interrupted = False
    with _fitness(search, model, inputs, workers) as judge:
        try:
            search.run(judge, after)
        except KeyboardInterrupt:
            if not search.history:
                raise
            interrupted = True
        finally:
            if isinstance(report, ProgressBar):
                report.close()
        result = search.result(interrupted)
        if compare_rounds and not interrupted:
            named = comparison.placements(graph, settings.budget, settings.device, result.policy, split=True)
            timer = judge if isinstance(judge, MeasuredFitness) else None
            result.comparison = comparison.compare(graph, named, settings.budget, settings.device, timer, compare_rounds)
    return result


def _start_policy(start: Policy | str, graph: TierGraph, settings: Settings) -> Policy:
    """`start` as a Policy within the run's budget: given, or the named baseline made for the run."""
    if isinstance(start, str):
        makers = baselines.BASELINES | baselines.SPLIT_BASELINES
        if start not in makers:
            raise ValueError(f"start: unknown baseline {start!r} (known: {', '.join(makers)})")
        return makers[start](graph, settings.budget, settings.device)
    dram = graph.footprint(start)["dram"]
    if dram > settings.budget:
        raise ValueError(f"start: the placement holds {dram} bytes of DRAM, over the budget of {settings.budget}")
    return start


@contextmanager
def _fitness(search: Search, model: torch.nn.Module, inputs: tuple,
             workers: int | RemoteWorkers) -> Iterator[ModelFitness | MeasuredFitness]:
    s = search.settings
    if s.fitness == "model":
        yield ModelFitness(search.space, s.device)
        return
    with measured(model, inputs, search.graph, s.pm, workers, s.config.repeats, s.config.warmup,
                  s.config.clock) as judge:
        yield judge


def _warn_unlike(settings: Settings, fitness: str, config: TrainConfig) -> None:
    """Warn when a resumed run was asked for another fitness or config than its checkpoint's."""
    unlike = {"fitness": (fitness, settings.fitness)} if fitness != settings.fitness else {}
    unlike |= {f.name: (getattr(config, f.name), getattr(settings.config, f.name)) for f in fields(config)
               if getattr(config, f.name) != getattr(settings.config, f.name)}
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
