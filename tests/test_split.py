"""Split placements: part of a tensor in each tier, priced by its parts, optimised as an LP."""

import os
import re

import numpy as np
import pytest
import torch
from torch import nn

import torch_tier as tt
from torch_tier import _C, memkind, tiers, zoo
from torch_tier import baselines as bl
from torch_tier.cost_model import cost_model, graph_costs, predict, split_extra
from torch_tier.graph import TierGraph
from torch_tier.graph_capture import capture
from torch_tier.placement import PlacementSpace, to_array
from torch_tier.traffic import Traffic, TrafficStream, graph_traffic

from conftest import small_bert, small_cnn

BUDGETS = ["10%", "25%", "50%"]


@pytest.fixture(scope="module")
def mlp() -> TierGraph:
    """A coarse MLP: three 8 MiB weight matrices, small activations (the issue's 0/1-knapsack case)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1024, 2048), nn.ReLU(), nn.Linear(2048, 1024), nn.ReLU(), nn.Linear(1024, 2048))
    return capture(model.eval(), torch.randn(8, 1024), repeats=2)


@pytest.fixture(scope="module")
def resnet() -> TierGraph:
    workload = zoo.build("resnet50", image_size=32, width=0.25, depth=0.25)
    return capture(workload.model, workload.inputs, name=workload.name, repeats=2)


def random_split(space: PlacementSpace, rng: np.random.Generator) -> np.ndarray:
    """A placement array of PM shares, a third whole DRAM, a third whole PM, a third split."""
    shares = rng.choice([0.0, 1.0, -1.0], size=(space.nodes, 2))
    return space.clean(np.where(shares < 0, rng.uniform(0.01, 0.99, shares.shape), shares))


def test_split_stream_takes_as_long_as_its_slower_part():
    model = cost_model("optane-100")
    whole = 8 << 20
    dram_only = model.in_dram(TrafficStream(whole))
    for pm_bytes in (1 << 20, 2 << 20, 6 << 20):
        parts = (TrafficStream(whole - pm_bytes, tier="dram", split=1), TrafficStream(pm_bytes, tier="pm", split=1))
        slower = max(model.seconds(parts[0], model.dram), model.seconds(parts[1], model.pm))
        extra = model.call_extra(Traffic("n", 0.0, 1, parts))
        assert extra == pytest.approx((1 - 0.5) * (slower - dram_only) if slower < dram_only else slower - dram_only)
        as_two_streams = model.call_extra(Traffic("n", 0.0, 1, tuple(TrafficStream(p.bytes, tier=p.tier)
                                                                        for p in parts)))
        assert extra < as_two_streams  # served at once, not one after the other
    assert model.call_extra(Traffic("n", 0.0, 1, (TrafficStream(whole, tier="pm"),))) == pytest.approx(
        model.extra(TrafficStream(whole)))


def test_split_extra_is_convex_and_whole_at_the_ends():
    extra, dram = 3.0, 2.0
    shares = np.linspace(0, 1, 101)
    values = split_extra(extra, dram, shares)
    assert values[0] == 0.0 and values[-1] == extra
    assert values.min() < 0  # both tiers' bandwidth at once: faster than DRAM alone
    assert (np.diff(values, 2) >= -1e-12).all()


@pytest.mark.parametrize("device", ["optane-100", "cxl"])
def test_graph_costs_of_splits_are_the_emulated_tiers_prices(resnet, device):
    """The per-node model the LP optimises and the per-call pricing the simulated tier spins out agree
    on split placements, and a whole placement costs the same as int8 or as float shares."""
    space = PlacementSpace(resnet)
    costs = graph_costs(resnet, device)
    model = cost_model(device)
    rng = np.random.default_rng(0)
    for _ in range(5):
        array = random_split(space, rng)
        per_call = resnet.base_time + sum(model.call_extra(t) for t in graph_traffic(resnet, array))
        assert costs.latency(array) == pytest.approx(per_call, rel=1e-6)  # graph_traffic splits whole bytes
        whole = space.clean(rng.integers(0, 2, (space.nodes, 2)))
        assert costs.latency(whole.astype(float)) == pytest.approx(costs.latency(whole), rel=1e-12)


def test_split_policy_round_trips_through_arrays(resnet):
    space = PlacementSpace(resnet)
    array = random_split(space, np.random.default_rng(1))
    policy = space.policy(array)
    assert policy.split
    assert np.allclose(to_array(resnet, policy), array, rtol=0, atol=1e-12)
    assert predict(resnet, policy) == pytest.approx(graph_costs(resnet).latency(array), rel=1e-12)


@pytest.mark.parametrize("device", ["optane-100", "cxl"])
@pytest.mark.parametrize("budget", BUDGETS)
def test_split_optimum_beats_every_baseline_and_fills_the_budget(mlp, resnet, device, budget):
    for graph in (mlp, resnet):
        limit = bl.dram_budget(graph, budget)
        best = bl.optimal(graph, budget, device, split=True)
        assert graph.footprint(best)["dram"] <= limit and best.metadata["proven_optimal"]
        seconds = predict(graph, best, device)
        for name, make in {**bl.BASELINES, **bl.SPLIT_BASELINES}.items():
            if name != "memory-mode":
                assert seconds <= predict(graph, make(graph, budget, device), device) * (1 + 1e-9), name
        assert seconds < bl.memory_mode_latency(graph, budget, device)
        assert seconds < predict(graph, bl.weighted_interleave(graph, budget, device), device)
    assert mlp.footprint(bl.optimal(mlp, budget, device, split=True))["dram"] >= 0.999 * bl.dram_budget(mlp, budget)
    assert mlp.footprint(bl.optimal(mlp, budget, device))["dram"] < 0.8 * bl.dram_budget(mlp, budget)  # 0/1


def test_no_split_placement_beats_the_lp(resnet):
    """Random split placements scaled into the budget never beat the LP's optimum."""
    space = PlacementSpace(resnet)
    limit = bl.dram_budget(resnet, "25%")
    best = predict(resnet, bl.optimal(resnet, limit, split=True))
    costs = graph_costs(resnet)
    rng = np.random.default_rng(2)
    tried = 0
    for _ in range(200):
        array = random_split(space, rng)
        policy = space.policy(array)
        if resnet.footprint(policy)["dram"] <= limit:
            tried += 1
            assert best <= costs.latency(array) + 1e-12
    assert tried >= 20


