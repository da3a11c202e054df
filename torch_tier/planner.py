"""Static memory planning: offsets for buffers whose lifetimes are known in advance.

When every buffer's lifetime is known before execution (an inference pass's
activations are, once captured), the buffers can be laid out in one arena ahead
of time so that the arena is as small as possible. This is the problem
MiniMalloc (seed 002) solves, and the solver in ``csrc/planner/`` implements
its algorithm: depth-first search over canonical solutions with cross-section
inference, dominance pruning, section decomposition and static pre-ordering,
behind a greedy first plan, built as its own small extension
(``torch_tier._planner``, no libtorch). This module is its Python face, and
imports nothing of torch, so ``torch-tier plan`` starts in a fraction of a second:

- ``solve(buffers, capacity=None, time_limit=...)`` returns a ``Plan``: within
  ``capacity`` if one is given, else of minimal peak. Every plan is checked
  here, independently of the C++, before it is returned.
- ``read_csv`` / ``write_csv`` speak MiniMalloc's CSV format
  (``id,lower,upper,size`` in, ``id,lower,upper,size,offset`` out).
- ``add_parser`` / ``cli_main`` implement ``torch-tier plan INPUT.csv``.

A buffer is live on the half-open interval ``[lower, upper)``; two buffers
whose intervals overlap must not overlap in ``[offset, offset + size)``.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from torch_tier import _planner
from torch_tier.lifetimes import peak_live_bytes

DEFAULT_TIME_LIMIT = 10.0  # seconds
INT64_MAX = 2**63 - 1  # the solver's integers: every time, size, offset and peak must fit

BufferId = str | int


@dataclass(frozen=True)
class Buffer:
    """A buffer of ``size`` bytes live on ``[lower, upper)``, placed at a multiple of ``alignment``.

    Sizes that are multiples of their alignment keep the exact search fast
    (the solver then divides everything by the common unit); sizes that are
    not make optimality much harder to prove, so round them up when the
    arena allocator would anyway.
    """

    id: BufferId
    lower: int
    upper: int
    size: int
    alignment: int = 1


@dataclass(frozen=True)
class SearchStats:
    """What the solver did: search effort, the greedy plan it started from, and time."""

    nodes: int
    backtracks: int
    probes: int  # capacities searched (minimise mode bisects between bounds)
    greedy_peak: int  # the best of eight greedy strategies
    greedy_strategy: str
    timed_out: bool  # the time limit cut the search short
    search_skipped: bool  # too many buffers for the exact search: greedy only
    seconds: float


@dataclass(frozen=True)
class Plan:
    """Offsets for ``buffers`` (same order), the peak they reach, and whether it is minimal."""

    buffers: tuple[Buffer, ...]
    offsets: tuple[int, ...]
    peak: int
    lower_bound: int  # the largest sum of sizes live at one moment
    optimal: bool  # peak proven minimal (always so when peak == lower_bound)
    capacity: int | None
    stats: SearchStats

    def offsets_by_id(self) -> dict[BufferId, int]:
        """Each buffer's offset, keyed by its id."""
        return {b.id: offset for b, offset in zip(self.buffers, self.offsets)}


class PlanError(ValueError):
    """Buffers that are not a well-formed problem, or a plan that is not valid for them."""


class NoPlanError(RuntimeError):
    """No plan within the capacity: proven impossible (``proven``), or none found in time."""

    def __init__(self, message: str, proven: bool, greedy_peak: int):
        super().__init__(message)
        self.proven = proven
        self.greedy_peak = greedy_peak  # the peak of the best greedy plan, which did not fit


class CsvError(ValueError):
    """A malformed planner CSV file; the message names the file and line."""


