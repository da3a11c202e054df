"""Recorded allocation traces of real models, replayed under the arena's fit rules."""

import gc

from torch_tier import _C, tiers, trace
from torch_tier.fit.trace import TraceEvent, load_trace, peak_live_bytes, save_trace


def test_trace_of_inference_passes(cnn, tmp_path):
    model, x = cnn
    gc.collect()  # garbage of earlier tests is freed now, not during the trace
    tiers.reset_peaks()
    live_before = tiers.stats()["pm"]["live_bytes"]
    events = trace.trace(model, x, passes=3)
    allocs = [e for e in events if e.op == "alloc"]
    assert len(allocs) % 3 == 0 and {e.tier for e in allocs} == {"pm"}
    # the allocator's own pm counter peaked where the trace does: every allocation and free, with its size
    assert tiers.stats()["pm"]["peak_bytes"] == live_before + peak_live_bytes(events)
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


def first_overflow(events: list[TraceEvent], capacity: int) -> int:
    """The index of the first allocation whose block would take the arena's live
    blocks (each as the arena holds it: rounded up to whole 256-byte cells) past
    `capacity`: no fit can serve it if all before it were served."""
    live: dict[int, int] = {}
    for index, e in enumerate(events):
        if e.op == "alloc":
            live[e.id] = _C.arena_block_bytes(e.size)
            if sum(live.values()) > capacity:
                return index
        else:
            live.pop(e.id, None)
    raise ValueError("the trace fits in the capacity")


def test_replay_under_each_fit(bert):
    model, x = bert
    events = trace.trace(model, x, passes=2)
    peak = peak_live_bytes(events)
    roomy = {fit: trace.replay(events, 64 * peak, fit) for fit in ("first", "best", "worst", "next")}
    # blocks are whole 256-byte cells in the arena, so the high water can pass the payload peak
    assert all(r["first_failure"] == -1 and r["high_water"] >= peak for r in roomy.values())
    tight = trace.replay(events, peak // 2, "first")
    assert 0 <= tight["first_failure"] <= first_overflow(events, peak // 2)


def test_replay_ignores_frees_from_before_the_trace():
    events = [TraceEvent("free", 99), TraceEvent("alloc", 1, 1000, "pm"), TraceEvent("free", 1)]
    assert trace.replay(events, 1 << 20, "best")["first_failure"] == -1
    assert _C.replay_arena(1 << 20, "worst", [(False, 1, 4096)])["high_water"] >= 4096
