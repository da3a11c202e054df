"""Baselines: budgets, feasibility, the optimum against brute force, the CLI tables."""

import dataclasses
import itertools
import random
import re

import numpy as np
import pytest
import torch
from torch import nn

from torch_tier import baselines as bl
from torch_tier import zoo
from torch_tier.cli import main
from torch_tier.graph import TierGraph
from torch_tier.graph_capture import capture
from torch_tier.policy import Placement
from torch_tier.cost_model import graph_costs, predict
from torch_tier.placement import (PlacementSpace, from_vector, items, live_activations, of_items, to_array,
                                  to_vector)

BUDGETS = [0, "10%", "25%", "50%", "64KiB", "100%"]
PLACEMENTS = [Placement(w, a) for w in ("dram", "pm") for a in ("dram", "pm")]


@pytest.fixture(scope="module")
def resnet() -> TierGraph:
    workload = zoo.build("resnet50", image_size=32, width=0.25, depth=0.25)
    return capture(workload.model, workload.inputs, name=workload.name, repeats=2)


@pytest.fixture(scope="module")
def mlp() -> TierGraph:
    """Six nodes (the Sequential and five layers): 4**6 placements to enumerate."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    return capture(model.eval(), torch.randn(32, 64), repeats=2)


def extra(graph: TierGraph, policy) -> float:
    return predict(graph, policy) - graph.base_time


@pytest.mark.parametrize("budget, expected", [
    (1000, 1000), ("64MiB", 64 << 20), ("1.5KiB", 1536), (0.25, 0.25), ("25%", 0.25), (" 12.5 % ", 0.125),
    ("150%", 1.5), (-1, -1),
])
def test_parse_budget(budget, expected):
    assert bl.parse_budget(budget) == expected


@pytest.mark.parametrize("budget", ["lots", "%", "25 percent", "-64MiB", "nan%", float("inf"), None, True])
def test_unreadable_budget_names_the_value(budget):
    with pytest.raises(bl.BudgetError, match=re.escape(f"DRAM budget {budget!r}")):
        bl.parse_budget(budget)


def test_budget_shares_are_of_the_all_dram_footprint(resnet):
    full = resnet.footprint(resnet.policy())["dram"]
    assert bl.dram_budget(resnet, "50%") == int(full * 0.5)
    assert bl.dram_budget(resnet, 0.1) == int(full * 0.1)
    assert bl.dram_budget(resnet, "1KiB") == 1024


@pytest.mark.parametrize("budget", [-1, "-5%"])
@pytest.mark.parametrize("name", list(bl.BASELINES))
def test_infeasible_budget_names_budget_and_minimum(resnet, name, budget):
    with pytest.raises(bl.BudgetError, match=rf"{budget!r} \(-\d+ bytes\) is below the 0 bytes"):
        bl.BASELINES[name](resnet, budget)


@pytest.mark.parametrize("budget", BUDGETS)
def test_every_baseline_within_budget(resnet, budget):
    limit = bl.dram_budget(resnet, budget)
    for name, make in bl.BASELINES.items():
        policy = make(resnet, budget)
        assert resnet.footprint(policy)["dram"] <= limit, name
        assert policy.metadata["dram_budget"] == limit and policy.metadata["device"] == "optane-100"
        assert policy.metadata["found_by"].startswith(name)
        assert set(policy.nodes) == {node.path for node in resnet.nodes}


def test_all_dram_only_within_its_budget(resnet):
    full = resnet.footprint(resnet.policy())["dram"]
    assert bl.all_dram(resnet).metadata["dram_budget"] == full
    assert bl.all_dram(resnet, full).metadata["found_by"] == "all-dram"
    with pytest.raises(bl.BudgetError, match="over the budget '50%'"):
        bl.all_dram(resnet, "50%")


@pytest.mark.parametrize("budget", BUDGETS)
def test_optimal_beats_every_placement(resnet, budget):
    best = extra(resnet, bl.optimal(resnet, budget))
    for name, make in bl.BASELINES.items():
        if name != "memory-mode":  # a model of a cache, not a placement
            assert best <= extra(resnet, make(resnet, budget)) * (1 + bl.MILP_GAP) + 1e-12, name


def _brute_force(graph: TierGraph, latency) -> list[tuple[int, float]]:
    """(DRAM footprint, latency(placement array)) of every placement of `graph`."""
    scored = []
    for places in itertools.product(PLACEMENTS, repeat=len(graph.nodes)):
        policy = graph.policy(list(places))
        scored.append((graph.footprint(policy)["dram"], latency(to_array(graph, policy))))
    return scored


SHARES = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)


def test_optimal_equals_brute_force(mlp):
    assert len(mlp.nodes) == 6
    scored = _brute_force(mlp, graph_costs(mlp).latency)
    full = mlp.footprint(mlp.policy())["dram"]
    for share in SHARES:
        limit = int(share * full)
        brute = min(seconds for dram, seconds in scored if dram <= limit)
        policy = bl.optimal(mlp, limit)
        assert mlp.footprint(policy)["dram"] <= limit
        assert predict(mlp, policy) == pytest.approx(brute, rel=1e-9, abs=1e-12), share


def test_optimal_on_given_cost_terms_equals_brute_force(mlp):
    """Cost terms other than the device's (as a calibration fits them): the optimum is theirs."""
    device = graph_costs(mlp)
    given = dataclasses.replace(device, weight=device.weight[::-1] * 3, write=device.write * 0.1,
                                compute=device.compute * 2)
    scored = _brute_force(mlp, given.latency)
    full = mlp.footprint(mlp.policy())["dram"]
    differs = False
    for share in SHARES:
        limit = int(share * full)
        brute = min(seconds for dram, seconds in scored if dram <= limit)
        policy = bl.optimal(mlp, limit, costs=given)
        assert mlp.footprint(policy)["dram"] <= limit and policy.metadata["cost_terms"] == "given"
        assert given.latency(to_array(mlp, policy)) == pytest.approx(brute, rel=1e-9, abs=1e-12), share
        differs |= policy.nodes != bl.optimal(mlp, limit).nodes
    assert differs  # the given terms decided something the device's would not
    with pytest.raises(ValueError, match="cost terms of 5 nodes"):
        bl.optimal(mlp, full, costs=dataclasses.replace(given, weight=given.weight[:5]))


