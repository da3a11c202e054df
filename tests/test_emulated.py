"""The emulated tier charges each call exactly the cost model's extra for the traffic it observed."""

from collections import defaultdict

import numpy as np
import pytest

import torch_tier as tt
from torch_tier import cost_model, tiers
from torch_tier.graph_capture import capture
from torch_tier.runtime import Session


def _recorded(model, x, policy, device: str) -> dict[str, list[tuple[float, float]]]:
    """(own seconds, charged extra) of each call of each node, over a few forwards."""
    calls = defaultdict(list)
    with Session(policy, model, tiers.parse_pm(f"sim:{device}"), "fallback",
                 recorder=lambda path, own, extra: calls[path].append((own, extra))):
        for _ in range(3):
            model(x)
    return calls


@pytest.mark.parametrize("make", ["cnn", "bert"])
@pytest.mark.parametrize("device", ["optane-100", "optane-100-1dimm"])
def test_meter_charges_each_call_the_cost_models_extra(make, device, request):
    model, x = request.getfixturevalue(make)
    graph = capture(model, x, repeats=1)
    assert all(node.calls == 1 for node in graph.nodes)  # so a node's forward is one call
    rng = np.random.default_rng(0)
    placement = rng.integers(0, 2, size=(len(graph.nodes), 2)).astype(np.int8)
    policy = graph.policy([tt.Placement(tiers.TIER_NAMES[w], tiers.TIER_NAMES[a]) for w, a in placement])
    costs = cost_model.graph_costs(graph, device)
    linear = costs.linear(placement)
    dram = cost_model.dram_seconds(graph, cost_model.cost_model(device))
    charged = 0
    recorded = _recorded(model, x, policy, device)
    for i, node in enumerate(graph.nodes):
        for own, extra in recorded.get(node.path, []):
            assert extra == pytest.approx(cost_model.overlapped(linear[i], own, dram[i]), rel=1e-9, abs=1e-15), \
                node.path
            charged += extra > 0
    assert charged > len(graph.nodes) // 2  # the check compared real charges, not zeros
