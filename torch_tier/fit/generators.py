"""Request generators: the allocation and free streams a `FitEnv` serves.

A stream is an iterator of `Request`s, built fresh for every episode from the
episode's random generator, so a seeded `reset` replays the same requests.
Requests name blocks by id; the environment maps ids to addresses. A stream
never depends on where blocks were placed, so different policies see the
same requests for the same seed (paired comparisons).

Generators, for a page of P cells (the seed paper's, as the issue states):

- `random`: each request frees a uniformly chosen live block with
  probability `p_free` (0.4), else allocates a size uniform in `sizes`
  (1..5, the original code's choice; the paper's text says 1..4).
- `bf-good`: a sequence that only best fit serves to the end.
- `wf-good`: a sequence that only worst fit serves to the end.
- `mixed`: two adversarial segments, each bf-good or wf-good, with the first
  cleared by FIFO frees before the second starts.
- `trace:PATH`: replays a recorded allocation trace (see `trace.py`).

After an adversarial sequence the stream continues as `random`, so episodes
do not end artificially. Every request carries the name of the segment that
issued it, which only the segment-aware oracle looks at.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import numpy as np

from .trace import load_trace, trace_to_cells

GENERATORS = ("random", "bf-good", "wf-good", "mixed")

StreamFactory = Callable[[np.random.Generator], Iterator["Request"]]


@dataclass(frozen=True)
class Request:
    """One allocation (`op="alloc"`, `size` in cells) or free of block `id`."""

    op: str
    id: int
    size: int = 0
    segment: str = "random"


class Ledger:
    """The live blocks of one stream (id -> size, oldest first) and fresh ids."""

    def __init__(self) -> None:
        self.live: dict[int, int] = {}
        self._next_id = 0

    def alloc(self, size: int, segment: str) -> Request:
        """A request for a new block of `size` cells."""
        request = Request("alloc", self._next_id, int(size), segment)
        self.live[request.id] = request.size
        self._next_id += 1
        return request

    def free(self, block: int, segment: str) -> Request:
        """A request to free live block `block`."""
        del self.live[block]
        return Request("free", block, 0, segment)

    def free_random(self, rng: np.random.Generator, segment: str) -> Request:
        """A request to free a uniformly chosen live block."""
        ids = list(self.live)
        return self.free(ids[int(rng.integers(len(ids)))], segment)


def random_requests(
    ledger: Ledger,
    rng: np.random.Generator,
    sizes: tuple[int, int] = (1, 5),
    p_free: float = 0.4,
) -> Iterator[Request]:
    """Endless random frees (probability `p_free`) and allocations of `sizes` (inclusive)."""
    while True:
        if rng.random() < p_free and ledger.live:
            yield ledger.free_random(rng, "random")
        else:
            yield ledger.alloc(int(rng.integers(sizes[0], sizes[1] + 1)), "random")


def _pick(rng: np.random.Generator, values: list[int]) -> int:
    return int(values[int(rng.integers(len(values)))])


def bf_good(ledger: Ledger, rng: np.random.Generator, page_size: int) -> Iterator[Request]:
    """A sequence that first and worst fit cannot finish but best fit can.

    A big block (P/r) at the start, small blocks after it until only big - 1
    cells stay free at the end of the page; the big block is freed, a 1-cell
    block requested, then the big size again. Best fit puts the 1-cell block
    in the tail hole and the big one fits back at the start; first and worst
    fit put the 1-cell block at the start and the big request fails.
    """
    big = page_size // _pick(rng, [2, 3, 4, 5])
    smalls = [s for s in (page_size // d for d in (10, 20, 30, 50, 100, 200)) if s > 0]
    big_block = ledger.alloc(big, "bf-good")
    yield big_block
    free = page_size - big
    while True:
        size = _pick(rng, smalls)
        if free - size < big:
            break
        yield ledger.alloc(size, "bf-good")
        free -= size
    yield ledger.alloc(free - big + 1, "bf-good")
    yield ledger.free(big_block.id, "bf-good")
    yield ledger.alloc(1, "bf-good")
    yield ledger.alloc(big, "bf-good")


def wf_good(ledger: Ledger, rng: np.random.Generator, page_size: int) -> Iterator[Request]:
    """A sequence that only worst fit finishes.

    k blocks of about P/9 (total S) and a filler leave P/2.5 cells free at the
    end; the k blocks are freed oldest first, the first m of the frees each
    followed by a 1..3-cell request; finally S is requested again. Worst fit
    sends the small blocks to the tail hole, so the k freed blocks coalesce
    into one hole of exactly S; first and best fit put them in that hole.
    """
    sizes = [s for s in (page_size // d for d in (8, 9, 10)) if s > 0]
    reserve = page_size / 2.5
    free, blocks = page_size, []
    while True:
        size = _pick(rng, sizes)
        if free - size <= reserve:
            break
        blocks.append(ledger.alloc(size, "wf-good"))
        yield blocks[-1]
        free -= size
    total = page_size - free
    if int(free - reserve) > 0:
        yield ledger.alloc(int(free - reserve), "wf-good")
    smalls = min(_pick(rng, [1, 2, 3]), len(blocks) - 1)
    for i, block in enumerate(blocks):
        yield ledger.free(block.id, "wf-good")
        if i < smalls:
            yield ledger.alloc(_pick(rng, [1, 2, 3]), "wf-good")
    yield ledger.alloc(total, "wf-good")


SEGMENTS = {"bf-good": bf_good, "wf-good": wf_good}


def mixed(ledger: Ledger, rng: np.random.Generator, page_size: int) -> Iterator[Request]:
    """Two adversarial segments drawn independently; FIFO frees clear the first."""
    first, second = (SEGMENTS[name] for name in rng.choice(list(SEGMENTS), size=2))
    yield from first(ledger, rng, page_size)
    for block in list(ledger.live):
        yield ledger.free(block, "clear")
    yield from second(ledger, rng, page_size)


def make_generator(
    name: str,
    page_size: int,
    sizes: tuple[int, int] = (1, 5),
    p_free: float = 0.4,
    **trace_options: object,
) -> StreamFactory:
    """A factory of request streams for generator `name` on a page of `page_size` cells.

    `sizes` and `p_free` configure `random` and the continuation after an
    adversarial sequence; `trace_options` go to `trace_to_cells` for
    `trace:PATH` (a trace is loaded once, here, not per episode).
    """
    if name.startswith("trace:"):
        events = trace_to_cells(load_trace(Path(name[len("trace:") :])), page_size, **trace_options)
        requests = [Request(e.op, e.id, e.size, "trace") for e in events]
        return lambda rng: iter(requests)
    if trace_options:
        raise TypeError(f"options {sorted(trace_options)} apply to trace generators only")
    if name == "random":
        return lambda rng: random_requests(Ledger(), rng, sizes, p_free)
    adversarial = {**SEGMENTS, "mixed": mixed}
    if name not in adversarial:
        raise ValueError(f"unknown generator {name!r}; choose from {GENERATORS} or trace:PATH")

    def stream(rng: np.random.Generator) -> Iterator[Request]:
        ledger = Ledger()
        return chain(adversarial[name](ledger, rng, page_size), random_requests(ledger, rng, sizes, p_free))

    return stream
