"""The C++ allocator: tiers, stats, frees after disable, leaks."""

import gc

import psutil
import torch

import torch_tier as tt
from torch_tier import _C, tiers


def test_free_after_disable_goes_back_to_its_tier():
    tiers.activate(tiers.parse_pm("sim"), "fallback")
    _C.set_tier(tiers.PM)
    try:
        kept = torch.empty(1 << 20)
    finally:
        _C.set_tier(tiers.DRAM)
        tiers.deactivate()
    live = tt.stats()["pm"]["live_bytes"]
    assert tt.tier_of(kept) == "pm"
    del kept
    assert tt.stats()["pm"]["live_bytes"] == live - (4 << 20)


def test_peak_and_reset():
    tiers.activate(tiers.parse_pm("sim"), "fallback")
    try:
        tt.reset_peaks()
        base = tt.stats()["dram"]["live_bytes"]
        big = torch.empty(8 << 20, dtype=torch.uint8)
        del big
        assert tt.stats()["dram"]["peak_bytes"] >= base + (8 << 20)
        tt.reset_peaks()
        assert tt.stats()["dram"]["peak_bytes"] == tt.stats()["dram"]["live_bytes"]
    finally:
        tiers.deactivate()


def test_zero_sized_and_views():
    tiers.activate(tiers.parse_pm("sim"), "fallback")
    try:
        empty = torch.empty(0)
        base = torch.arange(100.0)
        view = base[10:20]
        assert tt.tier_of(view) == "dram" and empty.numel() == 0
    finally:
        tiers.deactivate()


def _rss() -> int:
    gc.collect()
    return psutil.Process().memory_info().rss


def test_no_growth_over_many_sessions_and_forwards():
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256))
    x = torch.randn(8, 256)
    policy = tt.Policy.uniform(model, "pm", "pm")
    with torch.no_grad():
        for _ in range(20):  # warm up allocator caches before the baseline
            with tt.enable(policy, model, pm="sim"):
                model(x)
        start = _rss()
        for _ in range(1000):
            with tt.enable(policy, model, pm="sim"):
                model(x)
        after_cycles = _rss()
        with tt.enable(policy, model, pm="sim"):
            for _ in range(10_000):
                model(x)
        after_forwards = _rss()
    assert after_cycles - start < 16 << 20, (start, after_cycles)
    assert after_forwards - start < 16 << 20, (start, after_forwards)
    stats = tt.stats()
    assert stats["pm"]["live_bytes"] == 0 and stats["dram"]["live_bytes"] == 0
