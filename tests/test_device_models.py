"""Device models: the emulated tier hands each call's real traffic to a model the planner need not know."""

import dataclasses
import json
import subprocess
import sys
import time
from collections import defaultdict

import numpy as np
import pytest
import torch

import torch_tier as tt
from torch_tier import cost_model, device_models, devices, tiers
from torch_tier.runtime import Session
from torch_tier.traffic import Traffic, TrafficStream

SEEN: list[Traffic] = []


def recording_model(traffic: Traffic) -> float:
    """A module-level device model: records what it is shown, charges nothing."""
    SEEN.append(traffic)
    return 0.0


def linear_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 512), torch.nn.ReLU(), torch.nn.Linear(512, 64)).eval()
    return model, torch.randn(8, 256)


def test_a_registered_model_sees_each_calls_streams_in_their_tiers(registered):
    model, x = linear_model()
    tt.register_device("recorder", recording_model)
    policy = tt.Policy.uniform(model)
    policy.nodes["0"] = tt.Placement(weight="pm", activation="pm")  # first layer: weights and output in pm
    SEEN.clear()
    with tt.enable(policy, model, pm="sim:recorder"), torch.no_grad():
        model(x)
    calls = {t.path: t for t in SEEN}
    assert set(calls) >= {"0", "1", "2"}
    first, relu = calls["0"], calls["1"]
    weight_bytes = (256 * 512 + 512) * 4
    assert TrafficStream(weight_bytes, tier="pm", extent=weight_bytes) in first.streams
    assert TrafficStream(8 * 256 * 4, tier="dram") in first.streams  # the input, made before the session
    assert TrafficStream(8 * 512 * 4, write=True, tier="pm") in first.streams  # its output, in its tier
    assert TrafficStream(8 * 512 * 4, tier="pm") in relu.streams  # the ReLU reads that output from pm
    assert all(t.seconds > 0 and t.threads == torch.get_num_threads() for t in SEEN)


def test_the_extra_a_model_returns_is_spun(registered):
    """A forward lasts at least what the model charges (noise only ever adds), and the charge is recorded."""
    model, x = linear_model()
    tt.register_device("slow", lambda traffic: 5e-3 if traffic.path == "2" else 0.0)
    charged = []
    with Session(tt.Policy.uniform(model), model, tiers.parse_pm("sim:slow"), "fallback",
                 recorder=lambda path, own, extra: charged.append((path, extra))), torch.no_grad():
        for _ in range(3):
            start = time.perf_counter()
            model(x)
            assert time.perf_counter() - start >= 5e-3
    assert [extra for path, extra in charged if path == "2"] == [5e-3] * 3
    assert all(extra == 0.0 for path, extra in charged if path != "2")


@pytest.mark.parametrize("bad", [-1e-3, float("nan")])
def test_a_model_returning_a_bad_extra_is_named(registered, bad):
    model, x = linear_model()
    tt.register_device("broken", lambda traffic: bad)
    with tt.enable(tt.Policy.uniform(model), model, pm="sim:broken"), torch.no_grad():
        with pytest.raises(ValueError, match="device model .* returned"):
            model(x)


def test_register_device_rejects_bad_names_and_models(registered):
    with pytest.raises(ValueError, match="built-in profile"):
        tt.register_device("optane-100", recording_model)
    with pytest.raises(TypeError, match="callable"):
        tt.register_device("x", 3)
    with pytest.raises(ValueError, match="unknown device profile 'nothing'"):
        tiers.parse_pm("sim:nothing")


def test_builtin_profile_is_the_cost_model():
    cost = cost_model.cost_model("optane-100")
    traffic = Traffic("n", 1e-4, 1, (TrafficStream(1 << 20, tier="pm"), TrafficStream(1 << 20, write=True, tier="pm"),
                                     TrafficStream(1 << 16, tier="dram")))
    pm_extra = cost.read_extra(1 << 20) + cost.write_extra(1 << 20)
    dram = cost.dram_read((1 << 20) + (1 << 16)) + cost.dram_write(1 << 20)
    assert cost.call_extra(traffic) == pytest.approx(cost_model.overlapped(pm_extra, 1e-4, dram))


def test_profile_file(tmp_path):
    data = json.loads((devices.resources.files("torch_tier") / "data/devices.json").read_text())
    entry = json.loads(json.dumps(data["profiles"]["optane-100"]))
    entry["write_bw_gbs"]["value"] = 3.0
    path = tmp_path / "slow-writes.json"
    path.write_text(json.dumps({"profiles": {"slow-writes": entry}}))
    spec = tiers.parse_pm(f"sim:{path}")
    assert devices.load(spec.profile).write_bw_gbs == 3.0 and devices.assumed_profile(spec.profile) == str(path)
    slower = cost_model.cost_model(str(path)).write_extra(1 << 20)
    assert slower > 3 * cost_model.cost_model("optane-100").write_extra(1 << 20)
    del entry["read_bw_gbs"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"profiles": {"bad": entry}}))
    with pytest.raises(ValueError, match=r"bad.json: profile 'bad' field 'read_bw_gbs'"):
        tiers.parse_pm(f"sim:{bad}")
    (tmp_path / "torn.json").write_text("{")
    with pytest.raises(ValueError, match="torn.json: cannot read"):
        tiers.parse_pm(f"sim:{tmp_path / 'torn.json'}")


def traffic_of(*streams: TrafficStream, seconds: float = 1e-5) -> Traffic:
    return Traffic("n", seconds, 1, streams)


