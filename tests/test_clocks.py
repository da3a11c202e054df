"""Clocks: 'cpu' times the thread's own work, so time the scheduler gives to others is not in it."""

import time

import pytest
import torch

import torch_tier as tt
from torch_tier import clocks
from torch_tier.trainer.config import TrainConfig
from torch_tier.trainer.workers import TO_WORKER, Job, WireError, check_message


class Sleeper(torch.nn.Module):
    """A layer that is off the CPU for `seconds` per call, as a descheduled thread is."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.linear = torch.nn.Linear(64, 64)

    def forward(self, x):
        time.sleep(self.seconds)
        return self.linear(x)


def test_cpu_clock_leaves_out_time_off_the_cpu(one_thread):
    model, x = Sleeper(0.02).eval(), torch.randn(4, 64)
    policy = tt.Policy.uniform(model)
    wall = tt.measure(model, x, policy, pm="sim", repeats=3, warmup=1, clock="wall")
    cpu = tt.measure(model, x, policy, pm="sim", repeats=3, warmup=1, clock="cpu")
    assert wall.median >= 0.02
    assert cpu.median < 0.01


def test_the_emulated_delay_is_spun_in_cpu_time(one_thread, registered):
    """The device's extra counts on the cpu clock (a stalled core is busy), sleeps do not."""
    model, x = Sleeper(0.02).eval(), torch.randn(4, 64)
    tt.register_device("slow-linear", lambda traffic: 20e-3 if traffic.in_tier("pm") else 0.0)
    policy = tt.Policy.uniform(model)
    plain = tt.measure(model, x, policy, pm="sim:slow-linear", repeats=5, warmup=1, clock="cpu")
    policy.nodes["linear"] = tt.Placement("pm", "pm")
    slow = tt.measure(model, x, policy, pm="sim:slow-linear", repeats=5, warmup=1, clock="cpu")
    assert 16e-3 <= slow.median - plain.median < 30e-3  # the 20 ms, give or take the layer's own noise


def test_capture_says_which_clock_it_read(one_thread, cnn):
    model, x = cnn
    graph = tt.capture(model, x, repeats=3, max_repeats=3, clock="cpu")
    assert graph.metadata["timing"]["clock"] == "cpu"
    assert clocks.current() == "wall"  # restored after


def test_cpu_clock_needs_one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(ValueError, match="set_num_threads"):
            with clocks.use("cpu"):
                pass
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(ValueError, match="unknown clock 'sundial'"):
        with clocks.use("sundial"):
            pass
    with pytest.raises(ValueError, match="clock must be one of"):
        TrainConfig(clock="sundial")


def test_the_job_carries_the_clock_to_workers(cnn):
    model, x = cnn
    job = Job.of(model, (x,), "cnn", ["0"], "sim", 0, clock="cpu")
    body = job.body("0" * 32, "1" * 32)
    assert check_message(body, TO_WORKER)["clock"] == "cpu"
    with pytest.raises(WireError, match="clock"):
        check_message({**body, "clock": "sundial"}, TO_WORKER)


def test_the_cli_times_on_the_clock_it_is_given(capsys, tmp_path):
    from torch_tier.cli import main

    threads = torch.get_num_threads()
    try:
        assert main(["profile", "dlrm", "--size", "rows=0.001", "--threads", "2", "--clock", "cpu"]) != 0
        assert "set_num_threads" in capsys.readouterr().err
        out = tmp_path / "graph.json"
        assert main(["profile", "dlrm", "--size", "rows=0.001", "--threads", "1", "--clock", "cpu",
                     "--capture-repeats", "2", "--out", str(out)]) == 0
        assert tt.TierGraph.load(out).metadata["timing"]["clock"] == "cpu"
    finally:
        torch.set_num_threads(threads)
