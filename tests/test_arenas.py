"""Planned arenas: plans fit their lower bound, planned runs are bit-identical and never wrong."""

import pytest
import torch

import torch_tier as tt
from torch_tier import _C, arenas, tiers


def output(model, x):
    with torch.no_grad():
        out = model(x)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out


def half_on_pm(graph):
    return graph.policy([tt.Placement("dram", "pm" if i % 2 else "dram") for i in range(len(graph.nodes))])


@pytest.mark.parametrize("make", ["cnn", "bert"])
def test_planned_run_is_bit_identical_and_planned(make, request):
    model, x = request.getfixturevalue(make)
    ref = output(model, x)
    graph = tt.capture(model, x, repeats=1)
    policy = half_on_pm(graph)
    plans = arenas.plan_arenas(graph, policy)
    for plan in plans.values():
        assert plan.lower_bound <= plan.arena_bytes and plan.optimal
        assert len(plan.offsets) == len(plan.request_sizes)
    with tt.enable(policy, model, pm="sim", arena="planned", graph=graph):
        for _ in range(3):
            out = output(model, x)
            assert torch.equal(out, ref)
            del out
        stats = arenas.stats()
    planned = sum(s["planned"] for s in stats.values())
    buffers = len(graph.buffers)
    assert planned >= 2 * buffers  # most forwards served entirely from the plan
    assert stats["pm"]["arena_bytes"] == plans["pm"].arena_bytes


def test_kept_outputs_and_other_shapes_fall_back_correctly(cnn):
    model, x = cnn
    graph = tt.capture(model, x, repeats=1)
    policy = graph.policy([tt.Placement("dram", "pm")] * len(graph.nodes))
    bigger = torch.randn(3, 3, 40, 40)
    refs = [output(model, x) for _ in range(2)] + [output(model, bigger)]
    with tt.enable(policy, model, pm="sim", arena="planned", graph=graph):
        kept = [output(model, x) for _ in range(2)]  # the first output stays live during the second forward
        kept.append(output(model, bigger))  # a different shape: not the planned sequence
        unplanned = arenas.stats()["pm"]["unplanned"]
    assert all(torch.equal(a, b) for a, b in zip(kept, refs))
    assert unplanned > 0


def test_planned_arena_needs_a_matching_graph(cnn, bert):
    model, x = cnn
    bert_graph = tt.capture(*bert, repeats=1)
    with pytest.raises(ValueError, match="needs graph="):
        tt.enable(tt.Policy.uniform(model), model, pm="sim", arena="planned")
    with pytest.raises(ValueError, match="is not of the policy's model"):
        tt.enable(tt.Policy.uniform(model), model, pm="sim", arena="planned", graph=bert_graph)
    with pytest.raises(ValueError, match="expected 'dynamic' or 'planned'"):
        tt.enable(tt.Policy.uniform(model), model, pm="sim", arena="static")
    assert not _C.enabled()


def test_planned_arena_is_smaller_than_first_fit_extent(bert):
    model, x = bert
    graph = tt.capture(model, x, repeats=1)
    policy = graph.policy([tt.Placement("dram", "pm")] * len(graph.nodes))
    with tt.enable(policy, model, pm="sim"):
        output(model, x)
        dynamic = _C.pm_layout()["high_water"]
    planned = arenas.plan_arenas(graph, policy)["pm"]
    assert planned.lower_bound <= planned.arena_bytes <= dynamic


def test_planned_pm_blocks_are_on_pm_lines(bert):
    """Planned pm slots start on 256-byte boundaries (Optane's line), as every other pm block does."""
    model, x = bert
    ref = output(model, x)
    graph = tt.capture(model, x, repeats=1)
    policy = graph.policy([tt.Placement("dram", "pm")] * len(graph.nodes))
    line = _C.tier_alignment(tiers.PM)
    assert line == 256 and _C.tier_alignment(tiers.DRAM) == 64
    assert any(b.size % line for b in graph.buffers)  # the sizes alone would not keep slots on lines
    plan = arenas.plan_arenas(graph, policy)["pm"]
    assert plan.offsets and all(offset % line == 0 for offset in plan.offsets)
    with tt.enable(policy, model, pm="sim", arena="planned", graph=graph):
        output(model, x)
        _C.start_trace()  # the second forward follows the plan from its start
        out = output(model, x)
        events = _C.stop_trace()
        planned = arenas.stats()["pm"]["planned"]
    assert torch.equal(out, ref)
    assert planned > len(graph.buffers)
    pm_addresses = [address for _, _, address, _, tier, is_free in events if tier == tiers.PM and not is_free]
    assert pm_addresses and [a for a in pm_addresses if a % line] == []


def test_a_pm_plan_off_the_line_is_refused(cnn):
    model, _ = cnn
    with tt.enable(tt.Policy.uniform(model), model, pm="sim"):
        with pytest.raises(ValueError, match="offset 64, 100 bytes.*not a multiple of 256"):
            _C.plan(tiers.PM, [100, 100], [0, 64], 512)
