"""The trainer where the cost model is wrong: a noisy fitness over a device the planner does not know.

The truth is the assumed profile's cost model of a small CNN (its own times
set from its bytes, so that the case is the same on every machine) with a
slow tier that doubles the all-PM time, and with the weights that the
assumed optimum puts in PM costing 5 times what the profile says (the
device punishes exactly what the model thinks cheap). Timed runs are the truth
times 3% log-normal noise, median of 3 forwards, and cost one evaluation
each, as measured fitness does; it runs in-process, in seconds.
"""

import dataclasses
import statistics
import types
import warnings

import numpy as np
import pytest

from torch_tier import baselines, calibrate, capture, zoo
from torch_tier.cost_model import GraphCosts, cost_model, dram_seconds, graph_costs
from torch_tier.placement import PlacementSpace
from torch_tier.trainer import erl, train
from torch_tier.trainer import checkpoint as checkpoints
from torch_tier.trainer.config import TrainConfig
from torch_tier.trainer.erl import Search, Settings
from torch_tier.trainer.fitness import Scores
from torch_tier.trainer.sac import Learner

DEVICE = "optane-100"
NOISE = 0.03
BUDGET = 300  # timed runs, as the acceptance allows


class NoisyTruth:
    """A measured fitness in miniature: each timed run is `truth`'s latency times log-normal noise."""

    pair_cost = 2

    def __init__(self, space: PlacementSpace, truth: GraphCosts, seed: int, repeats: int = 3):
        self.space, self.truth, self.repeats = space, truth, repeats
        self.rng = np.random.default_rng(seed)
        self.runs = 0

    def run(self, placement: np.ndarray) -> list[float]:
        self.runs += 1
        seconds = self.truth.latency(self.space.clean(placement))
        return list(seconds * np.exp(self.rng.normal(0.0, NOISE, self.repeats)))

    def evaluate(self, placements: list[np.ndarray], scores: Scores, limit: int) -> int:
        new = scores.unscored(placements)[:limit]
        for placement in new:
            scores.add(placement, self.run(placement))
        return len(new)

    def pairs(self, incumbent: np.ndarray, candidate: np.ndarray, n: int, scores: Scores) -> list[tuple[float, float]]:
        out = []
        for _ in range(n):
            a, b = self.run(incumbent), self.run(candidate)
            scores.add(incumbent, a)
            scores.add(candidate, b)
            out.append((statistics.median(a), statistics.median(b)))
        return out


@dataclasses.dataclass
class Case:
    graph: object
    space: PlacementSpace
    limit: int
    truth: GraphCosts
    assumed_optimum: float  # its latency under the truth
    optimum: float  # the truth's own optimum

    def latency(self, placement: np.ndarray) -> float:
        return self.truth.latency(self.space.clean(placement))

    def search(self, seed: int = 0, start: np.ndarray | None = None,
               **config) -> tuple[Search, NoisyTruth, list[np.ndarray]]:
        """A run (of BUDGET timed runs unless `config` says); also the placements generation 0 scored."""
        config = TrainConfig(**{"evaluations": BUDGET, "seed": seed, **config})
        search = Search(self.graph, Settings(self.limit, f"sim:{DEVICE}", DEVICE, "measured", config), start)
        fitness = NoisyTruth(self.space, self.truth, seed + 100)
        first: list[np.ndarray] = []
        search.run(fitness, lambda g: first or first.extend(search.scores.placements.values()))
        return search, fitness, first


@pytest.fixture(scope="module")
def case() -> Case:
    work = zoo.build("resnet50", width=0.25, depth=1.0, image_size=32)
    graph = capture(work.model, work.inputs, name="small-resnet", repeats=2, max_repeats=2)
    for node, traffic in zip(graph.nodes, dram_seconds(graph, cost_model(DEVICE))):
        node.dram_time = 2 * traffic  # own times from bytes, not from this machine's timing noise
    graph.base_time = sum(node.dram_time for node in graph.nodes)
    space = PlacementSpace(graph)
    limit = baselines.dram_budget(graph, "25%")
    assumed = graph_costs(graph, DEVICE)
    assumed_optimum = space.encode(baselines.optimal(graph, limit, DEVICE))
    slow = assumed.base_time / (assumed.latency(space.all_in(1)) - assumed.base_time)
    hot = np.where(assumed_optimum[:, 0] == 1, 5.0, 1.0)
    truth = dataclasses.replace(assumed, weight=assumed.weight * slow * hot, write=assumed.write * slow,
                                read=assumed.read * slow)
    optimum = space.encode(baselines.optimal(graph, limit, DEVICE, costs=truth))
    return Case(graph, space, limit, truth, truth.latency(assumed_optimum), truth.latency(optimum))


def _never_rises(search: Search) -> bool:
    best = [g.best for g in search.history]
    return all(later <= earlier for earlier, later in zip(best, best[1:]))


