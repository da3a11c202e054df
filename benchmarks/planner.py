"""The static memory planner on MiniMalloc's challenging inputs, next to MiniMalloc's own times.

Plans each of the eleven challenging inputs (A to K, 154 to 454 buffers) at
capacity 1,048,576 and prints a markdown table: the wall time of the whole
``torch-tier plan INPUT.csv --capacity 1048576`` process (Python's start, the
imports, reading the CSV, the solve and its validation; median of --repeats
fresh processes), the solve alone (``planner.solve`` in this process, median
too), whether it was solved, search nodes, the best greedy strategy's peak,
and MiniMalloc's reference time on this kind of machine (from the benchmark
README) with its ratio to the whole process. The table is also written to
``benchmarks/results/planner.md``. The exit code is 1 if any input's process
did not solve it within MiniMalloc's time.

With ``--traces`` it also minimises the peak of realistic inputs (solve time
only): every activation buffer of one captured BERT-base (seq 128) and
WideResNet-101-2 (224x224) inference, sizes rounded up to 64 bytes as the
planned arenas plan them.

Usage: python benchmarks/planner.py [--data DIR] [--repeats 3] [--time-limit 60] [--traces]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from torch_tier import planner

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "benchmarks" / "minimalloc"
RESULTS = REPO / "benchmarks" / "results" / "planner.md"
CAPACITY = 1_048_576

# MiniMalloc's own solver, default settings, on a 2-core machine of this kind
# (seconds; from the benchmark suite's README).
MINIMALLOC_SECONDS = {"A": 5.3, "B": 3.9, "C": 0.6, "D": 2.8, "E": 3.9, "F": 5.6, "G": 1.0,
                      "H": 1.7, "I": 3.9, "J": 1.0, "K": 0.7}


@dataclass(frozen=True)
class Row:
    name: str
    buffers: int
    capacity: int | None  # None: the peak was minimised
    solved: bool  # a plan within the capacity (or, minimising, a proven optimum)
    peak: int | None
    lower_bound: int
    solve_seconds: float  # median planner.solve in this process
    nodes: int
    greedy_peak: int
    process_seconds: float | None = None  # median whole `torch-tier plan` process, where timed
    reference_seconds: float | None = None  # MiniMalloc's time, where known


def bench(name: str, buffers: list[planner.Buffer], capacity: int | None = None,
          repeats: int = 3, time_limit: float = 60.0) -> Row:
    """Solves ``buffers`` ``repeats`` times in this process and summarises the runs as one row."""
    times, plan, failure = [], None, None
    for _ in range(repeats):
        start = time.perf_counter()
        try:
            plan = planner.solve(buffers, capacity=capacity, time_limit=time_limit)
        except planner.NoPlanError as e:
            failure = e
        times.append(time.perf_counter() - start)
    bound = planner.lower_bound(buffers)
    if failure is not None:
        return Row(name, len(buffers), capacity, False, None, bound, statistics.median(times), 0,
                   failure.greedy_peak)
    solved = capacity is not None or plan.optimal
    return Row(name, len(buffers), capacity, solved, plan.peak, bound, statistics.median(times),
               plan.stats.nodes, plan.stats.greedy_peak)


def process_seconds(path: Path, capacity: int, repeats: int, time_limit: float) -> float | None:
    """Median wall time of ``repeats`` fresh ``torch-tier plan`` processes; None if one finds no plan.

    Runs the command's module with this Python, as the ``torch-tier`` script does.
    """
    command = [sys.executable, "-m", "torch_tier.cli", "plan", str(path), "--capacity", str(capacity),
               "--time-limit", str(time_limit)]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            print(f"  {path.name}: exit {done.returncode}: {done.stderr.strip()}", file=sys.stderr)
            return None
    return statistics.median(times)


def challenging_rows(data: Path, repeats: int, time_limit: float) -> list[Row]:
    """One row per challenging input at capacity 1,048,576: solved here, then as a whole process."""
    rows = []
    for letter, reference in MINIMALLOC_SECONDS.items():
        path = data / f"{letter}.{CAPACITY}.csv"
        row = bench(letter, planner.read_csv(path), CAPACITY, repeats, time_limit)
        whole = process_seconds(path, CAPACITY, repeats, time_limit)
        rows.append(replace(row, process_seconds=whole, reference_seconds=reference))
        print(f"  {letter}: solve {row.solve_seconds:.3f} s, process "
              f"{_num(whole, 'failed', '{:.3f}')} s", file=sys.stderr, flush=True)
    return rows


def trace_rows(repeats: int, time_limit: float) -> list[Row]:
    """Minimise the arena of each captured model's activation buffers."""
    from torch_tier import _C, arenas, tiers, zoo  # torch: only the traces need it
    from torch_tier.graph_capture import capture

    rows = []
    for name, size in (("bert-base", {"seq_len": 128}), ("wide_resnet101_2", {})):
        work = zoo.build(name, **size)
        graph = capture(work.model, work.inputs, repeats=1)
        buffers = arenas.planner_buffers(graph.buffers, _C.tier_alignment(tiers.DRAM))
        rows.append(bench(f"{name} trace", buffers, repeats=repeats, time_limit=time_limit))
        print(f"  {name}: {len(buffers)} buffers planned", file=sys.stderr, flush=True)
    return rows


