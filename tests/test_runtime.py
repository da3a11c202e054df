"""enable(): placement of weights and activations, bit-identical results, sessions."""

import os
import resource
import subprocess
import sys
import threading

import pytest
import torch

import torch_tier as tt
from torch_tier import _C, memkind, tiers

# CI installs libmemkind0 (.ci/run -> make test): there a missing library fails these tests instead of skipping them.
if os.environ.get("CI") == "true" and not memkind.available():
    raise RuntimeError("CI=true but libmemkind0 is not installed: the memkind tests cannot run")
needs_memkind = pytest.mark.skipif(
    not memkind.available(), reason="libmemkind0 is not installed (apt-get install libmemkind0)"
)


def mixed_policy(model: torch.nn.Module) -> tt.Policy:
    """Every other leaf's weights and activations on pm."""
    policy = tt.Policy.uniform(model)
    leaves = [n for n, m in model.named_modules() if next(m.children(), None) is None]
    for i, name in enumerate(leaves):
        policy.nodes[name] = tt.Placement(weight="pm" if i % 2 else "dram", activation="pm" if i % 3 else "dram")
    return policy


def forward(model, x):
    with torch.no_grad():
        out = model(x)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out


@pytest.mark.parametrize("make", ["cnn", "bert"])
@pytest.mark.parametrize("policy_kind", ["all-dram", "mixed", "all-pm"])
def test_outputs_bit_identical(make, policy_kind, request):
    model, x = request.getfixturevalue(make)
    ref = forward(model, x)
    policy = {"all-dram": tt.Policy.uniform(model), "mixed": mixed_policy(model),
              "all-pm": tt.Policy.uniform(model, "pm", "pm")}[policy_kind]
    with tt.enable(policy, model, pm="sim"):
        out = forward(model, x)
    assert torch.equal(out, ref)
    assert torch.equal(forward(model, x), ref)  # and after close


@pytest.mark.parametrize("make", ["cnn", "bert"])
def test_weights_and_activations_in_their_tiers(make, request):
    model, x = request.getfixturevalue(make)
    policy = mixed_policy(model)
    params = {id(p): p for p in model.parameters()}
    seen: dict[str, list[str | None]] = {}

    def record(name):
        def hook(_module, args, out):
            out = out if torch.is_tensor(out) else out[0]
            if not any(torch.is_tensor(a) and a.data_ptr() == out.data_ptr() for a in args):  # not a pass-through
                seen.setdefault(name, []).append(tt.tier_of(out))
        return hook

    handles = [m.register_forward_hook(record(n)) for n, m in model.named_modules()
               if next(m.children(), None) is None and policy.nodes[n].activation == "pm"]
    with tt.enable(policy, model, pm="sim"):
        placements = policy.resolve(model)
        for name, module in model.named_modules():
            for t in list(module._parameters.values()) + list(module._buffers.values()):
                if t is not None and id(t) in params:
                    assert tt.tier_of(t) == placements[name].weight, name
        forward(model, x)
    for h in handles:
        h.remove()
    assert seen and all(tier == "pm" for tiers in seen.values() for tier in tiers), seen


def test_all_pm_bert_every_forward_allocation_on_pm(bert):
    model, x = bert
    with tt.enable(tt.Policy.uniform(model, "pm", "pm"), model, pm="sim"):
        _C.start_trace()
        forward(model, x)
        events = _C.stop_trace()
    allocs = [e for e in events if not e[5]]
    assert len(allocs) > 50  # embeddings, attention scores, softmax, MLPs ...
    assert {e[4] for e in allocs} == {tt.tiers.PM}


def test_live_bytes_match_the_tensors(bert):
    model, _ = bert
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in list(model.parameters()) + list(model.buffers())}
    before = tt.stats()
    with tt.enable(tt.Policy.uniform(model, weight="pm", activation="dram"), model, pm="sim"):
        during = tt.stats()
        assert during["pm"]["live_bytes"] - before["pm"]["live_bytes"] == sum(storages.values())
        assert during["dram"]["live_bytes"] == before["dram"]["live_bytes"]
    assert tt.stats()["pm"]["live_bytes"] == before["pm"]["live_bytes"]


def test_same_parameter_objects_and_values_restored(cnn):
    model, _ = cnn
    params = list(model.parameters())
    values = [p.detach().clone() for p in params]
    with tt.enable(tt.Policy.uniform(model, "pm", "pm"), model, pm="sim"):
        assert all(a is b for a, b in zip(params, model.parameters()))
    assert all(tt.tier_of(p) is None and torch.equal(p, v) for p, v in zip(model.parameters(), values))


def test_tier_of_foreign_tensor_is_none():
    assert tt.tier_of(torch.ones(3)) is None


def test_policy_path_accepted(cnn, tmp_path):
    model, x = cnn
    path = tmp_path / "p.json"
    tt.Policy.uniform(model, "pm", "pm").save(path)
    with tt.enable(str(path), model, pm="sim"):
        assert tt.tier_of(forward(model, x)) == "pm"


def test_enable_twice_is_an_error(cnn):
    model, _ = cnn
    with tt.enable(tt.Policy.uniform(model), model, pm="sim"):
        with pytest.raises(RuntimeError, match="already enabled"):
            tt.enable(tt.Policy.uniform(model), model, pm="sim")


def test_default_pm_from_environment(cnn, monkeypatch):
    model, _ = cnn
    monkeypatch.delenv("TORCH_TIER_PM", raising=False)
    with pytest.warns(UserWarning, match="no slow memory configured"):
        tt.enable(tt.Policy.uniform(model), model).close()
    monkeypatch.setenv("TORCH_TIER_PM", "sim:cxl")
    with tt.enable(tt.Policy.uniform(model), model) as session:
        assert str(session.pm) == "sim:cxl"


