"""The static memory planner: optimal vs brute force, valid on random inputs, clear CSV errors,
and a `torch-tier plan` that never imports torch."""

import argparse
import importlib
import random
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from torch_tier import cli, planner
from torch_tier.planner import Buffer, CsvError, NoPlanError, PlanError

# MiniMalloc's small example (benchmarks/examples/input.12.csv): fits exactly in 12.
EXAMPLE_12 = "id,lower,upper,size\nb1,0,3,4\nb2,3,9,4\nb3,0,9,4\nb4,9,21,4\nb5,0,21,4\n"


def random_buffers(rng: random.Random, n: int, horizon: int, max_size: int,
                   alignments: tuple[int, ...] = (1,)) -> list[Buffer]:
    buffers = []
    for i in range(n):
        lower = rng.randrange(horizon)
        upper = rng.randrange(lower + 1, horizon + 1)
        buffers.append(Buffer(i, lower, upper, rng.randint(1, max_size), rng.choice(alignments)))
    return buffers


def brute_force_peak(buffers: list[Buffer]) -> int:
    """The minimal peak, by trying every aligned offset of every buffer at each capacity."""
    meets = [[j for j in range(i) if buffers[j].lower < b.upper and b.lower < buffers[j].upper]
             for i, b in enumerate(buffers)]

    def fits(capacity: int) -> bool:
        offsets = [0] * len(buffers)

        def place(i: int) -> bool:
            if i == len(buffers):
                return True
            b = buffers[i]
            for offset in range(0, capacity - b.size + 1, b.alignment):
                if all(offset + b.size <= offsets[j] or offsets[j] + buffers[j].size <= offset
                       for j in meets[i]):
                    offsets[i] = offset
                    if place(i + 1):
                        return True
            return False

        return place(0)

    capacity = planner.lower_bound(buffers)
    while not fits(capacity):
        capacity += 1
    return capacity


def test_example_fits_its_capacity(tmp_path):
    path = tmp_path / "input.12.csv"
    path.write_text(EXAMPLE_12)
    buffers = planner.read_csv(path)
    plan = planner.solve(buffers, capacity=12)
    assert plan.peak == 12 and plan.optimal
    assert planner.solve(buffers).peak == 12
    with pytest.raises(NoPlanError) as failure:
        planner.solve(buffers, capacity=11)
    assert failure.value.proven


@pytest.mark.parametrize("seed", range(8))
def test_minimal_peak_matches_brute_force(seed):
    rng = random.Random(seed)
    for _ in range(25):
        buffers = random_buffers(rng, rng.randint(1, 6), horizon=8, max_size=4,
                                 alignments=(1, 1, 2, 3))
        best = brute_force_peak(buffers)
        plan = planner.solve(buffers, time_limit=5)
        assert (plan.peak, plan.optimal) == (best, True), buffers
        assert planner.solve(buffers, capacity=best).peak <= best
        with pytest.raises(NoPlanError) as failure:
            planner.solve(buffers, capacity=best - 1, time_limit=5)
        assert failure.value.proven, buffers


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(1, 12), st.integers(1, 64),
                          st.sampled_from([1, 1, 2, 8])), max_size=40))
def test_plans_are_valid_and_bounded(rows):
    buffers = [Buffer(f"t{i}", lower, lower + length, size, alignment)
               for i, (lower, length, size, alignment) in enumerate(rows)]
    plan = planner.solve(buffers, time_limit=0.5)  # solve() validates before returning
    assert plan.lower_bound <= plan.peak <= plan.stats.greedy_peak
    assert planner.solve(buffers, capacity=plan.peak, time_limit=0.5).peak <= plan.peak
    if plan.optimal and plan.peak > 0:
        with pytest.raises(NoPlanError):
            planner.solve(buffers, capacity=plan.peak - 1, time_limit=5)


