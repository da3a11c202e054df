"""A session moves storages, not tensors: whatever shares a storage before enable() shares one
inside the session and after close(), in its tier, with autograd's version counters kept."""

import pytest
import torch

import torch_tier as tt
from torch_tier import _C


class FusedQKV(torch.nn.Module):
    """Three Parameters that are views of one buffer, as fused-QKV layouts make them."""

    def __init__(self, dim: int = 16):
        super().__init__()
        torch.manual_seed(0)
        fused = torch.randn(3 * dim, dim)
        self.q = torch.nn.Parameter(fused[:dim])
        self.k = torch.nn.Parameter(fused[dim : 2 * dim])
        self.v = torch.nn.Parameter(fused[2 * dim :])
        self.register_buffer("scale", torch.tensor([0.5]))

    def forward(self, x):
        return (x @ self.q.T) * (x @ self.k.T) * self.scale + x @ self.v.T


def storage_of(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


def shared(model: FusedQKV) -> bool:
    return storage_of(model.q) == storage_of(model.k) == storage_of(model.v)


@pytest.mark.parametrize("weight", ["pm", "dram"])
def test_parameters_that_view_one_buffer_stay_one_storage(weight):
    model, x = FusedQKV(), torch.randn(4, 16)
    ref = model(x).detach()
    params = [model.q, model.k, model.v]
    assert shared(model)
    before = tt.stats()[weight]["live_bytes"]
    with tt.enable(tt.Policy.uniform(model, weight=weight, activation="dram"), model, pm="sim"):
        assert shared(model) and [model.q, model.k, model.v] == params  # the same objects
        assert all(tt.tier_of(p) == weight for p in params)
        assert [p.storage_offset() for p in params] == [0, 256, 512]
        # one copy of the 3 KiB buffer in the tier, not three, and the 4-byte `scale` in a block of its own
        granule = 256 if weight == "pm" else 64
        assert tt.stats()[weight]["live_bytes"] - before == 3 * 16 * 16 * 4 + granule
        old = model.q[0, 0].item()
        with torch.no_grad():
            model.q[0, 0] = 42.0  # a write through one view reaches the others' storage
        assert torch.empty(0).set_(model.k.untyped_storage())[0] == 42.0
        with torch.no_grad():
            model.q[0, 0] = old
        assert torch.equal(model(x).detach(), ref)
    assert shared(model) and all(tt.tier_of(p) is None for p in params)
    assert [p.storage_offset() for p in params] == [0, 256, 512]
    assert torch.equal(model(x).detach(), ref)


def test_tied_weights_stay_one_parameter_and_one_storage():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_positions=32, n_embd=32, n_layer=1, n_head=2)).eval()
    ids = torch.randint(0, 100, (1, 8))
    assert model.lm_head.weight is model.transformer.wte.weight
    with torch.no_grad():
        ref = model(ids).logits
    with tt.enable(tt.Policy.uniform(model, "pm", "pm"), model, pm="sim"):
        assert model.lm_head.weight is model.transformer.wte.weight
        assert tt.tier_of(model.lm_head.weight) == "pm"
        with torch.no_grad():
            assert torch.equal(model(ids).logits, ref)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert storage_of(model.lm_head.weight) == storage_of(model.transformer.wte.weight)
    assert tt.tier_of(model.lm_head.weight) is None


def test_version_counters_are_bumped_and_still_shared():
    """set_ on the storage bumps each tensor's version (autograd sees the move) and views of one
    buffer keep sharing their counter, unlike `tensor.data = ...`, which changes neither."""
    model = FusedQKV()
    before = model.q._version
    with tt.enable(tt.Policy.uniform(model, "pm", "pm"), model, pm="sim"):
        assert model.q._version > before
        moved = model.k._version
        with torch.no_grad():
            model.q.add_(0.0)
        assert model.k._version == moved + 1  # still one counter
    assert model.q._version > moved + 1


def test_placing_again_moves_only_what_changed():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 8))
    policy = tt.Policy.uniform(model, "dram", "dram")
    with tt.enable(policy, model, pm="sim") as session:
        addresses = [p.data_ptr() for p in model.parameters()]
        session._place_weights(policy.resolve(model))
        assert [p.data_ptr() for p in model.parameters()] == addresses  # nothing moved
        policy.nodes["1"] = tt.Placement(weight="pm", activation="dram")
        session._place_weights(policy.resolve(model))
        now = [p.data_ptr() for p in model.parameters()]
        assert now[:2] == addresses[:2] and now[2:] != addresses[2:]
        assert [tt.tier_of(p) for p in model.parameters()] == ["dram", "dram", "pm", "pm"]
    assert all(tt.tier_of(p) is None for p in model.parameters())


def test_weights_go_back_to_ordinary_memory_once_each():
    model = FusedQKV()
    before = tt.stats()["pm"]["live_bytes"]
    with tt.enable(tt.Policy.uniform(model, "pm", "pm"), model, pm="sim"):
        assert tt.stats()["pm"]["live_bytes"] > before
    assert shared(model) and _C.cpu_allocator_is_default()
    assert all(tt.tier_of(t) is None for t in [*model.parameters(), *model.buffers()])
    assert tt.stats()["pm"]["live_bytes"] == before
