"""The C++ allocator: tiers, stats, frees after disable, leaks."""

import gc
import resource

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
        before = tt.stats()["dram"]["allocations"]
        empty = torch.empty(0)
        assert tt.tier_of(empty) is None  # PyTorch allocates nothing for no bytes: not ours
        base = torch.arange(100.0)
        assert tt.stats()["dram"]["allocations"] == before + 1
        view = base[10:20]
        assert tt.tier_of(view) == "dram" and tt.stats()["dram"]["allocations"] == before + 1
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


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def test_dram_forwards_reuse_their_pages(cnn, one_thread):
    """Plain PyTorch page-faults a CNN's megabyte activations in afresh on every
    forward (glibc unmaps them on free); the DRAM tier keeps them."""
    model, _ = cnn
    x = torch.randn(8, 3, 64, 64)  # activations of 2 MiB: above glibc's mmap threshold
    with torch.no_grad():
        model(x)
        before = _minor_faults()
        for _ in range(5):
            model(x)
        plain = (_minor_faults() - before) / 5
        with tt.enable(tt.Policy.uniform(model), model, pm="sim"):
            model(x)
            before = _minor_faults()
            for _ in range(5):
                model(x)
            tiered = (_minor_faults() - before) / 5
            assert tt.stats()["dram"]["cached_bytes"] >= 2 << 20
    assert tt.stats()["dram"]["cached_bytes"] == 0  # closing returns the cache
    assert tiered < 20, f"{tiered} page faults per forward under torch-tier (plain PyTorch: {plain})"


def test_dram_cache_reuses_by_size_within_its_capacity():
    tiers.activate(tiers.parse_pm("sim"), "fallback")
    try:
        block = torch.empty(1 << 20, dtype=torch.uint8)
        address = block.data_ptr()
        del block
        assert tt.stats()["dram"]["cached_bytes"] >= 1 << 20
        assert torch.empty(1 << 20, dtype=torch.uint8).data_ptr() == address  # same size: same block
        _C.set_dram_cache_capacity(1 << 20)
        blocks = [torch.empty(600 << 10, dtype=torch.uint8) for _ in range(3)]
        del blocks
        assert tt.stats()["dram"]["cached_bytes"] <= 1 << 20
        small = torch.empty(1 << 10, dtype=torch.uint8)
        del small  # small blocks are malloc's business
        assert tt.stats()["dram"]["cached_bytes"] <= 1 << 20
    finally:
        _C.set_dram_cache_capacity(1 << 30)
        tiers.deactivate()
    assert tt.stats()["dram"]["cached_bytes"] == 0