def test_time_limit_returns_the_greedy_plan_unproven():
    buffers = random_buffers(random.Random(0), 20, horizon=20, max_size=100)
    plan = planner.solve(buffers, time_limit=0)
    assert plan.stats.greedy_peak > plan.lower_bound  # so there was something to prove
    assert plan.peak == plan.stats.greedy_peak
    assert plan.stats.timed_out and not plan.optimal


def test_solver_releases_the_gil():
    # Sizes that are not multiples of the alignment: hard to prove optimal, so it runs to the limit.
    buffers = random_buffers(random.Random(0), 30, horizon=20, max_size=200, alignments=(4,))
    result = {}
    solver = threading.Thread(
        target=lambda: result.update(plan=planner.solve(buffers, time_limit=0.4)))
    ticks = [time.perf_counter()]
    solver.start()
    while solver.is_alive():
        time.sleep(0.001)
        ticks.append(time.perf_counter())
    seconds = result["plan"].stats.seconds
    assert seconds > 0.3
    assert max(b - a for a, b in zip(ticks, ticks[1:])) < seconds / 2


def test_zero_sized_buffers_take_no_space():
    buffers = [Buffer("a", 0, 4, 0), Buffer("b", 0, 4, 8), Buffer("c", 2, 6, 0)]
    plan = planner.solve(buffers)
    assert plan.peak == 8 and plan.offsets_by_id()["a"] == 0


def test_validate_rejects_overlapping_buffers():
    buffers = [Buffer("a", 0, 4, 8), Buffer("b", 3, 6, 8)]
    plan = planner.solve(buffers)
    assert plan.peak == 16
    clash = planner.Plan(plan.buffers, (0, 4), 12, plan.lower_bound, False, None, plan.stats)
    with pytest.raises(PlanError, match="overlap in memory"):
        planner.validate(clash)


@pytest.mark.parametrize("buffers, message", [
    ([Buffer("a", 3, 3, 1)], "empty or negative lifetime"),
    ([Buffer("a", 0, 3, -1)], "negative size"),
    ([Buffer("a", 0, 3, 1), Buffer("a", 1, 2, 1)], "duplicate buffer id"),
    ([Buffer("a", 0, 3, 1, 0)], "alignment"),
    ([Buffer("a", 0, 3.5, 1)], "integer"),
])
def test_bad_buffers_are_rejected(buffers, message):
    with pytest.raises(PlanError, match=message):
        planner.solve(buffers)


def test_csv_round_trip(tmp_path):
    buffers = random_buffers(random.Random(1), 30, horizon=20, max_size=50, alignments=(1, 4))
    plan = planner.solve(buffers, time_limit=0.1)
    path = tmp_path / "plan.csv"
    planner.write_csv(path, plan)
    assert path.read_text().splitlines()[0] == "id,lower,upper,size,alignment,offset"
    again = planner.read_csv(path)
    assert [(b.lower, b.upper, b.size, b.alignment) for b in again] == \
           [(b.lower, b.upper, b.size, b.alignment) for b in buffers]
    offsets = [int(line.rsplit(",", 1)[1]) for line in path.read_text().splitlines()[1:]]
    assert tuple(offsets) == plan.offsets


@pytest.mark.parametrize("text, message", [
    ("", ":1: empty file"),
    ("id,lower,size\n", ":1: missing column(s) upper"),
    ("id,lower,upper,size,colour\n", ":1: unknown column 'colour'"),
    ("id,lower,upper,size\na,0,2,1\nb,0,2\n", ":3: expected 4 fields, got 3"),
    ("id,lower,upper,size\na,0,2,1\nb,0,x,1\n", ":3: upper 'x' is not an integer"),
    ("id,lower,upper,size\na,0,2,1.5\n", ":2: size '1.5' is not an integer"),
    ("id,lower,upper,size\na,5,2,1\n", ":2: empty or negative lifetime [5, 2)"),
    ("id,lower,upper,size\na,2,2,1\n", ":2: empty or negative lifetime [2, 2)"),
    ("id,lower,upper,size\na,-1,2,1\n", ":2: negative time"),
    ("id,lower,upper,size\na,0,2,-4\n", ":2: negative size -4"),
    ("id,lower,upper,size\na,0,2,1\n\nb,1,3,1\na,4,5,1\n",
     ":5: duplicate id 'a' (first on line 2)"),
    ("id,lower,upper,size\n,0,2,1\n", ":2: empty id"),
])
def test_csv_errors_name_the_line(tmp_path, text, message):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(CsvError) as failure:
        planner.read_csv(path)
    assert f"{path}{message}" in str(failure.value)