def solve(buffers: Iterable[Buffer], capacity: int | None = None,
          time_limit: float = DEFAULT_TIME_LIMIT) -> Plan:
    """Plans an offset for every buffer.

    With ``capacity``, finds a plan with every ``offset + size <= capacity``
    (the greedy plan when it fits, else the exact search's) and raises
    ``NoPlanError`` when there is none or none was found within ``time_limit``
    seconds. Without, minimises the peak: the search starts at the lower bound
    and keeps the best plan found, so at the time limit it returns that plan
    with ``optimal`` False rather than nothing. The solver releases the GIL.
    """
    buffers = tuple(buffers)
    check_buffers(buffers)
    if capacity is not None and (not _is_int(capacity) or not 0 <= capacity <= INT64_MAX):
        raise PlanError(f"capacity must be an integer in [0, 2**63 - 1], got {capacity!r}")
    if not time_limit >= 0:  # NaN too
        raise PlanError(f"time limit must be a non-negative number of seconds, got {time_limit!r}")
    # Zero-sized buffers take no space: they sit at offset 0 and skip the solver.
    sized = [i for i, b in enumerate(buffers) if b.size > 0]
    raw = _planner.plan_offsets([int(buffers[i].lower) for i in sized],
                                [int(buffers[i].upper) for i in sized],
                                [int(buffers[i].size) for i in sized],
                                [int(buffers[i].alignment) for i in sized],
                                None if capacity is None else int(capacity), float(time_limit))
    if not raw["found"]:
        raise NoPlanError(_no_plan_message(raw, capacity, time_limit), proven=raw["infeasible"],
                          greedy_peak=raw["greedy_peak"])
    offsets = [0] * len(buffers)
    for i, offset in zip(sized, raw["offsets"]):
        offsets[i] = offset
    plan = Plan(buffers=buffers, offsets=tuple(offsets), peak=raw["peak"],
                lower_bound=raw["lower_bound"], optimal=raw["optimal"], capacity=capacity,
                stats=SearchStats(nodes=raw["nodes"], backtracks=raw["backtracks"],
                                  probes=raw["probes"], greedy_peak=raw["greedy_peak"],
                                  greedy_strategy=raw["greedy_strategy"],
                                  timed_out=raw["timed_out"],
                                  search_skipped=raw["search_skipped"], seconds=raw["seconds"]))
    validate(plan)
    return plan


def _no_plan_message(raw: dict, capacity: int | None, time_limit: float) -> str:
    if raw["infeasible"]:
        if raw["lower_bound"] > capacity:
            return (f"no plan fits capacity {capacity}: buffers live at the same moment "
                    f"need {raw['lower_bound']}")
        return f"no plan fits capacity {capacity} (proven by exhaustive search)"
    why = ("too many buffers for the exact search" if raw["search_skipped"]
           else f"the search ran out of its {time_limit:g} s")
    return (f"no plan within capacity {capacity} found: the best greedy plan peaks at "
            f"{raw['greedy_peak']} and {why}")


def check_buffers(buffers: Sequence[Buffer]) -> None:
    """Raises ``PlanError`` naming the first buffer that is not well formed or reuses an id, or
    saying that the sizes, each padded to its alignment, add up to more than int64 holds (a plan's
    peak can reach that sum, and the solver's integers are int64)."""
    seen: set[BufferId] = set()
    total = 0
    for b in buffers:
        for field in ("lower", "upper", "size", "alignment"):
            if not _is_int(getattr(b, field)):
                raise PlanError(f"buffer {b.id!r}: {field} must be an integer, "
                                f"got {getattr(b, field)!r}")
            if not -INT64_MAX - 1 <= getattr(b, field) <= INT64_MAX:
                raise PlanError(f"buffer {b.id!r}: {field} {getattr(b, field)} is beyond int64")
        if b.upper <= b.lower:
            raise PlanError(f"buffer {b.id!r}: empty or negative lifetime [{b.lower}, {b.upper})")
        if b.size < 0:
            raise PlanError(f"buffer {b.id!r}: negative size {b.size}")
        if b.alignment < 1:
            raise PlanError(f"buffer {b.id!r}: alignment must be at least 1, got {b.alignment}")
        if b.id in seen:
            raise PlanError(f"duplicate buffer id {b.id!r}")
        seen.add(b.id)
        total += (b.size + b.alignment - 1) if b.size else 0
    if total > INT64_MAX:
        raise PlanError(f"the buffers' sizes (padded to their alignments) add up to {total:,}, beyond "
                        f"int64 ({INT64_MAX:,}): no arena could hold them")


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def lower_bound(buffers: Sequence[Buffer]) -> int:
    """The largest sum of sizes live at one moment: no plan can peak lower."""
    return peak_live_bytes((b.lower, b.upper, b.size) for b in buffers)


