"""Device profiles, their scaling to this host, and host calibration."""

import argparse
import json
from dataclasses import fields, replace

import pytest

from torch_tier import devices, host

SLOW_TIERS = ["optane-100", "optane-100-1dimm", "cxl"]


def test_profiles_load():
    assert set(devices.names()) >= {"dram", *SLOW_TIERS}
    for name in devices.names():
        p = devices.load(name)
        assert p.name == name and p.description
        assert all(getattr(p, f.name) > 0 for f in fields(devices.Figures))
        assert p.seq_latency_ns <= p.rand_latency_ns


def test_every_figure_has_a_source():
    for name in devices.names():
        p = devices.load(name)
        assert set(p.sources) == {f.name for f in fields(devices.Figures)}
        assert all(len(s) > 40 for s in p.sources.values()), p.sources


@pytest.mark.parametrize("name", SLOW_TIERS)
def test_slow_tiers_are_slower_than_dram(name):
    p, dram = devices.load(name), devices.reference()
    assert p.seq_latency_ns > dram.seq_latency_ns and p.rand_latency_ns > dram.rand_latency_ns
    assert p.read_bw_gbs < dram.read_bw_gbs and p.write_bw_gbs < dram.write_bw_gbs
    assert p.granularity_bytes >= dram.granularity_bytes


def test_unknown_profile_lists_known_ones():
    with pytest.raises(ValueError, match="optane-100"):
        devices.load("optane-300")


HOST = devices.HostMemory(
    read_bw_gbs=20.0, write_bw_gbs=10.0, latency_ns=150.0,
    buffer_bytes=1 << 28, machine="test", measured_at="2025-01-01T00:00:00+00:00",
)  # fmt: skip


def test_scaling_keeps_ratios_to_reference_dram():
    dram = devices.scaled("dram", HOST)
    assert (dram.rand_latency_ns, dram.read_bw_gbs, dram.write_bw_gbs) == (150.0, 20.0, 10.0)
    ref, pm = devices.reference(), devices.load("optane-100")
    s = devices.scaled("optane-100", HOST)
    assert s.host == HOST and s.granularity_bytes == pm.granularity_bytes
    assert s.read_bw_gbs / HOST.read_bw_gbs == pytest.approx(pm.read_bw_gbs / ref.read_bw_gbs)
    assert s.write_bw_gbs / HOST.write_bw_gbs == pytest.approx(pm.write_bw_gbs / ref.write_bw_gbs)
    assert s.rand_latency_ns / HOST.latency_ns == pytest.approx(pm.rand_latency_ns / ref.rand_latency_ns)
    assert s.seq_latency_ns / dram.seq_latency_ns == pytest.approx(pm.seq_latency_ns / ref.seq_latency_ns)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_TIER_CACHE", str(tmp_path))
    return tmp_path


def test_calibration_is_plausible_and_cached(cache_dir, monkeypatch):
    mem = host.host()
    assert 1 < mem.read_bw_gbs < 1000 and 1 < mem.write_bw_gbs < 1000
    assert 20 < mem.latency_ns < 2000
    assert host.cache_path() == cache_dir / "host.json"
    assert json.loads((cache_dir / "host.json").read_text())["latency_ns"] == mem.latency_ns

    def no_measure():
        raise AssertionError("measured again despite a valid cache")

    monkeypatch.setattr(host, "measure", no_measure)
    assert host.host() == mem


def test_calibration_remeasures_when_asked_or_cache_is_not_this_machines(cache_dir, monkeypatch):
    fresh = replace(HOST, machine="this")
    monkeypatch.setattr(host, "measure", lambda: fresh)
    monkeypatch.setattr(host.platform, "node", lambda: "this")
    (cache_dir / "host.json").write_text(json.dumps({**HOST.__dict__, "machine": "other"}))
    assert host.host() == fresh
    (cache_dir / "host.json").write_text("{not json")
    assert host.host() == fresh
    assert host.host(recalibrate=True) == fresh


def test_host_command_prints_every_scaled_profile(cache_dir, monkeypatch, capsys):
    monkeypatch.setattr(host, "measure", lambda: HOST)
    parser = argparse.ArgumentParser(prog="torch-tier")
    host.add_parser(parser.add_subparsers())
    args = parser.parse_args(["host", "--recalibrate"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "150.0 ns" in out
    assert all(name in out for name in devices.names())
