"""Racing, mutation and evaluation counting, on synthetic noisy fitness whose truth is known.

A synthetic placement is an index into a list of true latencies; a timed
run of it is its true latency times log-normal noise. Racing (trainer.racing) must never crown a
candidate that is slower than the incumbent, where selecting by the minimum
of noisy medians, as the trainer once did, often does.
"""

import math
import statistics

import numpy as np
import pytest

from torch_tier.trainer import racing
from torch_tier.trainer.chromosome import Chromosome
from torch_tier.trainer.config import TrainConfig
from torch_tier.trainer.fitness import MeasuredFitness, Scores
from torch_tier.trainer.racing import Champion

NOISE = 0.05  # relative standard deviation of one timed run
TRIALS = 400
CANDIDATES = 5  # per trial: as a generation offers several, and the best-looking is raced


def noisy(truths: list[float], rng: np.random.Generator, noise: float = NOISE):
    """A timer of synthetic placements: one run of placement i, whose true latency is truths[i]."""
    return lambda i: truths[i] * math.exp(rng.normal(0.0, noise))


def interleaved(sample, incumbent, candidate) -> racing.PairTimer:
    """Pairs from a one-run timer, the one to run first alternating pair by pair (as a worker does)."""
    def time_pairs(n: int) -> list[racing.Pair]:
        pairs = []
        for j in range(n):
            if j % 2:
                candidate_run, incumbent_run = sample(candidate), sample(incumbent)
            else:
                incumbent_run, candidate_run = sample(incumbent), sample(candidate)
            pairs.append((incumbent_run, candidate_run))
        return pairs
    return time_pairs


def first_look(sample, placement: int) -> float:
    """A placement's score after its first timed run: the median of 3 forwards."""
    return statistics.median(sample(placement) for _ in range(3))


def naive_selection(sample, candidates: list[int]) -> int:
    """The winner's curse: of the incumbent (0) and `candidates`, the lowest median of first runs."""
    return min([0] + candidates, key=lambda placement: first_look(sample, placement))


def raced_selection(sample, candidates: list[int], config: TrainConfig = TrainConfig()) -> int:
    """As the trainer selects: the candidates that look faster than the incumbent (0) race it,
    the best-looking first, `races` of them."""
    champion = Champion(0, first_look(sample, 0))
    looks = racing.looks(config.min_pairs, config.max_repeats)
    scored = sorted((first_look(sample, c), c) for c in candidates)
    for score, candidate in scored[:config.races]:
        if score < champion.latency:
            champion.challenge(candidate, interleaved(sample, champion.placement, candidate), looks,
                               config.race_confidence)
    return champion.placement


def replaced(select, candidate_truth: float, seed: int, trials: int = TRIALS) -> int:
    """Trials in which `select` returns a candidate, not the incumbent (true latency 1), when
    every candidate's true latency is `candidate_truth`."""
    sample = noisy([1.0] + [candidate_truth] * CANDIDATES, np.random.default_rng(seed))
    return sum(select(sample, list(range(1, CANDIDATES + 1))) != 0 for _ in range(trials))


@pytest.mark.parametrize("slower_by", [0.0, 0.01, 0.05])
def test_racing_never_crowns_a_slower_candidate_where_min_of_medians_does(slower_by):
    """5% noise; candidates 0%, 1% or 5% slower than the incumbent. A race crowns a candidate that
    is not faster with probability at most 1 - race_confidence (a sign test's guarantee):
    never in 400 trials when it is 5% slower. The minimum of medians picks one in a large share."""
    alpha = 1 - TrainConfig().race_confidence
    raced = replaced(raced_selection, 1.0 + slower_by, seed=1)
    naive = replaced(naive_selection, 1.0 + slower_by, seed=1)
    if slower_by >= 0.05:
        assert raced == 0
    assert raced <= alpha * TRIALS, f"racing crowned a not-faster candidate in {raced} of {TRIALS} trials"
    assert naive >= 0.2 * TRIALS, f"min of medians picked one in only {naive} of {TRIALS} trials"


def test_racing_crowns_a_faster_candidate_most_of_the_time():
    """The guarantee is not bought by never replacing anyone: 5% faster, 5% noise, one race
    a trial: found in most trials."""
    assert replaced(raced_selection, 0.95, seed=2, trials=200) >= 0.5 * 200


def test_best_so_far_never_rises_where_the_median_of_all_runs_does():
    """200 candidates of random truth, 5% noise. The incumbent's latency (a chain of paired
    estimates) only ever falls; the old figure, the median of every run of the placement with
    the lowest median, the best re-timed every generation, rises when its luck runs out."""
    rng = np.random.default_rng(3)
    truths = list(rng.uniform(0.8, 1.2, 200))
    sample = noisy(truths, rng)
    config = TrainConfig()
    champion = Champion(0, first_look(sample, 0))
    curve = [champion.latency]
    runs = {0: [sample(0) for _ in range(3)]}
    old_curve = [statistics.median(runs[0])]
    for candidate in range(1, len(truths)):
        if first_look(sample, candidate) < champion.latency:
            champion.challenge(candidate, interleaved(sample, champion.placement, candidate),
                               racing.looks(config.min_pairs, config.max_repeats), config.race_confidence)
        curve.append(champion.latency)
        runs[candidate] = [sample(candidate) for _ in range(3)]
        best = min(runs, key=lambda k: statistics.median(runs[k]))
        runs[best] += [sample(best) for _ in range(3)]  # the best re-timed
        old_curve.append(min(statistics.median(r) for r in runs.values()))
    assert all(later <= earlier for earlier, later in zip(curve, curve[1:]))
    assert truths[champion.placement] <= min(truths) * 1.1  # and it does find a fast one
    assert any(later > earlier for earlier, later in zip(old_curve, old_curve[1:]))


