"""Stress: four threads run inference, their tier set to pm, while another thread enables and
closes sessions (sim tiers that fill to capacity, with fallbacks and with on_full="error", and
memkind). The workers run transformers (no oneDNN ops: oneDNN frees its scratch buffers with
whatever CPU allocator is registered when it frees them, so no allocator swap, torch-tier's or
any other, is safe while another thread is inside a convolution; see README, Limits).
Allocations race with enable() and close(): each must be served by a live backend
(the session's, or DRAM) and freed to it, outputs must stay bit-identical, and when all is freed
every backend but DRAM is gone and the pm tier holds nothing. With on_full="error" the workers
may fill pm before enable() has placed the owner's weights: enable() then raises
torch.OutOfMemoryError and leaves nothing behind, which the final check sees.

The quick run is in the default set; the long one (-m slow) is what the AddressSanitizer and
ThreadSanitizer builds run (README: Building with sanitizers).
"""

from __future__ import annotations

import gc
import threading
import time

import pytest
import torch

import torch_tier as tt
from torch_tier import _C, memkind, tiers

from conftest import small_bert


def _specs() -> list[tuple[str, str]]:
    specs = [("sim", "fallback"), ("sim", "error")]
    if memkind.available():
        specs.append(("memkind:/dev/shm", "fallback"))
    return specs


def stress(seconds: float, workers: int = 4) -> dict[str, int]:
    models = [small_bert() for _ in range(workers)]
    with torch.no_grad():
        expected = [model(x).last_hidden_state for model, x in models]
    owner = torch.nn.Linear(64, 64)  # the enabling thread's own model: sessions move its weights, not the workers'
    owner_weights = [p.detach().clone() for p in owner.parameters()]
    stop = threading.Event()
    errors: list[BaseException] = []
    counts = {"forwards": 0, "out_of_memory": 0, "sessions": 0, "refused": 0}
    lock = threading.Lock()

    def work(index: int) -> None:
        model, x = models[index]
        _C.set_tier(tiers.PM)  # pm while a session is on, else whatever allocator c10 has
        try:
            while not stop.is_set():
                try:
                    with torch.no_grad():
                        out = model(x).last_hidden_state
                except torch.OutOfMemoryError:
                    with lock:
                        counts["out_of_memory"] += 1
                    continue
                if not torch.equal(out, expected[index]):
                    raise AssertionError(f"worker {index}: output differs")
                with lock:
                    counts["forwards"] += 1
        except BaseException as err:  # reported by the main thread
            errors.append(err)
        finally:
            _C.set_tier(tiers.DRAM)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    specs, deadline = _specs(), time.monotonic() + seconds
    try:
        while time.monotonic() < deadline and not errors:
            pm, on_full = specs[counts["sessions"] % len(specs)]
            capacity = "16MiB" if pm.startswith("memkind") else 256 << 10  # fills: a worker's forward needs ~300 KiB
            try:
                with tt.enable(tt.Policy.uniform(owner, "pm", "pm"), owner, pm=pm, pm_capacity=capacity,
                               on_full=on_full):
                    time.sleep(0.005)
            except torch.OutOfMemoryError:
                if on_full != "error":
                    raise
                counts["refused"] += 1  # the workers filled pm before the owner's weights got there
            counts["sessions"] += 1
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    for p, before in zip(owner.parameters(), owner_weights):  # back from every session, refused ones too
        assert torch.equal(p, before) and _C.tier_of(p) != tiers.PM
    return counts


def live_memory() -> tuple[int, int]:
    """pm's live bytes and the live backends, once garbage in reference cycles is collected
    (a block held only by a cycle, from this test or an earlier one, is no leak)."""
    gc.collect()
    return tt.stats()["pm"]["live_bytes"], _C.live_backends()


@pytest.mark.parametrize("seconds", [pytest.param(8.0, id="quick"),
                                     pytest.param(120.0, id="long", marks=pytest.mark.slow)])
def test_inference_while_sessions_come_and_go(seconds):
    before = live_memory()
    full_before = tt.stats()["pm"]["fallbacks"] + tt.stats()["pm"]["failures"]
    counts = stress(seconds)
    assert counts["sessions"] >= 10 and counts["forwards"] >= 10, counts
    assert tt.stats()["pm"]["fallbacks"] + tt.stats()["pm"]["failures"] > full_before  # pm filled up
    assert live_memory() == before
