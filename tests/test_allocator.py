"""The C++ allocator: tiers, stats, frees after disable, leaks."""

import gc
import resource
import threading

import psutil
import pytest
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
        _C.set_dram_cache_capacity(_C.default_dram_cache_capacity())
        tiers.deactivate()
    assert tt.stats()["dram"]["cached_bytes"] == 0


def test_enable_keeps_and_restores_the_cpu_allocator_priority():
    """c10 replaces the CPU allocator only at its current priority or above: a session must
    register at that priority (not 255, which would shut out every later registration) and
    restore the previous allocator and priority on close."""
    before = _C.cpu_allocator_priority()
    assert _C.cpu_allocator_is_default()
    tiers.activate(tiers.parse_pm("sim"), "fallback")
    try:
        assert not _C.cpu_allocator_is_default()
        assert _C.cpu_allocator_priority() == before
    finally:
        tiers.deactivate()
    assert _C.cpu_allocator_is_default() and _C.cpu_allocator_priority() == before


def test_a_request_too_large_raises_pytorchs_out_of_memory_error():
    tiers.activate(tiers.parse_pm("sim", 1 << 20), "error")
    _C.set_tier(tiers.PM)
    try:
        with pytest.raises(torch.OutOfMemoryError, match="tier 'pm'"):
            torch.empty(2 << 20, dtype=torch.uint8)  # more than pm holds
        with pytest.raises(torch.OutOfMemoryError):
            torch.empty(1 << 62, dtype=torch.uint8)  # more than any address space
    finally:
        _C.set_tier(tiers.DRAM)
        tiers.deactivate()
    assert tt.stats()["pm"]["failures"] >= 1


SIZES = [1, 80, 255, 256, 257, 1000, 4096, 5000, 65536, 100_000, 1 << 20]


def test_pm_stats_agree_with_the_arena_block_for_block():
    """live_bytes counts what each block occupies in the arena (no header, no tag): it is
    always the arena's capacity minus its free bytes, and every pm block starts on a 256-byte line."""
    tiers.activate(tiers.parse_pm("sim", 16 << 20), "error")
    _C.set_tier(tiers.PM)
    live = []
    try:
        base = tt.stats()["pm"]["live_bytes"]
        for size in SIZES * 3:
            live.append(torch.empty(size, dtype=torch.uint8))
            layout = _C.pm_layout()
            assert tt.stats()["pm"]["live_bytes"] - base == layout["capacity"] - layout["free_bytes"]
            assert live[-1].data_ptr() % 256 == 0
        del live[::2]
        layout = _C.pm_layout()
        assert tt.stats()["pm"]["live_bytes"] - base == layout["capacity"] - layout["free_bytes"]
        assert tt.stats()["pm"]["live_bytes"] - base == sum(_C.arena_block_bytes(t.numel()) for t in live)
        live.clear()
        assert _C.pm_layout()["free_bytes"] == _C.pm_layout()["capacity"]
    finally:
        _C.set_tier(tiers.DRAM)
        live.clear()
        tiers.deactivate()


def test_dram_blocks_are_64_byte_aligned_and_counted_as_such():
    tiers.activate(tiers.parse_pm("sim"), "fallback")
    try:
        base = tt.stats()["dram"]["live_bytes"]
        blocks = [torch.empty(size, dtype=torch.uint8) for size in SIZES]
        assert all(b.data_ptr() % 64 == 0 for b in blocks)
        assert tt.stats()["dram"]["live_bytes"] - base == sum(-(-s // 64) * 64 for s in SIZES)
        del blocks
        assert tt.stats()["dram"]["live_bytes"] == base
    finally:
        tiers.deactivate()


def test_a_closed_sessions_backend_lives_until_its_last_block_is_freed():
    before = _C.live_backends()
    tiers.activate(tiers.parse_pm("sim", 1 << 20), "fallback")
    _C.set_tier(tiers.PM)
    try:
        kept = torch.ones(1000)
    finally:
        _C.set_tier(tiers.DRAM)
        tiers.deactivate()
    assert _C.live_backends() == before + 1  # the arena: it still holds `kept`
    assert tt.tier_of(kept) == "pm" and kept.sum().item() == 1000
    del kept
    assert _C.live_backends() == before


def test_counters_of_exited_threads_still_count():
    """Each thread counts on its own; when it exits its counts join the shared ones, so stats and
    backend lifetimes stay exact for blocks allocated by threads that are gone."""
    before = _C.live_backends()
    tiers.activate(tiers.parse_pm("sim", 1 << 20), "fallback")
    base = tt.stats()["pm"]
    made: list[torch.Tensor] = []

    def worker():
        _C.set_tier(tiers.PM)
        made.extend(torch.empty(1024, dtype=torch.uint8) for _ in range(10))
        _C.set_tier(tiers.DRAM)

    try:
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        after = tt.stats()["pm"]
        assert after["live_bytes"] - base["live_bytes"] == 40 * 1024
        assert after["allocations"] - base["allocations"] == 40
    finally:
        tiers.deactivate()
    assert _C.live_backends() == before + 1
    made.clear()  # freed by this thread, counted against the exited ones
    assert tt.stats()["pm"]["live_bytes"] == base["live_bytes"]
    assert _C.live_backends() == before


def test_dram_cache_evicts_least_recently_freed_first():
    tiers.activate(tiers.parse_pm("sim"), "fallback")
    try:
        _C.set_dram_cache_capacity(3 << 20)
        mib, k4 = 1 << 20, 4096
        a, b, c, d = (torch.empty(mib - (k + 1) * k4, dtype=torch.uint8) for k in range(4))
        b_address = b.data_ptr()
        del a, b, c
        assert tt.stats()["dram"]["cached_bytes"] == 3 * mib - (1 + 2 + 3) * k4
        del d  # no room for it: only `a`, the least recently freed, goes
        stats = tt.stats()["dram"]
        assert stats["cache_evictions"] >= 1
        assert stats["cached_bytes"] == 3 * mib - (2 + 3 + 4) * k4
        assert torch.empty(mib - 2 * k4, dtype=torch.uint8).data_ptr() == b_address  # `b` is still there
        assert stats["cache_capacity"] == 3 << 20
    finally:
        _C.set_dram_cache_capacity(_C.default_dram_cache_capacity())
        tiers.deactivate()
