"""Allocation trace files, and their scaling from bytes to page cells.

A trace is the ordered allocation and free events of one run, as the
recording allocator saw them. Two equivalent encodings, chosen by suffix:

JSON (`.json`)::

    {"version": 1,
     "events": [{"op": "alloc", "id": 0, "size": 4096, "tier": "pm"},
                {"op": "free", "id": 0}]}

CSV (`.csv`), with a header row; free rows leave size and tier empty::

    op,id,size,tier
    alloc,0,4096,pm
    free,0,,

`id` names a block (unique among live blocks; may be reused after its free),
`size` is in bytes, `tier` is the tier the allocation was served from. A free
of an id never allocated in the trace (allocated before recording started)
is ignored when replaying.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

from .. import lifetimes

FIELDS = ("op", "id", "size", "tier")


@dataclass(frozen=True)
class TraceEvent:
    """One recorded event: `op` is "alloc" (with `size` bytes and `tier`) or "free"."""

    op: str
    id: int
    size: int = 0
    tier: str = ""


def _event(row: dict) -> TraceEvent:
    if row["op"] not in ("alloc", "free"):
        raise ValueError(f"trace event op must be alloc or free, got {row['op']!r}")
    if row["op"] == "free":
        return TraceEvent("free", int(row["id"]))
    return TraceEvent("alloc", int(row["id"]), int(row["size"]), str(row.get("tier") or ""))


def load_trace(path: Path) -> list[TraceEvent]:
    """The events of a `.json` or `.csv` trace file, in order."""
    path = Path(path)
    with path.open(newline="") as f:
        if path.suffix == ".csv":
            rows = list(csv.DictReader(f))
        elif path.suffix == ".json":
            rows = json.load(f)["events"]
        else:
            raise ValueError(f"trace file must end in .json or .csv: {path}")
    return [_event(row) for row in rows]


def save_trace(path: Path, events: list[TraceEvent]) -> None:
    """Write `events` as a `.json` or `.csv` trace file (the format above)."""
    path = Path(path)
    rows = [
        {"op": e.op, "id": e.id} if e.op == "free" else {"op": e.op, "id": e.id, "size": e.size, "tier": e.tier}
        for e in events
    ]
    with path.open("w", newline="") as f:
        if path.suffix == ".csv":
            writer = csv.DictWriter(f, FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        elif path.suffix == ".json":  # one event a line
            f.write('{"version": 1, "events": [\n' + ",\n".join(json.dumps(row) for row in rows) + "\n]}\n")
        else:
            raise ValueError(f"trace file must end in .json or .csv: {path}")


def intervals(events: list[TraceEvent]) -> list[lifetimes.Interval]:
    """Each allocation as (start, end, size), times being event indices: live
    from its event to its free's, or to one past the last event if never freed.
    Frees of blocks not allocated in `events` are ignored."""
    live: dict[int, tuple[int, int]] = {}
    out = []
    for time, e in enumerate(events):
        if e.op == "alloc":
            live[e.id] = (time, e.size)
        elif e.id in live:
            start, size = live.pop(e.id)
            out.append((start, time, size))
    return out + [(start, len(events), size) for start, size in live.values()]


def peak_live_bytes(events: list[TraceEvent]) -> int:
    """The largest total size of blocks live at once: `lifetimes.peak_live_bytes` of the events' `intervals`."""
    return lifetimes.peak_live_bytes(intervals(events))


def trace_to_cells(
    events: list[TraceEvent],
    page_size: int,
    tier: str | None = None,
    cell_bytes: int | None = None,
    fill: float = 0.8,
) -> list[TraceEvent]:
    """The events of one tier (all if `tier` is None) with sizes in cells.

    A cell is `cell_bytes` bytes; by default it is chosen so that the trace's
    peak live bytes fill `fill` of the page, which leaves the fit rule room to
    matter. Sizes round up to whole cells (at least one). Frees of blocks not
    allocated in the kept events are dropped.
    """
    kept = [e for e in events if e.op == "free" or tier is None or e.tier == tier]
    if cell_bytes is None:
        cell_bytes = max(1, math.ceil(peak_live_bytes(kept) / (fill * page_size)))
    live: set[int] = set()
    cells = []
    for e in kept:
        if e.op == "alloc":
            size = max(1, math.ceil(e.size / cell_bytes))
            if size > page_size:
                raise ValueError(f"allocation {e.id} of {e.size} B is {size} cells, larger than the page")
            live.add(e.id)
            cells.append(TraceEvent("alloc", e.id, size, e.tier))
        elif e.id in live:
            live.remove(e.id)
            cells.append(e)
    return cells
