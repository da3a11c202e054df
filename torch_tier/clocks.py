"""The clock that timing reads: wall time, or the timing thread's CPU time.

Every latency torch-tier reports (measure(), capture's node times, the
emulated tier's meter, the trainer's timed runs) is read from one clock,
chosen for a stretch of code with `use()`:

- "wall" (the default): time.perf_counter. What a user of the model waits.
- "cpu": the calling thread's CPU time (CLOCK_THREAD_CPUTIME_ID). On a machine
  shared with other jobs, a forward's wall time grows with every time slice
  the scheduler gives to someone else (on a 2-core machine running four other
  jobs: twice the time, and up to 3x from one run to the next), while its CPU
  time does not. A slow tier's cost is still in it: a core stalled on a
  memory access is busy, so stalls count as CPU time, and the emulated tier
  spins its delay in CPU time too. It measures a forward only when the
  forward runs on the calling thread alone: `use("cpu")` requires one
  intra-op thread (torch.set_num_threads(1)).

The choice is per thread, like torch.no_grad(): code that times something
reads `now_ns()` and spins with `spin()`, never a clock of its own.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

import torch

from . import _C

CLOCKS = ("wall", "cpu")

_local = threading.local()


def current() -> str:
    """The clock this thread times with."""
    return getattr(_local, "clock", "wall")


def check(clock: str) -> None:
    """Raise ValueError unless `clock` can time forwards on this thread now."""
    if clock not in CLOCKS:
        raise ValueError(f"unknown clock {clock!r} (expected one of {list(CLOCKS)})")
    if clock == "cpu" and torch.get_num_threads() != 1:
        raise ValueError(f"clock 'cpu' times the calling thread only, so it needs one intra-op thread; "
                         f"torch has {torch.get_num_threads()} (torch.set_num_threads(1))")


@contextmanager
def use(clock: str | None) -> Iterator[None]:
    """Time with `clock` on this thread inside the block (None: keep the current one)."""
    if clock is None:
        yield
        return
    check(clock)
    previous = current()
    _local.clock = clock
    try:
        yield
    finally:
        _local.clock = previous


def now_ns() -> int:
    """Nanoseconds on this thread's clock (only differences mean anything)."""
    return time.thread_time_ns() if current() == "cpu" else time.perf_counter_ns()


def now() -> float:
    """Seconds on this thread's clock (only differences mean anything)."""
    return now_ns() * 1e-9


def spin(seconds: float) -> float:
    """Busy-wait until `seconds` have passed on this thread's clock; returns the seconds spun."""
    if current() == "wall":
        return _C.spin(seconds)
    start = time.thread_time_ns()
    until = start + int(seconds * 1e9)
    now_ = start
    while now_ < until:
        now_ = time.thread_time_ns()
    return (now_ - start) * 1e-9