def validate(plan: Plan) -> None:
    """Raises ``PlanError`` unless ``plan`` is a valid plan for its buffers.

    Checks, without trusting the solver: one non-negative, aligned offset per
    buffer, within the capacity; that no two buffers live at the same moment
    share an address; and the stated peak and lower bound.
    """
    buffers, offsets = plan.buffers, plan.offsets
    if len(offsets) != len(buffers):
        raise PlanError(f"{len(offsets)} offsets for {len(buffers)} buffers")
    for b, offset in zip(buffers, offsets):
        if not _is_int(offset) or offset < 0 or offset % b.alignment:
            raise PlanError(f"buffer {b.id!r}: bad offset {offset!r} (alignment {b.alignment})")
        if plan.capacity is not None and offset + b.size > plan.capacity:
            raise PlanError(f"buffer {b.id!r}: ends at {offset + b.size}, "
                            f"past the capacity {plan.capacity}")
    clash = find_conflict(buffers, offsets)
    if clash is not None:
        first, second = clash
        raise PlanError(f"buffers {buffers[first].id!r} and {buffers[second].id!r} are live at "
                        f"the same moment and overlap in memory")
    peak = max((o + b.size for b, o in zip(buffers, offsets)), default=0)
    if plan.peak != peak:
        raise PlanError(f"stated peak {plan.peak} but the offsets reach {peak}")
    bound = lower_bound(buffers)
    if plan.lower_bound != bound or peak < bound:
        raise PlanError(f"lower bound is {bound}, plan states {plan.lower_bound} "
                        f"and peaks at {peak}")


def find_conflict(buffers: Sequence[Buffer], offsets: Sequence[int]) -> tuple[int, int] | None:
    """Indices of two buffers overlapping in both time and memory, or None.

    Sweeps the buffers by start time, checking each against those still live
    (vectorised, so thousands of buffers take milliseconds).
    """
    lower = np.array([b.lower for b in buffers], dtype=np.int64)
    upper = np.array([b.upper for b in buffers], dtype=np.int64)
    begin = np.array(offsets, dtype=np.int64)
    end = begin + np.array([b.size for b in buffers], dtype=np.int64)
    live = np.empty(0, dtype=np.int64)
    for i in np.argsort(lower, kind="stable"):
        live = live[upper[live] > lower[i]]
        clash = live[(begin[live] < end[i]) & (begin[i] < end[live])]
        if clash.size:
            return int(clash[0]), int(i)
        live = np.append(live, i)
    return None


# --- MiniMalloc's CSV format -------------------------------------------------

REQUIRED_COLUMNS = ("id", "lower", "upper", "size")
OPTIONAL_COLUMNS = ("alignment", "offset")  # an input "offset" column is ignored


