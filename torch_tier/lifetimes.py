"""Buffers that live over half-open intervals of time: how many bytes are live at once.

One home for what the graph's footprint, the DRAM budget, the baselines'
MILP, the fit traces and the planner's lower bound all need. Times are
integers (allocator events, or a planner's logical clock); an interval
`[start, end)` holds `size` bytes, so at one moment ends come before
starts. Imports nothing of torch: the planner command uses it.
"""

from __future__ import annotations

from typing import Hashable, Iterable

Interval = tuple[int, int, int]  # (start, end, size)


def _changes(intervals: Iterable[tuple[int, int, int, Hashable]]) -> list[tuple[int, int, Hashable]]:
    """(time, +size or -size, key), ends before starts at one time."""
    out = []
    for start, end, size, key in intervals:
        out.append((start, size, key))
        out.append((end, -size, key))
    out.sort(key=lambda change: (change[0], change[1] > 0))
    return out


def live_at_peaks(intervals: Iterable[tuple[int, int, int, Hashable]]) -> list[dict[Hashable, int]]:
    """Bytes live per key at each moment the live set stops growing, deduplicated.

    Every peak of any weighted sum of the keys' live bytes (the DRAM
    footprint of any placement) is reached at one of these moments: within
    a run of starts with no end between them the live set only grows. Keys
    with no live bytes are left out; at least one (possibly empty) set is
    returned.
    """
    live: dict[Hashable, int] = {}
    sets: dict[tuple, None] = {}
    grew = False
    for _, delta, key in _changes(intervals):
        if delta < 0 and grew:
            sets[tuple(sorted(((k, b) for k, b in live.items() if b), key=repr))] = None
        grew = delta > 0 if delta else grew
        live[key] = live.get(key, 0) + delta
    if grew:
        sets[tuple(sorted(((k, b) for k, b in live.items() if b), key=repr))] = None
    return [dict(key) for key in sets] or [{}]


def peak_live_bytes(intervals: Iterable[Interval]) -> int:
    """The largest sum of sizes live at one moment: no layout of these buffers in one arena peaks lower."""
    live = peak = 0
    for _, delta, _key in _changes((start, end, size, None) for start, end, size in intervals):
        live += delta
        peak = max(peak, live)
    return peak
