"""The shipped policies (policies/*.json, written by policies/make.py): each loads, is for its zoo
model at the default size, and respects its DRAM budget."""

import functools
from pathlib import Path

import pytest
import torch

import torch_tier
from torch_tier import Policy, zoo

POLICIES = Path(__file__).resolve().parents[1] / "policies"
FILES = sorted(POLICIES.glob("*.json"))
BIG = {"bert-base", "dlrm", "wide_resnet101_2"}  # building them at the default size took more than 5 s
BUDGETS = {"25": "25%", "50": "50%"}


def _model_of(path: Path) -> str:
    return path.stem.rsplit("-", 1)[0]


def _param(path: Path, always_slow: bool = False) -> object:
    slow = always_slow or _model_of(path) in BIG
    return pytest.param(path, id=path.stem, marks=[pytest.mark.slow] if slow else [])


@functools.lru_cache(maxsize=1)
def _build(name: str) -> zoo.Workload:
    return zoo.build(name)


def test_every_model_and_budget_is_shipped():
    shipped = {p.stem for p in FILES}
    missing = {f"{m}-{b}" for m in zoo.names() if m not in zoo.GENERATION for b in BUDGETS} - shipped
    assert not missing, f"no shipped policy for {sorted(missing)}: run policies/make.py"


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_policy_loads_with_its_metadata(path):
    policy = Policy.load(path)
    meta = policy.metadata
    model, pct = path.stem.rsplit("-", 1)
    assert meta["model"] == model and policy.model_name == model
    assert meta["budget"] == BUDGETS[pct]
    assert meta["device"] == "optane-100" and meta["pm"] == "sim:optane-100"
    assert meta["fitness"] == "model" and meta["trainer"]["seed"] == 0
    assert meta["trainer"]["evaluations"] == meta["evaluations"] > 0
    assert meta["predicted_latency"] > 0
    # measured, or an explicit reason why not: never an invented number
    assert (meta["measured_latency"] is None) == (not meta["measured_samples"])
    assert meta["measured_latency"] is not None or meta["measured_note"].startswith("not measured")
    assert set(policy.nodes) and all(p.weight in ("dram", "pm") and p.activation in ("dram", "pm")
                                     for p in policy.nodes.values())


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_policy_respects_its_budget(path):
    meta = Policy.load(path).metadata
    assert 0 < meta["dram_bytes"] == meta["footprint"]["dram"] <= meta["budget_bytes"] == meta["dram_budget"]
    share = int(meta["budget"].rstrip("%")) / 100
    assert abs(meta["budget_bytes"] - meta["all_dram_bytes"] * share) <= 1  # the budget is that share of all-DRAM


@pytest.mark.parametrize("path", [_param(p) for p in FILES])
def test_policy_matches_its_zoo_model(path):
    policy = Policy.load(path)
    work = _build(_model_of(path))
    policy.check(work.model)  # raises PolicyError on another model's fingerprint
    assert policy.fingerprint == torch_tier.fingerprint(work.model)


@pytest.mark.parametrize("path", [_param(p, always_slow=True) for p in FILES])
def test_policy_fits_the_recaptured_graph(path):
    """Captured again with the thread count it was made with (ResNet-50's convolutions
    allocate more, and differently, with more intra-op threads), it is within budget."""
    policy = Policy.load(path)
    work = _build(_model_of(path))
    threads = torch.get_num_threads()
    torch.set_num_threads(policy.metadata["trainer"]["torch_threads"])
    try:
        graph = torch_tier.capture(work.model, work.inputs, name=_model_of(path))
    finally:
        torch.set_num_threads(threads)
    assert graph.footprint(policy)["dram"] <= policy.metadata["budget_bytes"]