def read_csv(path: str | Path) -> list[Buffer]:
    """Reads buffers from a CSV file with a header naming at least ``id,lower,upper,size``.

    Raises ``CsvError`` naming the file and line of the first problem: text
    that is not UTF-8, malformed CSV (e.g. a field over the csv module's limit
    of 128 KiB), a missing or unknown column, a wrong number of fields, a
    non-integer or one beyond int64, an empty or negative lifetime, a negative
    size or time, or a duplicate id.
    """
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        buffers: list[Buffer] = []
        first_line: dict[str, int] = {}
        try:
            columns = _check_header(path, next(reader, None))
            for row in reader:
                if not any(field.strip() for field in row):
                    continue
                where = f"{path}:{reader.line_num}"
                buffer = _parse_row(where, row, columns)
                if buffer.id in first_line:
                    raise CsvError(f"{where}: duplicate id {buffer.id!r} "
                                   f"(first on line {first_line[buffer.id]})")
                first_line[buffer.id] = reader.line_num
                buffers.append(buffer)
        except UnicodeDecodeError as err:
            raise CsvError(f"{path}: not UTF-8 text ({err.reason}, after line {reader.line_num})") from None
        except csv.Error as err:
            raise CsvError(f"{path}:{reader.line_num}: malformed CSV ({err})") from None
    return buffers


def _check_header(path: str | Path, header: list[str] | None) -> dict[str, int]:
    if not header:
        raise CsvError(f"{path}:1: empty file, expected a header {','.join(REQUIRED_COLUMNS)}")
    names = [name.strip() for name in header]
    for name in names:
        if name not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
            raise CsvError(f"{path}:1: unknown column {name!r}")
        if names.count(name) > 1:
            raise CsvError(f"{path}:1: column {name!r} appears twice")
    missing = [name for name in REQUIRED_COLUMNS if name not in names]
    if missing:
        raise CsvError(f"{path}:1: missing column(s) {', '.join(missing)}")
    return {name: i for i, name in enumerate(names)}


def _parse_row(where: str, row: list[str], columns: dict[str, int]) -> Buffer:
    if len(row) != len(columns):
        raise CsvError(f"{where}: expected {len(columns)} fields, got {len(row)}")
    buffer_id = row[columns["id"]].strip()
    if not buffer_id:
        raise CsvError(f"{where}: empty id")
    values = {name: _parse_int(where, name, row[columns[name]])
              for name in ("lower", "upper", "size", "alignment") if name in columns}
    lower, upper, size = values["lower"], values["upper"], values["size"]
    if lower < 0:
        raise CsvError(f"{where}: negative time lower={lower}")
    if upper <= lower:
        raise CsvError(f"{where}: empty or negative lifetime [{lower}, {upper})")
    if size < 0:
        raise CsvError(f"{where}: negative size {size}")
    alignment = values.get("alignment", 1)
    if alignment < 1:
        raise CsvError(f"{where}: alignment must be at least 1, got {alignment}")
    return Buffer(buffer_id, lower, upper, size, alignment)


def _parse_int(where: str, column: str, text: str) -> int:
    """An integer field: ASCII digits with an optional minus sign, within int64."""
    text = text.strip()
    shown = repr(text) if len(text) <= 40 else f"{text[:40]!r}... ({len(text):,} characters)"
    if not _INTEGER.fullmatch(text):
        raise CsvError(f"{where}: {column} {shown} is not an integer")
    value = int(text) if len(text) <= 20 else INT64_MAX + 1
    if not -INT64_MAX - 1 <= value <= INT64_MAX:
        raise CsvError(f"{where}: {column} {shown} is beyond int64")
    return value


_INTEGER = re.compile(r"-?[0-9]+")


def write_csv(path: str | Path, plan: Plan) -> None:
    """Writes ``id,lower,upper,size[,alignment],offset`` rows, one per buffer, in plan order."""
    with_alignment = any(b.alignment != 1 for b in plan.buffers)
    header = list(REQUIRED_COLUMNS) + (["alignment"] if with_alignment else []) + ["offset"]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(header)
        for b, offset in zip(plan.buffers, plan.offsets):
            row = [b.id, b.lower, b.upper, b.size] + ([b.alignment] if with_alignment else [])
            writer.writerow(row + [offset])


# --- command line: torch-tier plan -------------------------------------------

