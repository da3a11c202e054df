"""Policy files: round trip, and a clear error for every bad input."""

import json

import pytest
import torch

import torch_tier as tt
from torch_tier.policy import PolicyError


def test_round_trip(cnn, tmp_path):
    model, _ = cnn
    policy = tt.Policy.uniform(model, "pm", "dram", name="cnn")
    policy.nodes["0"] = tt.Placement("dram", "pm")
    policy.metadata["dram_budget"] = 1234
    policy.save(tmp_path / "p.json")
    loaded = tt.Policy.load(tmp_path / "p.json")
    assert loaded == policy
    assert loaded.for_node("0") == tt.Placement("dram", "pm")
    assert loaded.for_node("3") == tt.Placement("pm", "dram")
    loaded.check(model)


def test_resolve_inherits_from_innermost_listed(bert):
    model, _ = bert
    policy = tt.Policy(fingerprint=tt.fingerprint(model), default=tt.Placement("dram", "dram"),
                       nodes={"encoder.layer.0": tt.Placement("pm", "pm")})
    placements = policy.resolve(model)
    assert placements["encoder.layer.0.attention.self.query"] == tt.Placement("pm", "pm")
    assert placements["encoder.layer.1.output.dense"] == tt.Placement("dram", "dram")


def write(tmp_path, text):
    path = tmp_path / "bad.json"
    path.write_text(text)
    return path


def test_malformed_json_names_file_and_position(tmp_path):
    path = write(tmp_path, '{"format": "torch-tier-policy",\n  "version": 1,,}')
    with pytest.raises(PolicyError, match=rf"{path}:2:16: malformed JSON"):
        tt.Policy.load(path)


def test_not_utf8_names_file(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes('{"format": "torch-tier-policy", "model": {"name": "caf\xe9"}}'.encode("latin-1"))
    with pytest.raises(PolicyError, match=rf"{path}: not UTF-8 text \(byte 54 is 0xe9\)"):
        tt.Policy.load(path)


def test_split_round_trip_saves_version_2(cnn, tmp_path):
    model, _ = cnn
    policy = tt.Policy.uniform(model, "pm", "dram", name="cnn")
    policy.nodes["0"] = tt.Placement(0.375, "pm")
    policy.nodes["3"] = tt.Placement("dram", 1 / 3)
    policy.save(tmp_path / "p.json")
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["version"] == 2 and data["nodes"]["0"] == {"weight": {"dram": 0.375}, "activation": "pm"}
    loaded = tt.Policy.load(tmp_path / "p.json")
    assert loaded == policy and loaded.split
    assert loaded.for_node("3").share("activation") == 1 / 3 and loaded.for_node("3").share("activation", "pm") == pytest.approx(2 / 3)


def test_whole_policy_saves_version_1_and_version_1_loads(cnn, tmp_path):
    model, _ = cnn
    policy = tt.Policy.uniform(model, "pm", "dram")
    policy.nodes["0"] = tt.Placement(1.0, 0)  # shares of 1 and 0 are the tiers themselves
    assert policy.nodes["0"] == tt.Placement("dram", "pm") and not policy.split
    policy.save(tmp_path / "p.json")
    assert json.loads((tmp_path / "p.json").read_text())["version"] == 1
    assert tt.Policy.load(tmp_path / "p.json") == policy


def test_missing_file(tmp_path):
    with pytest.raises(PolicyError, match="cannot read policy file"):
        tt.Policy.load(tmp_path / "nope.json")


@pytest.mark.parametrize("change, message", [
    ({"format": "other"}, "'format' is 'other'"),
    ({"version": 3}, "unsupported version 3"),
    ({"version": True}, "unsupported version True"),
    ({"version": 1.0}, "unsupported version 1.0"),
    ({"version": "1"}, "unsupported version '1'"),
    ({"default": {"weight": {"dram": 1.5}}, "version": 2}, r"default.weight.dram: 1.5 is not a share"),
    ({"nodes": {"0": {"activation": {"dram": -0.25}}}, "version": 2}, r"nodes\['0'\].activation.dram: -0.25"),
    ({"nodes": {"0": {"weight": {"dram": True}}}, "version": 2}, r"nodes\['0'\].weight.dram: True is not a share"),
    ({"nodes": {"0": {"weight": {"dram": "half"}}}, "version": 2}, r"weight.dram: 'half' is not a share"),
    ({"nodes": {"0": {"weight": {"pm": 0.5}}}, "version": 2}, r"weight: a split must be \{\"dram\": share\}"),
    ({"nodes": {"0": {"weight": 0.5}}, "version": 2}, r"nodes\['0'\].weight: 0.5: write a tier name, or a split"),
    ({"nodes": {"0": {"weight": {"dram": 0.5}}}}, "split placements need version 2; the file says version 1"),
    ({"model": "x"}, "'model' must be an object"),
    ({"nodes": []}, "'nodes' must be an object"),
    ({"default": {"weight": "hbm"}}, r"default.weight: unknown tier 'hbm'"),
    ({"nodes": {"0": {"activation": "nvme"}}}, r"nodes\['0'\].activation: unknown tier 'nvme'"),
    ({"nodes": {"0": {"wieght": "pm"}}}, r"unknown field\(s\) \['wieght'\]"),
])
def test_bad_fields(cnn, tmp_path, change, message):
    model, _ = cnn
    data = tt.Policy.uniform(model).to_dict() | change
    path = write(tmp_path, json.dumps(data))
    with pytest.raises(PolicyError, match=message):
        tt.Policy.load(path)


def test_fingerprint_mismatch_lists_missing_and_extra(cnn):
    model, _ = cnn
    policy = tt.Policy.uniform(model)
    other = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    with pytest.raises(PolicyError, match=r"missing nodes: .*extra nodes: .*'2', '3'"):
        policy.check(other)


def test_same_paths_other_shapes(cnn):
    model, _ = cnn
    policy = tt.Policy.uniform(model)
    bigger = torch.nn.Sequential(*[torch.nn.Linear(4, 4) if isinstance(m, torch.nn.Linear) else m for m in model])
    with pytest.raises(PolicyError, match="parameter shapes differ"):
        policy.check(bigger)


def test_unknown_node_name(cnn):
    model, _ = cnn
    policy = tt.Policy.uniform(model)
    policy.nodes["layer9.conv"] = tt.Placement()
    with pytest.raises(PolicyError, match="do not exist in the model: 'layer9.conv'"):
        policy.check(model)
    with pytest.raises(PolicyError):
        tt.enable(policy, model, pm="sim")


@pytest.mark.parametrize("kwargs, message", [
    ({"pm": "nvme"}, "cannot read 'nvme'"),
    ({"pm": "sim:optane-999"}, "unknown device profile 'optane-999'"),
    ({"pm": "sim", "on_full": "panic"}, "on_full"),
    ({"pm": "sim", "fit": "good"}, "unknown rule 'good'"),
    ({"pm": "sim", "pm_capacity": "lots"}, "cannot read 'lots' as a byte count"),
])
def test_bad_enable_arguments_change_nothing(cnn, kwargs, message):
    model, _ = cnn
    with pytest.raises(ValueError, match=message):
        tt.enable(tt.Policy.uniform(model), model, **kwargs)
    assert not tt._C.enabled()
    assert all(tt.tier_of(p) is None for p in model.parameters())