def test_pm_full_falls_back_and_counts(cnn):
    model, x = cnn
    ref = forward(model, x)
    before = tt.stats()["pm"]["fallbacks"]
    with tt.enable(tt.Policy.uniform(model, "pm", "pm"), model, pm="sim", pm_capacity=4096):
        out = forward(model, x)
        assert tt.stats()["pm"]["fallbacks"] > before
    assert torch.equal(out, ref)


def test_pm_full_error_raises_and_process_stays_usable(cnn):
    model, x = cnn
    ref = forward(model, x)
    policy = tt.Policy.uniform(model, "dram", "pm")
    with tt.enable(policy, model, pm="sim", pm_capacity=8192, on_full="error"):
        with pytest.raises(torch.OutOfMemoryError, match=r"tier 'pm'.*is full: cannot allocate \d+ bytes"):
            forward(model, x)
        assert _C.get_tier() == tt.tiers.DRAM  # the hooks unwound
    with pytest.raises(torch.OutOfMemoryError):  # weights that do not fit: enable undoes itself
        tt.enable(tt.Policy.uniform(model, "pm", "dram"), model, pm="sim", pm_capacity=4096, on_full="error")
    assert not _C.enabled()
    assert torch.equal(forward(model, x), ref)
    with tt.enable(policy, model, pm="sim"):
        assert torch.equal(forward(model, x), ref)


def test_four_threads_in_one_session(bert):
    """Each thread's forwards allocate in the tiers the policy names, byte for byte as a lone forward does:
    the thread-local tier of one thread never leaks into another's."""
    model, x = bert
    ref = forward(model, x)
    errors: list[BaseException] = []
    seen: list[tuple[tuple[int, int], str]] = []

    def one_forward() -> tuple[tuple[int, int], str]:
        before = _C.thread_allocated(tiers.DRAM), _C.thread_allocated(tiers.PM)
        out = forward(model, x)
        assert torch.equal(out, ref)
        after = _C.thread_allocated(tiers.DRAM), _C.thread_allocated(tiers.PM)
        return (after[0] - before[0], after[1] - before[1]), tt.tier_of(out)

    def run():
        try:
            for _ in range(10):
                seen.append(one_forward())
        except BaseException as err:  # reported below, from the main thread
            errors.append(err)

    with tt.enable(mixed_policy(model), model, pm="sim"):
        expected = one_forward()
        threads = [threading.Thread(target=run) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors
    (dram, pm), _ = expected
    assert dram > 0 and pm > 0  # the policy really splits the activations
    assert seen == [expected] * 40


@needs_memkind
def test_memkind_pmem_on_dev_shm(cnn):
    model, x = cnn
    ref = forward(model, x)
    with tt.enable(tt.Policy.uniform(model, "pm", "pm"), model, pm="memkind:/dev/shm") as session:
        out = forward(model, x)
        assert tt.tier_of(out) == "pm" and all(tt.tier_of(p) == "pm" for p in model.parameters())
        assert "memkind pmem in /dev/shm" in _C.pm_description()
        assert str(session.pm) == "memkind:/dev/shm"
    assert torch.equal(out, ref)


@needs_memkind
def test_memkind_pmem_capacity_falls_back():
    model = torch.nn.Linear(2048, 2048)  # 16 MiB of weights, as much as the whole kind
    before = tt.stats()["pm"]["fallbacks"]
    with tt.enable(tt.Policy.uniform(model, "pm", "pm"), model, pm="memkind:/dev/shm", pm_capacity="16MiB"):
        assert tt.stats()["pm"]["fallbacks"] > before
        assert tt.tier_of(model.weight) == "dram"


@needs_memkind
def test_memkind_kmem_with_node_zero():
    script = (
        "import torch, torch_tier as tt\n"
        "m = torch.nn.Linear(64, 8); x = torch.randn(4, 64); ref = m(x)\n"
        "with tt.enable(tt.Policy.uniform(m, 'pm', 'pm'), m, pm='kmem'):\n"
        "    y = m(x)\n"
        "    assert tt.tier_of(y) == 'pm' and tt.tier_of(m.weight) == 'pm'\n"
        "assert torch.equal(y, ref)\n"
        "print('ok')\n"
    )
    env = dict(os.environ, MEMKIND_DAX_KMEM_NODES="0")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_memkind_missing_directory_is_clear():
    if not memkind.available():
        pytest.skip("libmemkind0 is not installed (apt-get install libmemkind0)")
    with pytest.raises(memkind.MemkindUnavailable, match="does not exist"):
        tt.enable(tt.Policy.uniform(torch.nn.Linear(2, 2)), torch.nn.Linear(2, 2), pm="memkind:/no/such/dir")
    assert not _C.enabled()


@needs_memkind
def test_memkind_forwards_reuse_their_pages(one_thread):
    """memkind's jemalloc gave freed extents back to the file (MADV_REMOVE) as they aged: a
    ResNet-50 forward at 112 px faulted 4,400 pages in again every time, on the same memory
    that DRAM serves with none. With decay off the kind keeps them."""
    from torch_tier import zoo

    work = zoo.build("resnet50", image_size=112)
    model, inputs = work.model, work.inputs
    with torch.no_grad(), tt.enable(tt.Policy.uniform(model, "pm", "pm"), model, pm="memkind:/dev/shm"):
        for _ in range(3):
            model(*inputs)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(3):
            model(*inputs)
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3
    assert faults < 100, f"{faults} page faults per forward on memkind"
