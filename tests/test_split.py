"""Split placements: part of a tensor in each tier, priced by its parts, optimised as an LP."""

import numpy as np
import pytest
import torch
from torch import nn

from torch_tier import baselines as bl
from torch_tier import zoo
from torch_tier.cost_model import cost_model, graph_costs, predict, split_extra
from torch_tier.graph import TierGraph
from torch_tier.graph_capture import capture
from torch_tier.placement import PlacementSpace, to_array
from torch_tier.traffic import Traffic, TrafficStream, graph_traffic

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
