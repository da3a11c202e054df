"""pm="numa:NODE": the slow tier on one NUMA node's memory, bound to it before first touch.

On a machine with one node, numa:0 is the same DRAM as the dram tier, so that a page sits on
node 0 proves little there; the tests also check the kernel's policy for the pm memory (bound
to the node: a missing mbind fails them) and that pm pages are untouched until written (so
they fault in under that policy). `move_pages` (query mode) confirms the node of every page of
the pm tensors checked.
"""

from __future__ import annotations

import errno

import pytest
import torch

import torch_tier as tt
from torch_tier import _C, tiers, zoo
from test_runtime import forward, mixed_policy
from test_zoo import SMALL

pytestmark = pytest.mark.skipif(not tiers.numa_nodes(), reason="this kernel shows no NUMA node with memory")
NODE = min(tiers.numa_nodes(), default=0)
PM = f"numa:{NODE}"


def assert_on_node(tensor: torch.Tensor) -> None:
    """Every page of the tensor's storage is on NODE, under a policy that binds it there."""
    assert _C.memory_policy(tensor) == ("bind", [NODE])
    nodes = _C.page_nodes(tensor)
    assert nodes and set(nodes) == {NODE}, nodes


@pytest.mark.parametrize("name", ["resnet50", "bert-base"])
def test_zoo_model_bit_identical_under_a_mixed_policy_with_pm_pages_on_the_node(name):
    work = zoo.build(name, **SMALL[name])
    model, (x,) = work.model, work.inputs
    ref = forward(model, x)
    policy = mixed_policy(model)
    activations: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda _m, _a, out: activations.append(out) if torch.is_tensor(out) else None)
               for m in model.modules() if next(m.children(), None) is None]
    try:
        with tt.enable(policy, model, pm=PM):
            out = forward(model, x)
            placements = policy.resolve(model)
            for module_name, module in model.named_modules():
                for param in module.parameters(recurse=False):
                    assert tt.tier_of(param) == placements[module_name].weight, module_name
                    if placements[module_name].weight == "pm":
                        assert_on_node(param)
                    else:
                        assert _C.memory_policy(param)[0] == "default"
            in_pm = [t for t in activations if tt.tier_of(t) == "pm"]
            assert len(in_pm) >= 5
            for t in in_pm:
                assert_on_node(t)
            activations.clear()
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(out, ref)
    assert torch.equal(forward(model, x), ref)  # and after close


def test_pm_pages_fault_in_on_the_node_when_first_written():
    """A fresh arena's pages are untouched until written (move_pages: ENOENT), then on the node."""
    tiers.activate(tiers.parse_pm(PM, 4 << 20), "error")
    _C.set_tier(tiers.PM)
    try:
        block = torch.empty(1 << 20, dtype=torch.uint8)
        assert set(_C.page_nodes(block)) == {-errno.ENOENT}
        block.fill_(1)
        assert_on_node(block)
    finally:
        _C.set_tier(tiers.DRAM)
        tiers.deactivate()


def test_unknown_node_names_the_nodes_that_exist():
    nodes = ", ".join(map(str, tiers.numa_nodes()))
    with pytest.raises(ValueError, match=rf"NUMA node 7 does not exist or has no memory here \(nodes with memory: "
                                         rf"{nodes};"):
        tt.enable(tt.Policy.uniform(torch.nn.Linear(2, 2)), torch.nn.Linear(2, 2), pm="numa:7")
    assert not _C.enabled()
    for spec in ("numa:", "numa:x", "numa:-1", "numa"):
        with pytest.raises(ValueError, match=r"pm: cannot read .*'numa:NODE'"):
            tiers.parse_pm(spec)


def test_capacity_is_the_node_size_unless_given():
    size = tiers.numa_node_bytes(NODE)
    with pytest.raises(ValueError, match=rf"pm capacity: {size + 1} bytes is more than NUMA node {NODE} has "
                                         rf"\({size} bytes\)"):
        tiers.parse_pm(PM, size + 1)
    model = torch.nn.Linear(4, 4)
    with tt.enable(tt.Policy.uniform(model, "pm", "pm"), model, pm=PM):
        assert _C.pm_layout()["capacity"] == min(size, _C.SIM_MAX_CAPACITY)
        assert _C.pm_description() == f"NUMA node {NODE}, {min(size, _C.SIM_MAX_CAPACITY)} bytes, first fit"
    with tt.enable(tt.Policy.uniform(model, "pm", "pm"), model, pm=PM, pm_capacity="1MiB", fit="best"):
        assert _C.pm_layout()["capacity"] == 1 << 20
        assert _C.pm_description() == f"NUMA node {NODE}, 1048576 bytes, best fit"


def test_full_node_tier_falls_back_or_raises():
    model = torch.nn.Linear(512, 512)  # a 1 MiB weight, a 2 KiB bias
    before = tt.stats()["pm"]
    with tt.enable(tt.Policy.uniform(model, "pm", "pm"), model, pm=PM, pm_capacity="256KiB"):
        assert tt.tier_of(model.weight) == "dram" and tt.tier_of(model.bias) == "pm"
        assert tt.stats()["pm"]["fallbacks"] == before["fallbacks"] + 1
        layout = _C.pm_layout()
        assert tt.stats()["pm"]["live_bytes"] - before["live_bytes"] == layout["capacity"] - layout["free_bytes"]
        assert model.bias.data_ptr() % 256 == 0
    with pytest.raises(torch.OutOfMemoryError, match=rf"tier 'pm' \(NUMA node {NODE}, 262144 bytes, first fit\) "
                                                     r"is full"):
        tt.enable(tt.Policy.uniform(model, "pm", "pm"), model, pm=PM, pm_capacity="256KiB", on_full="error")
    assert not _C.enabled()
    assert tt.stats()["pm"]["failures"] == before["failures"] + 1


def test_node_lists_and_sizes_read_from_sysfs(tmp_path, monkeypatch):
    """Several nodes, ranges in has_memory, a CPU-only node missing from it: as the kernel writes them."""
    (tmp_path / "has_memory").write_text("0-2,5\n")
    (tmp_path / "node5").mkdir()
    (tmp_path / "node5" / "meminfo").write_text("Node 5 MemTotal:       1024 kB\nNode 5 MemFree:         512 kB\n")
    (tmp_path / "node5" / "cpulist").write_text("\n")  # CPU-less: a CXL expander
    (tmp_path / "node1").mkdir()
    (tmp_path / "node1" / "cpulist").write_text("0-3,8,10-11\n")
    monkeypatch.setattr(tiers, "NUMA_NODES", str(tmp_path))
    assert tiers.numa_nodes() == [0, 1, 2, 5]
    assert tiers.numa_node_cpus(1) == [0, 1, 2, 3, 8, 10, 11] and tiers.numa_node_cpus(5) == []
    assert tiers.numa_node_bytes(5) == 1 << 20
    assert tiers.parse_pm("numa:5", "1MiB").node == 5
    with pytest.raises(ValueError, match=r"NUMA node 3 does not exist or has no memory here \(nodes with memory: "
                                         r"0, 1, 2, 5;"):
        tiers.parse_pm("numa:3")
    (tmp_path / "has_memory").unlink()
    with pytest.raises(ValueError, match=r"nodes with memory: none"):
        tiers.parse_pm("numa:0")