def test_weighted_interleave_spreads_every_tensor_in_the_bandwidth_ratio(resnet):
    model = cost_model("cxl")
    share = model.dram.read_bw_gbs / (model.dram.read_bw_gbs + model.pm.read_bw_gbs)
    space = PlacementSpace(resnet)
    everything = bl.weighted_interleave(resnet, "100%", "cxl")
    array = to_array(resnet, everything)
    assert np.allclose(array[space.mask], 1 - share) and everything.metadata["dram_share"] == share
    half = to_array(resnet, bl.page_interleave(resnet, "100%", "cxl"))
    assert np.allclose(half[space.mask], 0.5)
    tight = bl.weighted_interleave(resnet, "25%", "cxl")  # DRAM fills in first-touch order, later tensors in pm
    limit = bl.dram_budget(resnet, "25%")
    assert limit * 0.999 <= resnet.footprint(tight)["dram"] <= limit
    weights = to_array(resnet, tight)[:, 0][space.mask[:, 0]]
    assert weights[0] == pytest.approx(1 - share) and weights[-1] == 1.0


def test_split_greedy_fills_the_budget(mlp):
    limit = bl.dram_budget(mlp, "30%")
    whole, split = bl.greedy(mlp, limit), bl.greedy(mlp, limit, split=True)
    assert mlp.footprint(whole)["dram"] < 0.8 * limit <= 0.999 * limit <= mlp.footprint(split)["dram"] <= limit
    assert predict(mlp, split) < predict(mlp, whole)