def test_trained_beats_the_assumed_optimum_where_the_device_differs(case):
    assert case.assumed_optimum > 1.1 * case.optimum  # the device does change the optimum
    search, fitness, _ = case.search()
    trained = case.latency(search.champion.placement)
    assert trained < 0.9 * case.assumed_optimum
    assert trained < 1.03 * case.optimum
    assert _never_rises(search)
    assert search.evaluations == fitness.runs <= BUDGET  # every evaluation a timed run, and no more
    assert sum(len(s) for s in search.scores.samples.values()) == 3 * fitness.runs


def test_the_last_generation_keeps_the_runs_of_a_race(case):
    """With 25 timed runs and 20 members, proposals stop at 13 so that the best of them can still
    race the incumbent (generation 0's first placement): the last 12 runs are that race's 6 pairs.
    (Whether it wins is the noise's to say: a 3.5% faster candidate wins 6 of 6 pairs about half the time.)"""
    search, fitness, first = case.search(evaluations=25)
    assert len(first) == 25 - search.config.min_pairs * fitness.pair_cost
    best = min(first[1:], key=search.scores.score)
    assert search.scores.score(best) < search.scores.score(first[0]) and PlacementSpace.key(best) in search.raced
    assert search.done() and fitness.runs == 25


def test_a_run_started_from_the_planners_placement_falls_from_it(case):
    """`start` is the first incumbent: the curve starts at its timed latency and only paired wins lower it."""
    start = case.space.encode(baselines.optimal(case.graph, case.limit, DEVICE))
    search, _, first = case.search(start=start)
    assert np.array_equal(first[0], start)
    assert search.history[0].best <= statistics.median(search.scores.samples[start.tobytes()][:3])
    assert case.latency(search.champion.placement) < 0.9 * case.latency(start)
    assert _never_rises(search)


def test_a_split_start_is_timed_as_given_and_whole_placements_race_it(case):
    """The split optimum of the assumed profile (policy format 2) is the first incumbent, timed with
    its shares; the population, seeded with its rounding, searches whole placements, and one that
    the device makes faster takes over by a paired win. The model member's fit sees whole placements only."""
    start = case.space.encode(baselines.optimal(case.graph, case.limit, DEVICE, split=True))
    assert start.dtype.kind == "f" and ((start > 0) & (start < 1)).any()
    search, _, first = case.search(start=start)
    assert first[0] is start or np.array_equal(first[0], start)
    assert search.history[0].best <= statistics.median(search.scores.samples[PlacementSpace.key(start)][:3])
    champion = search.champion.placement
    assert champion.dtype.kind == "i"  # a whole placement won
    assert case.latency(champion) < 0.98 * case.latency(start) and case.latency(champion) < 1.01 * case.optimum
    assert len(search.scores.timed()[0]) == len(search.scores.samples) - 1  # all but the split start
    assert _never_rises(search)


def test_a_split_start_that_is_the_optimum_stays_the_result(case):
    """Where the device is the assumed profile, nothing whole beats the split optimum: it stays the
    incumbent and the result is a split policy within the budget."""
    exact = dataclasses.replace(case, truth=graph_costs(case.graph, DEVICE))
    start = case.space.encode(baselines.optimal(case.graph, case.limit, DEVICE, split=True))
    whole = case.space.encode(baselines.optimal(case.graph, case.limit, DEVICE))
    assert exact.latency(start) < exact.latency(whole)
    search, _, _ = exact.search(evaluations=60, start=start)
    assert exact.latency(search.champion.placement) <= exact.latency(start) * 1.001
    policy = search.result(interrupted=False).policy
    assert policy.split and case.graph.footprint(policy)["dram"] <= case.limit


def test_a_converged_population_still_times_new_placements(case):
    """Twenty members proposing one placement timed before: each gets a different neighbour never
    timed, within the budget; with neighbour_tries=0 the repeats stay (free cache hits, nothing new)."""
    timed = case.space.encode(baselines.optimal(case.graph, case.limit, DEVICE))  # at the budget, as elites are
    search, _, _ = case.search(evaluations=25, start=timed)
    fresh = search._untimed([timed.copy() for _ in range(20)])
    keys = {f.tobytes() for f in fresh}
    assert len(keys) == 20 and timed.tobytes() not in keys
    assert all(f not in search.scores and search.budget.fits(f) for f in fresh)
    search.config = dataclasses.replace(search.config, neighbour_tries=0)
    assert all(np.array_equal(f, timed) for f in search._untimed([timed.copy() for _ in range(20)]))


def test_unseeded_run_learns_beyond_its_random_start(case):
    """From random chromosomes only: better, in truth, than every placement generation 0 timed."""
    search, _, first = case.search(seed_baselines=False)
    trained = case.latency(search.champion.placement)
    assert trained < 0.98 * min(case.latency(p) for p in first)
    assert trained < 1.03 * case.optimum
    assert _never_rises(search)