def test_optimal_with_parallel_tiers_equals_brute_force(mlp):
    """Tiers serving at once with DRAM loaded (GraphCosts.dram_share): each node's extra is the larger of
    two affine pieces; the MILP's optimum is the brute-force one, and somewhere not the adding model's.
    The split optimum (an LP over the same pieces) is at least as fast, and no sampled split beats it."""
    loaded = dataclasses.replace(graph_costs(mlp), dram_share=0.3)
    scored = _brute_force(mlp, loaded.latency)
    full = mlp.footprint(mlp.policy())["dram"]
    space = PlacementSpace(mlp)
    rng = np.random.default_rng(0)
    differs = False
    for share in SHARES:
        limit = int(share * full)
        brute = min(seconds for dram, seconds in scored if dram <= limit)
        policy = bl.optimal(mlp, limit, costs=loaded)
        assert mlp.footprint(policy)["dram"] <= limit
        assert loaded.latency(to_array(mlp, policy)) == pytest.approx(brute, rel=1e-9, abs=1e-12), share
        differs |= policy.nodes != bl.optimal(mlp, limit).nodes
        split = bl.optimal(mlp, limit, costs=loaded, split=True)
        best_split = loaded.latency(to_array(mlp, split))
        assert mlp.footprint(split)["dram"] <= limit and best_split <= brute * (1 + 1e-9), share
        for shares in rng.random((200, len(mlp.nodes), 2)):
            candidate = space.clean(shares.astype(float))
            if mlp.footprint(space.policy(candidate))["dram"] <= limit:
                assert best_split <= loaded.latency(candidate) * (1 + 1e-7) + 1e-12, share
    assert differs


def test_live_activations_bound_the_footprint_exactly(resnet):
    """The MILP's budget rows give graph.footprint's DRAM peak for any placement."""
    rng = random.Random(1)
    live = live_activations(resnet)
    for _ in range(20):
        places = [rng.choice(PLACEMENTS) for _ in resnet.nodes]
        policy = resnet.policy(places)
        weights = sum(n.weight_bytes for n, p in zip(resnet.nodes, places) if p.weight == "dram")
        in_dram = [p.activation == "dram" for p in places]
        assert weights + int((live @ in_dram).max()) == resnet.footprint(policy)["dram"]


def test_placement_encodings_agree(resnet):
    """Policy, placement array and decision vector are one placement: the conversions round-trip,
    the vector's entries are items(graph) and the cost terms' columns."""
    space = PlacementSpace(resnet)
    terms = graph_costs(resnet)
    rng = np.random.default_rng(0)
    for _ in range(10):
        array = space.clean(rng.integers(0, 2, (space.nodes, 2)))
        policy = space.policy(array)
        assert (to_array(resnet, policy) == array).all() and (space.encode(policy) == array).all()
        vector = to_vector(array)
        assert (from_vector(vector) == array).all()
        pm = [item for item, x in zip(items(resnet), vector) if x]
        assert (of_items(resnet, pm) == array).all()
        assert terms.terms() @ vector == pytest.approx(terms.linear(array), rel=1e-12, abs=1e-15)
    assert space.decisions == int((space.all_in(1) == 1).sum()) < 2 * space.nodes  # ReLUs hold no weights