def test_mixed_reads_and_writes_pay_a_penalty():
    model = device_models.MixedReadWrite(penalty=2.0)
    cost = model.cost
    read, write = TrafficStream(1 << 20, tier="pm"), TrafficStream(1 << 18, write=True, tier="pm")
    assert model(traffic_of(read)) == pytest.approx(cost.call_extra(traffic_of(read)))
    both = traffic_of(read, write)
    penalty = 2.0 * min(cost.seconds(read, cost.pm), cost.seconds(write, cost.pm))
    assert model(both) == pytest.approx(cost.call_extra(both) + penalty) and penalty > 0


def test_activations_that_fit_the_cache_never_reach_the_device():
    model = device_models.Cached(cache_bytes=1 << 20)
    small_write, large_write = TrafficStream(1 << 19, write=True, tier="pm"), TrafficStream(4 << 20, write=True, tier="pm")
    small_read = TrafficStream(1 << 19, tier="pm")
    assert model(traffic_of(small_write, small_read)) == 0.0
    assert model(traffic_of(large_write)) == pytest.approx(model.cost.call_extra(traffic_of(large_write)))
    weights = TrafficStream(1 << 19, tier="pm", extent=1 << 19)  # small, but flushed since the last forward
    assert model(traffic_of(weights)) == pytest.approx(model.cost.call_extra(traffic_of(weights)))
    assert model(traffic_of(weights)) > 0
    rows = TrafficStream(64 * 100, accesses=100, random=True, tier="pm", extent=4 << 20)
    no_compute = traffic_of(rows, seconds=0.0)  # nothing to hide behind: the extra is linear in the misses
    assert model(no_compute) == pytest.approx(0.75 * model.cost.call_extra(no_compute))


def test_write_bandwidth_falls_with_writers():
    assert device_models.WriteThreads.write_bandwidth(4) == 12.5
    assert device_models.WriteThreads.write_bandwidth(24) == 7.5
    assert device_models.WriteThreads.write_bandwidth(14) == pytest.approx(10.0)
    model = device_models.WriteThreads(writers=24)
    base = cost_model.cost_model(model.profile)
    writes = traffic_of(TrafficStream(1 << 24, write=True, tier="pm"), seconds=0.0)
    assert model(writes) > base.call_extra(writes) * 1.5


@pytest.mark.parametrize("name", sorted(devices.SHIPPED_MODELS))
def test_shipped_models_run_by_name(name):
    model = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.ReLU()).eval()  # 4 MiB: past any cache
    x = torch.randn(64, 1024)
    charged = defaultdict(float)
    with Session(tt.Policy.uniform(model, weight="pm", activation="pm"), model, tiers.parse_pm(f"sim:{name}"),
                 "fallback", recorder=lambda path, own, extra: charged.__setitem__(path, charged[path] + extra)):
        with torch.no_grad():
            model(x)
    assert sum(charged.values()) > 0
    assert devices.assumed_profile(name) == "optane-100"


def test_worker_registers_a_model_by_reference(registered):
    """A local worker gets the trainer's registered models on its command line and resolves them."""
    tt.register_device("recorder", recording_model)
    assert devices.registered_references() == {"recorder": f"{__name__}:recording_model"}
    code = ("from torch_tier.trainer import cli; import argparse, sys\n"
            "p = argparse.ArgumentParser(); cli.add_parser(p.add_subparsers())\n"
            "a = p.parse_args(['worker', '--connect', 'tcp://127.0.0.1:9', '--device', 'r=json:nope'])\n"
            "sys.exit(a.func(a))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode != 0 and "json:nope" in out.stderr


def test_graph_traffic_priced_by_the_cost_model_is_its_prediction(cnn):
    """traffic.graph_traffic (the offline view a device model can be analysed on) moves what the cost model
    prices: summed over the graph, the built-in device model gives exactly predict()'s latency."""
    from torch_tier.graph_capture import capture
    from torch_tier.traffic import graph_traffic

    model, x = cnn
    graph = capture(model, x, repeats=1)
    cost = cost_model.cost_model("optane-100")
    rng = np.random.default_rng(0)
    for _ in range(5):
        array = rng.integers(0, 2, size=(len(graph.nodes), 2)).astype(np.int8)
        offline = graph.base_time + sum(cost.call_extra(t) for t in graph_traffic(graph, array))
        assert offline == pytest.approx(cost_model.graph_costs(graph, "optane-100").latency(array), rel=1e-12)


def test_cost_model_with_parallel_tiers_prices_cxl_loaded_exactly(cnn):
    """The cost model's parallel-tier structure (GraphCosts.dram_share) is cxl-loaded's: over the graph's
    traffic the device model gives the same latency for whole placements wherever its clip at 0 does not
    bind, and the default structure (tiers adding) does not."""
    from torch_tier.graph_capture import capture
    from torch_tier.traffic import graph_traffic

    model, x = cnn
    graph = capture(model, x, repeats=1)
    device = device_models.LoadedDram()
    parallel = dataclasses.replace(cost_model.graph_costs(graph, device.profile), dram_share=device.dram_share)
    adding = cost_model.graph_costs(graph, device.profile)
    rng = np.random.default_rng(0)
    for _ in range(5):
        array = rng.integers(0, 2, size=(len(graph.nodes), 2)).astype(np.int8)
        offline = graph.base_time + sum(device(t) for t in graph_traffic(graph, array))
        assert offline == pytest.approx(parallel.latency(array), rel=1e-9)
        assert offline != pytest.approx(adding.latency(array), rel=1e-3)