def test_ablation_switches_turn_their_part_off(case, monkeypatch):
    """Evolution only, learner only, no model member: each part off is never called."""
    def forbidden(*args, **kwargs):
        raise AssertionError("called although switched off")

    monkeypatch.setattr(calibrate, "fit", forbidden)
    monkeypatch.setattr(Learner, "update", forbidden)
    search, _, _ = case.search(learner=False, model_member=False, evaluations=100)
    assert 100 - search.config.min_pairs * 2 <= search.evaluations <= 100 and _never_rises(search)
    monkeypatch.undo()
    monkeypatch.setattr(erl.Population, "evolve", forbidden)
    monkeypatch.setattr(calibrate, "fit", forbidden)
    search, _, _ = case.search(evolution=False, model_member=False, evaluations=100)
    assert 100 - search.config.min_pairs * 2 <= search.evaluations <= 100 and _never_rises(search)
    with pytest.raises(ValueError, match="nothing would propose"):
        TrainConfig(evolution=False, learner=False)


def test_model_member_is_the_optimum_of_the_fitted_model(case, monkeypatch):
    """Once `model_member_every` placements are scored, their medians are fitted and the fitted
    model's optimum within the budget joins the population."""
    fits = []

    def fit(graph, placements, seconds, device, **kwargs):
        """A calibration that recovered the truth exactly."""
        fits.append((placements, seconds))
        return types.SimpleNamespace(costs=case.truth)

    monkeypatch.setattr(calibrate, "fit", fit)
    search = Search(case.graph, Settings(case.limit, f"sim:{DEVICE}", DEVICE, "measured",
                                         TrainConfig(evaluations=60, learner=False)))
    search.step(NoisyTruth(case.space, case.truth, 0))
    placements, seconds = fits[0]
    assert len(seconds) == len(search.scores.samples) >= TrainConfig().model_member_every
    assert seconds.tolist() == [search.scores.score(p) for p in placements]
    member = search.population.members[-1].mode()[0]
    assert case.latency(member) == pytest.approx(case.optimum)


def test_a_member_that_leaves_dram_free_on_purpose_is_timed_as_proposed(case, monkeypatch):
    """DRAM loaded by co-runners, tiers serving at once (GraphCosts.dram_share): the optimum leaves part
    of the budget free. The model member proposing it (a calibration that recovered this truth) is timed
    as it is, not filled up to the budget by the repair, and the run ends within 2% of it, where the
    assumed profile's optimum is over 5% slower."""
    loaded = dataclasses.replace(graph_costs(case.graph, "cxl"), dram_share=0.3)
    optimum = case.space.encode(baselines.optimal(case.graph, case.limit, costs=loaded))
    assert case.limit - case.graph.footprint(case.space.policy(optimum))["dram"] > 0.2 * case.limit
    monkeypatch.setattr(calibrate, "fit", lambda *args, **kwargs: types.SimpleNamespace(costs=loaded))
    search = Search(case.graph, Settings(case.limit, f"sim:{DEVICE}", DEVICE, "measured",
                                         TrainConfig(evaluations=100, learner=False, seed=0)))
    search.run(NoisyTruth(case.space, loaded, 0))
    assert optimum in search.scores
    ended, best = loaded.latency(search.champion.placement), loaded.latency(optimum)
    assumed = loaded.latency(case.space.encode(baselines.optimal(case.graph, case.limit)))
    assert ended < 1.02 * best and assumed > 1.05 * best


@pytest.fixture(scope="module")
def tiny():
    work = zoo.build("resnet50", width=0.25, depth=0.34, image_size=32)
    return work.model, work.inputs, capture(work.model, work.inputs, name="tiny-resnet", repeats=2, max_repeats=2)


def test_train_takes_a_config_its_keywords_override_and_the_checkpoint_keeps(tiny, tmp_path):
    model, inputs, graph = tiny
    config = TrainConfig(population=8, evaluations=40, learner_updates=2)
    result = train(model, inputs, graph=graph, config=config, evaluations=32, progress=False,
                   checkpoint=tmp_path / "run.ckpt")
    meta = result.policy.metadata
    assert meta["config"]["population"] == 8 and meta["config"]["learner_updates"] == 2
    assert meta["config"]["evaluations"] == meta["evaluations"] == 32
    saved = checkpoints.load(tmp_path / "run.ckpt")["settings"].config
    assert saved == dataclasses.replace(config, evaluations=32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(model, inputs, config=config, progress=False, checkpoint=tmp_path / "run.ckpt", resume=True)
    assert any("evaluations=40 (checkpoint: 32)" in str(w.message) for w in caught)