def summary(plan: Plan) -> str:
    """A few readable lines: buffers, peak against the lower bound, optimality, effort, time."""
    over = (plan.peak / plan.lower_bound - 1) * 100 if plan.lower_bound else 0.0
    if plan.optimal:
        optimal = "yes (proven)"
    elif plan.stats.search_skipped:
        optimal = "not proven (too many buffers for the exact search: the best greedy plan)"
    elif plan.stats.timed_out:
        optimal = "not proven (time limit reached)"
    elif plan.capacity is not None:
        optimal = "not proven (a plan within the capacity was the goal)"
    else:
        optimal = "not proven"
    capacity = f" within capacity {plan.capacity:,}" if plan.capacity is not None else ""
    s = plan.stats
    return "\n".join([
        f"buffers      {len(plan.buffers):,}",
        f"peak         {plan.peak:,}{capacity}",
        f"lower bound  {plan.lower_bound:,} (peak is {over:+.1f}%)",
        f"optimal      {optimal}",
        f"greedy peak  {s.greedy_peak:,} ({s.greedy_strategy or 'no buffers'})",
        f"search       {s.nodes:,} nodes, {s.probes} probe(s), {s.seconds:.3f} s",
    ])


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Registers the ``plan`` subcommand (its ``func`` runs it and returns an exit code)."""
    parser = subparsers.add_parser(
        "plan", help="plan buffer offsets in one arena (MiniMalloc's problem)",
        description=_DESCRIPTION)
    _add_arguments(parser)
    return parser


_DESCRIPTION = ("Plans an offset for every buffer of a CSV file (id,lower,upper,size; lifetimes "
                "are [lower, upper)): within --capacity, or of minimal peak.")


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="INPUT.csv", help="buffers, one per row")
    parser.add_argument("--capacity", type=int, metavar="N",
                        help="fit every buffer below N bytes (default: minimise the peak)")
    parser.add_argument("--out", metavar="OUT.csv",
                        help="write the plan here (with an offset column)")
    parser.add_argument("--time-limit", type=_seconds, default=DEFAULT_TIME_LIMIT, metavar="S",
                        help=f"seconds to search (default {DEFAULT_TIME_LIMIT:g}); the best "
                             "plan so far is returned when they run out")
    parser.set_defaults(func=run)


def _seconds(text: str) -> float:
    """--time-limit: a non-negative number of seconds (inf: as long as it takes)."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if math.isnan(seconds) or seconds < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative number of seconds, got {text!r}")
    return seconds


def run(args: argparse.Namespace) -> int:
    """Runs ``torch-tier plan`` from parsed arguments.

    Returns the exit code: 0 on success, 1 if there is no plan, 2 on bad input.
    """
    if args.out and Path(args.out).is_dir():  # found now, not after the search
        print(f"torch-tier plan: --out {args.out} is a directory, not a file", file=sys.stderr)
        return 2
    try:
        buffers = read_csv(args.input)
    except (CsvError, OSError) as e:
        print(f"torch-tier plan: {e}", file=sys.stderr)
        return 2
    try:
        plan = solve(buffers, capacity=args.capacity, time_limit=args.time_limit)
    except (NoPlanError, PlanError) as e:
        print(f"torch-tier plan: {e}", file=sys.stderr)
        return 1 if isinstance(e, NoPlanError) else 2
    if args.out:
        try:
            write_csv(args.out, plan)
        except OSError as e:
            print(f"torch-tier plan: cannot write --out {args.out}: {e.strerror}", file=sys.stderr)
            return 2
    print(summary(plan))
    return 0


def cli_main(argv: Sequence[str] | None = None) -> int:
    """``torch-tier plan`` on its own: parses ``argv`` (the arguments after ``plan``), runs it."""
    parser = argparse.ArgumentParser(prog="torch-tier plan", description=_DESCRIPTION)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    return args.func(args)
