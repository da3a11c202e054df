"""`torch-tier plan` and `torch-tier fit` on bad input: a one-line error naming the file, field or
flag and exit code 2, never a traceback (issue 12, part C)."""

import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torch_tier import planner
from torch_tier.fit import cli as fit_cli
from torch_tier.planner import Buffer, CsvError, Plan, PlanError, SearchStats

HEADER = "id,lower,upper,size\n"


def _plan(capsys, tmp_path, text: str | bytes, *flags: str) -> tuple[int, str]:
    """Run `torch-tier plan` on a file holding `text`; its exit code and stderr."""
    path = tmp_path / "in.csv"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    try:
        code = planner.cli_main([str(path), *flags])
    except SystemExit as exit_:  # argparse's errors
        code = exit_.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("text, message", [
    (bytes(range(256)) * 8, "in.csv: not UTF-8 text"),
    (HEADER + "a,0,1,99999999999999999999999\n", "in.csv:2: size '99999999999999999999999' is beyond int64"),
    (HEADER + "a,0,1," + "9" * 5000 + "\n", "is beyond int64"),
    (HEADER + "a,0,1,١٢\n", "size '١٢' is not an integer"),
    (HEADER + "x" * ((128 << 10) + 1) + ",0,1,5\n", "in.csv:2: malformed CSV (field larger than field limit"),
    (HEADER + "a,0,1\x00,5\n", "in.csv:2: upper '1\\x00' is not an integer"),
    (HEADER + "a,0,2,9223372036854775000\nb,0,2,9223372036854775000\n", "add up to 18,446,744,073,709,550,000"),
])
def test_plan_rejects_bad_input_with_the_file_and_field(capsys, tmp_path, text, message):
    code, err = _plan(capsys, tmp_path, text)
    assert code == 2 and message in err and "Traceback" not in err and err.count("\n") == 1


def test_plan_refuses_an_out_directory_before_solving(capsys, tmp_path):
    (tmp_path / "dir").mkdir()
    code, err = _plan(capsys, tmp_path, HEADER + "a,0,1,8\n", "--out", str(tmp_path / "dir"))
    assert code == 2 and "is a directory" in err


@pytest.mark.parametrize("value", ["nan", "-1", "soon"])
def test_plan_refuses_a_time_limit_that_is_not_a_duration(capsys, tmp_path, value):
    code, err = _plan(capsys, tmp_path, HEADER + "a,0,1,8\n", "--time-limit", value)
    assert code == 2 and "--time-limit" in err and "seconds" in err


def test_solve_refuses_overflowing_sizes_capacities_and_time_limits():
    big = Buffer("a", 0, 1, 2**62)
    with pytest.raises(PlanError, match="beyond int64"):
        planner.solve([big, Buffer("b", 0, 1, 2**62)])
    with pytest.raises(PlanError, match="capacity"):
        planner.solve([big], capacity=2**64)
    with pytest.raises(PlanError, match="time limit"):
        planner.solve([big], time_limit=float("nan"))
    assert planner.solve([big], time_limit=float("inf")).peak == 2**62  # inf: the solver's own cap


def test_summary_of_a_greedy_only_plan_mentions_no_capacity():
    """A million buffers skip the exact search (greedy only); the summary said 'a plan within the
    capacity was the goal' when no capacity was given."""
    buffers = (Buffer("a", 0, 1, 8),)
    stats = SearchStats(nodes=0, backtracks=0, probes=0, greedy_peak=8, greedy_strategy="first-fit by size",
                        timed_out=False, search_skipped=True, seconds=1.0)
    text = planner.summary(Plan(buffers, (0,), 16, 8, False, None, stats))
    assert "capacity" not in text and "too many buffers for the exact search" in text


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=400) | st.text(alphabet="id,lowerupsz0123456789-\n\r\" \x00é", max_size=200)
       .map(lambda t: (HEADER + t).encode()))
def test_fuzz_plan_reader_rejects_with_the_file_or_reads(data):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "fuzz.csv")
        with open(path, "wb") as f:
            f.write(data)
        try:
            buffers = planner.read_csv(path)
        except CsvError as err:
            assert str(err).startswith(path) and "\n" not in str(err).rstrip()
            return
        planner.solve(buffers, time_limit=0.05)  # what it read, the solver takes


# --- torch-tier fit --------------------------------------------------------------------------


def _fit(capsys, *argv: str) -> tuple[int, str]:
    try:
        code = fit_cli.main(list(argv))
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--generator", "trace:/nonexistent/t.json"], "cannot read the trace (No such file or directory)"),
    (["--generator", "bogus"], "unknown generator 'bogus'"),
    (["--page-size", "0"], "argument --page-size: must be at least 10, got 0"),
    (["--runs", "0"], "argument --runs: must be at least 1, got 0"),
    (["--episodes", "0"], "argument --episodes: must be at least 1"),
    (["--history", "-1"], "argument --history: must be at least 0"),
])
def test_fit_rejects_bad_input_cleanly(capsys, argv, message):
    code, err = _fit(capsys, "--agent", "none", *argv)
    assert code == 2 and message in err and "Traceback" not in err


def test_fit_rejects_a_malformed_trace(capsys, tmp_path):
    trace = tmp_path / "t.json"
    trace.write_text('{"version": 1, "events": [{"id": 0, "size": 8}]}')
    code, err = _fit(capsys, "--agent", "none", "--generator", f"trace:{trace}")
    assert code == 2 and "a trace event lacks field 'op'" in err
