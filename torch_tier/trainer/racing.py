"""Racing: the incumbent is replaced only by a candidate that paired runs show to be faster.

Why: timing is noisy. Keeping the placement with the lowest median over many
noisily timed ones rewards luck (the winner's curse): the minimum of noisy
medians is biased low, its placement is often not the fastest, and a
best-so-far curve of such minima rises whenever re-timing reveals the luck.

How: a placement whose median looks better than the incumbent's is a
candidate, and it races the incumbent:
- the two are timed in pairs, each pair one after the other in one process
  (one worker), the one to run first alternating pair by pair, so drifts of
  the machine's speed fall on both alike; each pair gives the ratio
  candidate / incumbent;
- a one-sided sign test is read at a few looks (`looks`: min_pairs pairs,
  twice as many, ... up to max_pairs). If the candidate is not faster, each
  ratio is below 1 with probability at most 1/2, so the number of pairs it
  won is at most Binomial(n, 1/2): it wins the race when that count is
  significant at level alpha / looks (Bonferroni over the looks, so a race
  crowns a candidate that is not faster with probability at most alpha);
- it loses as soon as it is not ahead in more than half the pairs (stopping
  early can only lose races, never win one falsely), and at the cap;
- the race's estimate is the median of its ratios (distribution-free, like
  the test). The incumbent's latency is a chain of paired estimates: the
  first incumbent's own median, times the ratio of every race won since. A
  won race has a ratio below 1 (more than half its ratios are), so the
  incumbent's latency, the best-so-far curve, never rises. The first
  incumbent is the first placement timed, not the best-looking one, so the
  chain inherits its timing error but no selection's bias.

The core is pure Python over any placement type and any pair timer, so it
can be tested on a synthetic noisy fitness whose truth is known.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

from ..timing import binomial_quantile

P = TypeVar("P")
Pair = tuple[float, float]  # seconds of (incumbent, candidate), timed one after the other
PairTimer = Callable[[int], list[Pair]]  # times that many more pairs


def looks(min_pairs: int, max_pairs: int) -> list[int]:
    """Pair counts at which a race is read: min_pairs, doubling, and max_pairs last (none if max_pairs < 1)."""
    schedule = []
    n = min_pairs
    while n < max_pairs:
        schedule.append(n)
        n *= 2
    return schedule + [max_pairs] if max_pairs >= 1 else []


def wins_needed(pairs: int, alpha: float) -> int:
    """The fewest won pairs out of `pairs` that a fair coin reaches with probability at most `alpha`
    (pairs + 1 when even winning all of them is not that rare)."""
    return binomial_quantile(1 - alpha, pairs) + 1


@dataclass(frozen=True)
class Verdict:
    """A race's outcome: whether the candidate won, the median ratio candidate / incumbent, pairs timed."""

    faster: bool
    ratio: float
    pairs: int


def race(time_pairs: PairTimer, schedule: list[int], confidence: float) -> Verdict:
    """Time pairs up to each look of `schedule` and read the sign test there (see the module doc)."""
    if not schedule:
        raise ValueError("race: no looks to take")
    alpha = (1 - confidence) / len(schedule)
    ratios: list[float] = []
    for n in schedule:
        ratios += [candidate / incumbent for incumbent, candidate in time_pairs(n - len(ratios))]
        ahead = sum(r < 1 for r in ratios)
        if ahead >= wins_needed(n, alpha):
            return Verdict(True, statistics.median(ratios), n)
        if 2 * ahead <= n:
            break
    return Verdict(False, statistics.median(ratios), len(ratios))


@dataclass
class Champion(Generic[P]):
    """The incumbent placement and its latency, a paired estimate (see the module doc)."""

    placement: P
    latency: float

    def challenge(self, candidate: P, time_pairs: PairTimer, schedule: list[int], confidence: float) -> Verdict:
        """Race `candidate` against the incumbent (`time_pairs` times the two in pairs); it takes
        the incumbent's place if it wins, with the incumbent's latency times the race's ratio."""
        verdict = race(time_pairs, schedule, confidence)
        if verdict.faster:
            self.placement, self.latency = candidate, self.latency * verdict.ratio
        return verdict