def test_cli_plans_and_writes(tmp_path, capsys):
    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text(EXAMPLE_12)
    assert planner.cli_main([str(source), "--capacity", "12", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "peak         12" in printed and "optimal      yes" in printed
    rows = out.read_text().splitlines()
    assert rows[0] == "id,lower,upper,size,offset" and len(rows) == 6


def test_cli_reports_errors(tmp_path, capsys):
    source = tmp_path / "in.csv"
    source.write_text(EXAMPLE_12)
    assert planner.cli_main([str(source), "--capacity", "11"]) == 1
    assert "no plan fits capacity 11" in capsys.readouterr().err
    source.write_text("id,lower,upper\n")
    assert planner.cli_main([str(source)]) == 2
    assert ":1: missing column(s) size" in capsys.readouterr().err


def test_add_parser_registers_plan():
    parser = argparse.ArgumentParser(prog="torch-tier")
    planner.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["plan", "x.csv", "--time-limit", "2.5"])
    assert args.func is planner.run and args.time_limit == 2.5 and args.capacity is None


def test_plan_command_imports_no_torch(tmp_path):
    # The planner, its extension and the CLI's way to them: torch costs seconds to import.
    source = tmp_path / "in.csv"
    source.write_text(EXAMPLE_12)
    code = ("import sys, torch_tier.planner, torch_tier._planner\n"
            "from torch_tier import cli\n"
            f"assert cli.main(['plan', {str(source)!r}]) == 0\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_cli_table_names_what_each_module_registers():
    # `torch-tier --help` lists the table; each module registers its subcommands only once chosen.
    registered = {}
    for path in dict.fromkeys(path for _, path, _ in cli.COMMANDS):
        subparsers = argparse.ArgumentParser().add_subparsers()
        importlib.import_module(path).add_parser(subparsers)
        registered.update({action.dest: (path, action.help) for action in subparsers._choices_actions})
    assert registered == {name: (path, help_line) for name, path, help_line in cli.COMMANDS}


def test_the_time_limit_bounds_sweep_and_greedy_on_a_large_input(tmp_path, capsys):
    """The greedy plans and the sweep before them ignored --time-limit (282 s on 100,001
    buffers): now they stop at it, with the greedy plans finished by then or, if none, every
    buffer stacked, still a valid plan."""
    rng = np.random.default_rng(0)
    n = 20_000
    lower = rng.integers(0, n, n)
    upper = lower + rng.integers(1, 2_000, n)  # about 4,000 buffers meet each one
    sizes = rng.integers(1, 1_000, n)
    path = tmp_path / "big.csv"
    path.write_text("id,lower,upper,size\n" + "".join(f"{i},{lo},{hi},{s}\n"
                                                     for i, (lo, hi, s) in enumerate(zip(lower, upper, sizes))))
    start = time.perf_counter()
    assert planner.cli_main([str(path), "--time-limit", "0.5"]) == 0
    assert time.perf_counter() - start < 15  # reading and checking the plan take their share; before: 27 s
    assert "stacked" in capsys.readouterr().out
    plan = planner.solve(planner.read_csv(path)[:3_000], time_limit=0.5)  # the sweep ends: greedy plans
    assert "fit by" in plan.stats.greedy_strategy and plan.stats.seconds < 5