def test_split_needs_terms_with_dram_seconds(mlp):
    import dataclasses

    fitted = dataclasses.replace(graph_costs(mlp), weight_dram=None)
    with pytest.raises(ValueError, match="cannot price splits"):
        bl.optimal(mlp, "25%", costs=fitted, split=True)


# ---- the runtime: split tensors placed for real ---------------------------------------------------

BACKENDS = [
    "sim",
    pytest.param("memkind:/dev/shm", marks=pytest.mark.skipif(
        not memkind.available() and os.environ.get("CI") != "true", reason="libmemkind0 is not installed")),
    pytest.param("numa:0", marks=pytest.mark.skipif(not tiers.numa_nodes(), reason="no NUMA node with memory")),
]
PAGE = 4096


def split_policy(model: nn.Module) -> tt.Policy:
    """Nodes' weights and activations split at several shares, every fourth node's weights whole in pm."""
    policy = tt.Policy.uniform(model, "dram", "dram")
    choices = [tt.Placement(0.375, 0.7), tt.Placement(0.5, 0.25), tt.Placement(0.8, "pm"), tt.Placement("pm", 0.5)]
    for i, node in enumerate(policy.nodes):
        policy.nodes[node] = choices[i % 4]
    return policy


def expected_bytes(nbytes: int, dram_share: float) -> tuple[int, int]:
    """(DRAM, pm) bytes of a block of `nbytes` at `dram_share`, as policy.Placement documents the rounding:
    round(share * pages) pages in DRAM (halves up), a whole block in one tier when that is none or all."""
    pages = -(-nbytes // PAGE)
    dram_pages = int(dram_share * pages + 0.5)
    if dram_pages in (0, pages):
        return (nbytes, 0) if dram_pages else (0, nbytes)
    return dram_pages * PAGE, (pages - dram_pages) * PAGE


def check_weights(model: nn.Module, policy: tt.Policy) -> tuple[int, int]:
    """Assert every weight storage's bytes per tier (and tier_of) as its placement says; return how
    many are split and their bytes in pm."""
    pm_weights, seen, splits = 0, set(), 0
    for path, module in model.named_modules():
        share = policy.placement_of(path).share("weight")
        for tensor in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
            nbytes = tensor.untyped_storage().nbytes()
            if tensor.data_ptr() in seen or nbytes == 0:
                continue
            seen.add(tensor.data_ptr())
            dram, pm_bytes = expected_bytes(nbytes, share)
            assert tt.tier_bytes(tensor) == {"dram": dram, "pm": pm_bytes}, path
            assert tt.tier_of(tensor) == ("split" if dram and pm_bytes else "dram" if dram else "pm"), path
            splits += bool(dram and pm_bytes)
            pm_weights += pm_bytes
    return splits, pm_weights


@pytest.mark.parametrize("pm", BACKENDS)
@pytest.mark.parametrize("build", [small_cnn, small_bert], ids=["cnn", "transformer"])
def test_outputs_bit_identical_and_every_weight_split_as_the_policy_says(build, pm):
    model, x = build()
    with torch.no_grad():
        reference = model(x)
    policy = split_policy(model)
    before = tt.stats()
    with tt.enable(policy, model, pm=pm), torch.no_grad():
        out = model(x)
        splits, pm_weights = check_weights(model, policy)
        assert splits >= 1
        assert tt.stats()["pm"]["live_bytes"] - before["pm"]["live_bytes"] >= pm_weights  # whole pm blocks round up
    assert torch.equal(out if torch.is_tensor(out) else out.last_hidden_state,
                       reference if torch.is_tensor(reference) else reference.last_hidden_state)
    del out  # the last activations, alive in their tiers until then
    assert tt.stats()["pm"]["live_bytes"] == before["pm"]["live_bytes"]


@pytest.mark.parametrize("pm", BACKENDS)
def test_split_blocks_count_in_both_tiers_and_free_exactly(pm):
    model, _ = small_cnn()
    with tt.enable(tt.Policy.uniform(model), model, pm=pm):
        before = tt.stats()
        _C.set_tier(0.25)  # a quarter of each block's pages in pm
        try:
            blocks = [torch.empty(n, dtype=torch.uint8) for n in (11 * PAGE + 100, 2 * PAGE, PAGE - 1, 40 * PAGE)]
        finally:
            _C.set_tier(tiers.DRAM)
        stats = tt.stats()
        expected = [expected_bytes(b.nbytes, 0.75) for b in blocks]
        assert [tuple(tt.tier_bytes(b).values()) for b in blocks] == expected
        assert expected[:3] == [(9 * PAGE, 3 * PAGE), (2 * PAGE, 0), (PAGE - 1, 0)]  # 12 pages: 9 in DRAM; 2: 1.5
        assert stats["pm"]["live_bytes"] - before["pm"]["live_bytes"] == 3 * PAGE + 10 * PAGE
        assert stats["dram"]["live_bytes"] - before["dram"]["live_bytes"] == (9 + 2 + 1 + 30) * PAGE  # whole: 64 B units
        assert stats["pm"]["allocations"] - before["pm"]["allocations"] == 2  # each split block counts in both
        assert stats["dram"]["allocations"] - before["dram"]["allocations"] == 4
        for block in blocks:  # every byte reads back what was written, across the tiers' boundary
            pattern = (torch.arange(block.numel()) % 251).to(torch.uint8)
            block.copy_(pattern)
            assert torch.equal(block, pattern)
        del blocks, block, pattern
        after = tt.stats()
        assert after["pm"]["live_bytes"] == before["pm"]["live_bytes"]
        assert after["dram"]["live_bytes"] == before["dram"]["live_bytes"]


def half_split_block() -> torch.Tensor:
    """A block of 8 pages allocated half in each tier (the session's pm tier)."""
    _C.set_tier(0.5)
    try:
        return torch.ones(8 * PAGE // 4)
    finally:
        _C.set_tier(tiers.DRAM)


@pytest.mark.skipif(not memkind.available(), reason="libmemkind0 is not installed")
def test_memkind_split_maps_the_heap_files_pages():
    """The pm part of a split block on memkind's heap is the heap file's own pages (one mapping,
    shared), and its DRAM part anonymous memory."""
    model, _ = small_cnn()
    with tt.enable(tt.Policy.uniform(model), model, pm="memkind:/dev/shm"):
        block = half_split_block()
        start = block.data_ptr()
        maps = {}
        for line in open("/proc/self/maps"):
            fields = line.split()
            low, high = (int(a, 16) for a in fields[0].split("-"))
            if low < start + 8 * PAGE and high > start:
                maps[max(low, start) - start] = fields[5] if len(fields) > 5 else ""
        assert maps[0] == "" and re.search(r"/dev/shm/memkind", maps[4 * PAGE]), maps
        del block


@pytest.mark.skipif(not tiers.numa_nodes(), reason="no NUMA node with memory")
def test_numa_split_pm_pages_bound_to_the_node():
    model, _ = small_cnn()
    node = tiers.numa_nodes()[0]
    with tt.enable(tt.Policy.uniform(model), model, pm=f"numa:{node}"):
        block = half_split_block()
        start = block.data_ptr()
        policies = {}
        for line in open("/proc/self/numa_maps"):
            address = int(line.split()[0], 16)
            if start <= address < start + 8 * PAGE:
                policies[address - start] = line.split()[1]
        assert policies[0] == "default" and policies[4 * PAGE] == f"bind:{node}", policies
        assert set(_C.page_nodes(block)) == {node}
        del block


@pytest.mark.usefixtures("registered")
def test_meter_charges_a_split_stream_by_its_parts():
    seen: list[Traffic] = []
    tt.register_device("split-recorder", lambda traffic: seen.append(traffic) or 0.0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 2048), nn.ReLU()).eval()
    x = torch.randn(16, 256)
    policy = tt.Policy.uniform(model)
    policy.nodes["0"] = tt.Placement(0.5, 0.5)
    with tt.enable(policy, model, pm="sim:split-recorder"), torch.no_grad():
        model(x)
    first, relu = {t.path: t for t in seen}["0"], {t.path: t for t in seen}["1"]
    weights = [s for s in first.streams if not s.write and s.extent]
    assert {s.tier for s in weights} == {"dram", "pm"} and len({s.split for s in weights}) == 1 and weights[0].split
    weight_bytes = (256 * 2048 + 2048) * 4
    assert sum(s.bytes for s in weights) == weight_bytes
    writes = [s for s in first.streams if s.write]
    out = 16 * 2048 * 4  # 32 pages: 16 in each tier
    assert sorted((s.tier, s.bytes) for s in writes) == [("dram", out // 2), ("pm", out // 2)]
    assert len({s.split for s in writes}) == 1 and writes[0].split
    reads = [s for s in relu.streams if not s.write]
    assert sorted((s.tier, s.bytes) for s in reads) == [("dram", out // 2), ("pm", out // 2)]


def test_bad_split_shares_and_planned_arenas_are_refused(cnn):
    model, x = cnn
    with pytest.raises(ValueError, match="between 0 and 1, got 1.5"):
        _C.set_tier(1.5)
    policy = split_policy(model)
    from torch_tier.graph_capture import capture as capture_graph

    graph = capture_graph(model, x, repeats=1)
    with pytest.raises(ValueError, match="arena='planned' lays out whole tensors"):
        tt.enable(policy, model, pm="sim", arena="planned", graph=graph)


# ---- the split cache: freed split blocks kept for the next one of their shape ------------------------------


def split_block(pages: int, pm_share: float) -> torch.Tensor:
    """A block of `pages` pages, `pm_share` of them in pm (the session's pm tier)."""
    _C.set_tier(pm_share)
    try:
        return torch.empty(pages * PAGE, dtype=torch.uint8)
    finally:
        _C.set_tier(tiers.DRAM)


def cached() -> tuple[int, int]:
    """The split cache's (DRAM, pm) bytes."""
    stats = tt.stats()
    return stats["dram"]["split_cached_bytes"], stats["pm"]["split_cached_bytes"]


def mapped(address: int, nbytes: int) -> bool:
    """Whether any page of [address, address + nbytes) is mapped in this process."""
    for line in open("/proc/self/maps"):
        low, high = (int(a, 16) for a in line.split()[0].split("-"))
        if low < address + nbytes and high > address:
            return True
    return False


@pytest.mark.parametrize("pm", BACKENDS)
def test_a_freed_split_block_serves_the_next_of_its_shape_and_counts_as_cached_not_live(pm):
    model, x = small_cnn()
    with tt.enable(tt.Policy.uniform(model), model, pm=pm):
        before = tt.stats()
        block = split_block(16, 0.25)  # 12 pages in DRAM, 4 in pm
        address = block.data_ptr()
        del block
        stats = tt.stats()
        assert cached() == (12 * PAGE, 4 * PAGE)
        for tier in ("dram", "pm"):  # cached bytes are not live ones
            assert stats[tier]["live_bytes"] == before[tier]["live_bytes"]
        again = split_block(16, 0.25)
        assert again.data_ptr() == address
        assert stats["pm"]["split_cache_hits"] + 1 == tt.stats()["pm"]["split_cache_hits"]
        assert tt.tier_bytes(again) == {"dram": 12 * PAGE, "pm": 4 * PAGE} and cached() == (0, 0)
        assert tt.stats()["pm"]["live_bytes"] - before["pm"]["live_bytes"] == 4 * PAGE
        again.copy_((torch.arange(again.numel()) % 251).to(torch.uint8))  # a reused block is whole memory
        assert torch.equal(again, (torch.arange(again.numel()) % 251).to(torch.uint8))
        del again
        other = split_block(16, 0.5)  # as many pages, split elsewhere: not the cached block
        assert other.data_ptr() != address and tt.tier_bytes(other) == {"dram": 8 * PAGE, "pm": 8 * PAGE}
        assert tt.stats()["pm"]["split_cache_hits"] == stats["pm"]["split_cache_hits"] + 1
        del other
        hits = tt.stats()["pm"]["split_cache_hits"]
        policy = split_policy(model)
    with tt.enable(policy, model, pm=pm), torch.no_grad():
        model(x)
        first = tt.stats()["pm"]["split_cache_hits"]
        model(x)  # every split activation of the second forward is a cached block
        assert tt.stats()["pm"]["split_cache_hits"] - first >= 2 and first >= hits


def test_the_split_cache_keeps_at_most_its_capacity_evicting_the_least_recently_freed():
    model, _ = small_cnn()
    with tt.enable(tt.Policy.uniform(model), model, pm="sim"):
        try:
            _C.set_split_cache_capacity(30 * PAGE)
            blocks = [split_block(pages, 0.5) for pages in (8, 10, 12)]  # 30 pages, freed oldest first
            addresses = [b.data_ptr() for b in blocks]
            while blocks:
                blocks.pop(0)
            assert sum(cached()) == 30 * PAGE
            evictions = tt.stats()["pm"]["split_cache_evictions"]
            newest = split_block(14, 0.5)  # freed, it makes room: the 8 and 10 page blocks go
            del newest
            stats = tt.stats()["pm"]
            assert sum(cached()) == 26 * PAGE <= stats["split_cache_capacity"] == 30 * PAGE
            assert stats["split_cache_evictions"] == evictions + 2
            hits = stats["split_cache_hits"]
            kept = split_block(12, 0.5)
            assert kept.data_ptr() == addresses[2] and tt.stats()["pm"]["split_cache_hits"] == hits + 1
            evicted = split_block(8, 0.5)
            assert tt.stats()["pm"]["split_cache_hits"] == hits + 1
            del kept, evicted
            too_large = split_block(32, 0.5)  # over the capacity: never cached
            del too_large
            assert sum(cached()) <= 30 * PAGE
            _C.set_split_cache_capacity(0)
            assert cached() == (0, 0)
        finally:
            _C.set_split_cache_capacity(_C.default_dram_cache_capacity())


@pytest.mark.parametrize("on_full", ["error", "fallback"])
def test_a_full_pm_tier_drains_the_split_cache_before_falling_back_or_raising(on_full):
    model, _ = small_cnn()
    with tt.enable(tt.Policy.uniform(model), model, pm="sim", pm_capacity=80 * PAGE, on_full=on_full):
        blocks = [split_block(64, 0.5) for _ in range(2)]  # 32 pm pages each, of the arena's 80
        del blocks
        assert cached() == (64 * PAGE, 64 * PAGE)
        before = tt.stats()["pm"]
        _C.set_tier(tiers.PM)
        try:
            whole = torch.empty(48 * PAGE, dtype=torch.uint8)  # fits only once the cache is drained
        finally:
            _C.set_tier(tiers.DRAM)
        assert tt.tier_of(whole) == "pm" and cached() == (0, 0)
        del whole
        split = [split_block(64, 0.5) for _ in range(2)]
        del split
        other = split_block(128, 0.5)  # a new shape needs the cached blocks' pm pages
        assert tt.tier_of(other) == "split" and cached() == (0, 0)
        after = tt.stats()["pm"]
        assert (after["fallbacks"], after["failures"]) == (before["fallbacks"], before["failures"])
        del other


@pytest.mark.parametrize("pm", BACKENDS)
def test_closing_the_session_leaves_no_split_block_cached_or_mapped(pm):
    model, _ = small_cnn()
    backends = _C.live_backends()
    with tt.enable(tt.Policy.uniform(model), model, pm=pm):
        block = split_block(16, 0.5)
        address = block.data_ptr()
        del block
        assert cached() == (8 * PAGE, 8 * PAGE) and mapped(address, 16 * PAGE)
    assert cached() == (0, 0)
    assert not mapped(address, 16 * PAGE)
    assert _C.live_backends() == backends