def test_sign_test_thresholds_and_looks():
    assert racing.looks(6, 24) == [6, 12, 24]
    assert racing.looks(6, 20) == [6, 12, 20]
    assert racing.looks(6, 6) == [6]
    assert racing.looks(6, 0) == []
    alpha = 0.05 / 3
    assert [racing.wins_needed(n, alpha) for n in (5, 6, 12, 24)] == [6, 6, 11, 18]  # 6 of 5: impossible


def test_deterministic_race_is_decided_at_the_first_look():
    """With no noise (model fitness) a faster candidate wins and a tie loses, each at the first look."""
    faster = racing.race(lambda n: [(1.0, 0.9)] * n, [6, 12, 24], 0.95)
    tie = racing.race(lambda n: [(1.0, 1.0)] * n, [6, 12, 24], 0.95)
    assert faster == racing.Verdict(True, pytest.approx(0.9), 6)
    assert tie == racing.Verdict(False, 1.0, 6)


# --- mutation -------------------------------------------------------------------------------------


def _flip_rate(config: TrainConfig, seed: int = 0, nodes: int = 5000, times: int = 4) -> float:
    """Share of items whose likelier tier a mutation flips, from a confident chromosome."""
    rng = np.random.default_rng(seed)
    flips = 0
    for _ in range(times):
        placement = rng.integers(0, 2, (nodes, 2)).astype(np.int8)
        parent = Chromosome.of_placement(placement, config)
        flips += int((parent.mutate(rng, config).mode()[0] != placement).sum())
    return flips / (times * nodes * 2)


def test_mutation_flips_choices_at_the_configured_rate():
    """A confident item (logits 2 and 0) flips when reset (a fresh pair of N(0, 1) logits: 1/2)
    or super-mutated (2 x N(1, s) < 0: Phi(-1/s)); MARL's nudge alone never flips one."""
    def expected(c: TrainConfig) -> float:
        phi = 0.5 * (1 + math.erf(-1 / c.super_noise / math.sqrt(2)))
        return c.mutated_share * (c.reset_mutation / 2 + c.super_mutation * phi)

    nudge_only = TrainConfig(super_mutation=0.0, reset_mutation=0.0)
    assert _flip_rate(nudge_only) == 0.0
    items = 4 * 5000 * 2
    for config in (TrainConfig(), TrainConfig(super_mutation=0.0, reset_mutation=0.2),
                   TrainConfig(super_mutation=0.2, reset_mutation=0.0)):
        rate, p = _flip_rate(config), expected(config)
        assert p > 0 and abs(rate - p) <= 4 * math.sqrt(p * (1 - p) / items), (config, rate, p)


def test_a_reset_item_gets_a_random_chromosomes_genes():
    reset = TrainConfig(super_mutation=0.0, reset_mutation=1.0, mutated_share=1.0)
    child = Chromosome(np.ones((500, 2, 2)), np.full((500, 2), 0.05)).mutate(np.random.default_rng(0), reset)
    assert (child.temperature == 1.0).all()
    assert abs(child.prior.mean()) < 0.1 and abs(child.prior.std() - 1.0) < 0.1  # logits N(0, 1)


# --- evaluations are timed runs -------------------------------------------------------------------


class CountingPool:
    """A WorkerPool stand-in: every placement it is asked to time is one run, recorded."""

    def __init__(self) -> None:
        self.runs: list[bytes] = []

    def run(self, tasks):
        self.runs += [np.asarray(p, dtype=np.int8).tobytes() for p, _ in tasks]
        return [[0.01] * repeats for _, repeats in tasks]

    def side_by_side(self, groups, repeats):
        self.runs += [np.asarray(p, dtype=np.int8).tobytes() for group in groups for p in group]
        return [[[0.01] * repeats for _ in group] for group in groups]


def test_cache_hits_are_not_counted_as_evaluations():
    pool = CountingPool()
    fitness = MeasuredFitness(pool, repeats=3)
    scores = Scores()
    a, b, c, d = (np.array([[i >> bit & 1, 0] for bit in range(4)], dtype=np.int8) for i in range(4))
    assert fitness.evaluate([a, b, a, b], scores, limit=100) == 2  # a repeat within a generation is free
    assert fitness.evaluate([a, b, c], scores, limit=100) == 1  # and so is one from an earlier generation
    assert fitness.evaluate([a, d, c], scores, limit=0) == 0 and d not in scores  # the budget's end
    assert len(pool.runs) == 3
    pairs = fitness.pairs(a, c, 4, scores)
    assert len(pairs) == 4 and len(pool.runs) == 3 + 4 * fitness.pair_cost  # a pair is two runs
    assert len(scores.samples[a.tobytes()]) == 3 + 4 * 3  # and its runs join the placement's score