def markdown_table(rows: list[Row]) -> list[str]:
    """The rows as a markdown table; greedy peaks shown against the capacity (or lower bound)."""
    lines = ["| input | buffers | capacity | solved | peak | lower bound | `torch-tier plan` (s) | "
             "solve (s) | MiniMalloc (s) | MiniMalloc / process | nodes | best greedy peak |",
             "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        target = r.capacity if r.capacity is not None else r.lower_bound
        over = f" (+{(r.greedy_peak / target - 1) * 100:.0f}%)" if target else ""
        ratio = (f"{r.reference_seconds / r.process_seconds:.1f}x"
                 if r.reference_seconds and r.process_seconds else "-")
        lines.append(
            f"| {r.name} | {r.buffers:,} | {_num(r.capacity, 'minimise')} | "
            f"{'yes' if r.solved else 'no'} | {_num(r.peak, '-')} | {r.lower_bound:,} | "
            f"{_num(r.process_seconds, '-', '{:.3f}')} | {r.solve_seconds:.3f} | "
            f"{_num(r.reference_seconds, '-')} | {ratio} | {r.nodes:,} | {r.greedy_peak:,}{over} |")
    return lines


def _num(value: float | None, missing: str, float_format: str = "{:.1f}") -> str:
    if value is None:
        return missing
    return f"{value:,}" if isinstance(value, int) else float_format.format(value)


def within_reference(rows: list[Row]) -> bool:
    """Whether every row with a MiniMalloc time was solved by a whole process within it."""
    return all(r.solved and r.process_seconds is not None and r.process_seconds <= r.reference_seconds
               for r in rows if r.reference_seconds is not None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help=f"directory of the benchmark CSV files (default {DEFAULT_DATA})")
    parser.add_argument("--repeats", type=int, default=3, help="runs per input (median reported)")
    parser.add_argument("--time-limit", type=float, default=60.0, metavar="S")
    parser.add_argument("--traces", action="store_true", help="also plan captured BERT-base and WRN-101-2 traces")
    args = parser.parse_args(argv)
    rows = challenging_rows(args.data, args.repeats, args.time_limit)
    ok = within_reference(rows)
    if args.traces:
        rows += trace_rows(args.repeats, args.time_limit)
    lines = [f"Static planner, MiniMalloc's challenging inputs at capacity {CAPACITY:,} "
             f"({os.cpu_count()} cores, median of {args.repeats} runs, "
             f"{time.strftime('%Y-%m-%d')}). `torch-tier plan` is the wall time of the whole "
             "process (Python's start, imports, CSV, solve, validation); solve is "
             "`planner.solve` alone.", "", *markdown_table(rows), "",
             f"Every input solved by the whole process within MiniMalloc's time: {'yes' if ok else 'NO'}."]
    text = "\n".join(lines)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(text + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