def test_item_costs_bound_the_prediction(resnet):
    """Alone in pm, an item hides behind its node's computation at least as well as
    beside others: item costs sum to at most a placement's extra, and the extra
    is at most its traffic with no overlap at all."""
    rng = random.Random(2)
    costs = bl.item_costs(resnet)
    terms = graph_costs(resnet)
    for _ in range(20):
        pm = {item for item in costs if rng.random() < 0.5}
        policy = bl._policy(resnet, pm)
        no_overlap = terms.linear(to_array(resnet, policy)).sum()
        assert sum(costs[item] for item in pm) - 1e-12 <= extra(resnet, policy) <= no_overlap + 1e-12
    all_pm = to_array(resnet, bl.all_pm(resnet, 0))
    assert terms.extras(all_pm).sum() < terms.linear(all_pm).sum()  # the convolutions hide some of theirs


def test_greedy_is_sane(resnet):
    full_pm = extra(resnet, bl.all_pm(resnet, 0))
    assert extra(resnet, bl.greedy(resnet, "100%")) == 0.0  # everything fits: nothing in pm
    assert extra(resnet, bl.greedy(resnet, 0)) == pytest.approx(full_pm)
    previous = full_pm
    for budget in ("10%", "25%", "50%", "75%"):
        cost = extra(resnet, bl.greedy(resnet, budget))
        assert extra(resnet, bl.optimal(resnet, budget)) * (1 - bl.MILP_GAP) <= cost <= previous
        previous = cost
    costs = bl.item_costs(resnet)
    sizes = {item: resnet.footprint(bl._policy(resnet, {item}))["pm"] for item in costs}
    hottest = max((item for item in costs if sizes[item]), key=lambda item: costs[item] / sizes[item])
    place = bl.greedy(resnet, sizes[hottest]).placement_of(resnet.nodes[hottest[0]].path)
    assert getattr(place, hottest[1]) == "dram"  # the most cost per byte is the first into DRAM


def test_first_touch_fills_with_weights_first(resnet):
    weights = sum(n.weight_bytes for n in resnet.nodes)
    policy = bl.first_touch(resnet, weights)
    assert all(policy.placement_of(n.path).weight == "dram" for n in resnet.nodes)
    assert any(policy.placement_of(n.path).activation == "pm" for n in resnet.nodes)


def test_interleave_is_reproducible_per_seed(resnet):
    assert bl.interleave(resnet, "50%", seed=3).nodes == bl.interleave(resnet, "50%", seed=3).nodes
    assert bl.interleave(resnet, "50%", seed=3).nodes != bl.interleave(resnet, "50%", seed=4).nodes
    assert bl.interleave(resnet, "50%", seed=3).metadata["seed"] == 3


def test_memory_mode_is_all_pm_with_a_modelled_latency(resnet):
    policy = bl.memory_mode(resnet, "25%")
    assert "model" in policy.metadata["found_by"] and policy.metadata["hit_ratio"] == pytest.approx(0.25, abs=1e-6)
    assert resnet.footprint(policy)["dram"] == 0
    all_pm = predict(resnet, bl.all_pm(resnet, 0))
    assert bl.memory_mode_latency(resnet, 0) == pytest.approx(all_pm)
    assert bl.memory_mode_latency(resnet, "100%") == pytest.approx(resnet.base_time)
    assert resnet.base_time < bl.memory_mode_latency(resnet, "50%") < all_pm


def test_policies_save_and_load(resnet, tmp_path):
    policy = bl.optimal(resnet, "25%")
    policy.save(tmp_path / "p.json")
    assert type(policy).load(tmp_path / "p.json").nodes == policy.nodes


TINY_RESNET = ["resnet50", "--size", "image_size=32", "width=0.25", "depth=0.25", "--capture-repeats", "1"]


def test_cli_baselines_prints_the_table(capsys):
    assert main(["baselines", *TINY_RESNET, "--budget", "25%", "--repeats", "2", "--threads", "1"]) == 0
    out, err = capsys.readouterr()
    assert "| policy | DRAM peak MiB | PM peak MiB | predicted ms | vs all-dram | measured ms | ± |" in out
    for name in ["all-dram", *bl.BASELINES]:
        assert f"| {name}" in out
    assert "| all-dram | " in out and " | 1.0000 | " in out  # the reference row's own ratio
    assert "| memory-mode (model) |" in out and " cache |" in out and "| (model) |" in out
    assert "round 2/2  optimal" in err  # progress, a line per baseline measured


def test_cli_rejects_a_bad_budget(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["baselines", *TINY_RESNET, "--budget", "lots"])
    assert exit_.value.code == 2
    assert "DRAM budget 'lots'" in capsys.readouterr().err


def test_cli_profile_prints_and_saves_the_graph(capsys, tmp_path):
    assert main(["profile", *TINY_RESNET, "--out", str(tmp_path / "g.json")]) == 0
    out = capsys.readouterr().out
    assert "layer1.0.conv1" in out and "costing most in PM" in out
    assert len(TierGraph.load(tmp_path / "g.json").nodes) > 10


def test_cli_unknown_model(capsys):
    assert main(["profile", "no_such_model"]) == 2
    assert "no_such_model" in capsys.readouterr().err
