"""Recorded allocation traces of real models, replayed under the arena's fit rules."""

import torch

from torch_tier import _C, trace
from torch_tier.fit.trace import load_trace, peak_live_bytes, save_trace


def test_trace_of_inference_passes(cnn, tmp_path):
    model, x = cnn
    events = trace.trace(model, x, passes=3)
    allocs = [e for e in events if e.op == "alloc"]
    assert len(allocs) % 3 == 0 and {e.tier for e in allocs} == {"pm"}
    frees = {e.id for e in events if e.op == "free"}
    assert frees <= {e.id for e in allocs}
    save_trace(tmp_path / "t.csv", events)
    assert load_trace(tmp_path / "t.csv") == events


def test_trace_of_a_training_step(cnn):
    model, x = cnn
    model.train()
    events = trace.trace(model, x, passes=1, train_step=True)
    inference = trace.trace(model.eval(), x, passes=1)
    assert peak_live_bytes(events) > peak_live_bytes(inference)  # gradients and saved activations
    assert all(p.grad is None for p in model.parameters())


def test_replay_under_each_fit(bert):
    model, x = bert
    events = trace.trace(model, x, passes=2)
    peak = peak_live_bytes(events)
    roomy = {fit: trace.replay(events, 64 * peak, fit) for fit in ("first", "best", "worst", "next")}
    # every block carries a 64-byte tag in the arena, so the high water can pass the payload peak
    assert all(r["first_failure"] == -1 and r["high_water"] >= peak for r in roomy.values())
    tight = trace.replay(events, peak // 2, "first")
    assert tight["first_failure"] >= 0
    assert tight["high_water"] <= peak // 2 + 64


def test_replay_ignores_frees_from_before_the_trace():
    from torch_tier.fit.trace import TraceEvent

    events = [TraceEvent("free", 99), TraceEvent("alloc", 1, 1000, "pm"), TraceEvent("free", 1)]
    assert trace.replay(events, 1 << 20, "best")["first_failure"] == -1
    assert _C.replay_arena(1 << 20, "worst", [(False, 1, 4096)])["high_water"] >= 4096
