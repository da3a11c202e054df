"""Device profiles of memory tiers, and their scaling to this host.

``data/devices.json`` holds published figures for each device (latency,
bandwidth, access granularity), each with its source. Those figures were
measured on other servers, so a profile is never used as absolute numbers:
it is read as ratios to the reference DRAM profile (``dram``, the DRAM of the
server the papers measured) and applied to this host's own DRAM as measured
by :mod:`torch_tier.host` (:func:`scaled`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from functools import cache
from importlib import resources
from typing import Any, Mapping


@dataclass(frozen=True)
class HostMemory:
    """This host's DRAM as torch_tier.host measured it (single thread)."""

    read_bw_gbs: float
    write_bw_gbs: float
    latency_ns: float
    buffer_bytes: int
    machine: str
    measured_at: str



@dataclass(frozen=True)
class Figures:
    """Performance of one memory tier (units in ``data/devices.json``)."""

    seq_latency_ns: float
    rand_latency_ns: float
    read_bw_gbs: float
    write_bw_gbs: float
    granularity_bytes: int


@dataclass(frozen=True)
class DeviceProfile(Figures):
    """A device's published figures; ``sources`` cites each figure by field name."""

    name: str
    description: str
    sources: Mapping[str, str] = field(hash=False)
    notes: str = ""


@dataclass(frozen=True)
class ScaledProfile(Figures):
    """A device's effective figures on this host: its ratios to the reference
    DRAM applied to the host's measured DRAM."""

    name: str
    host: HostMemory


@cache
def _data() -> dict[str, Any]:
    return json.loads(resources.files("torch_tier").joinpath("data/devices.json").read_text())


def names() -> list[str]:
    """The names of the known device profiles."""
    return list(_data()["profiles"])


def reference() -> DeviceProfile:
    """The DRAM profile every other profile is a ratio to."""
    return load(_data()["reference"])


def load(name: str) -> DeviceProfile:
    """The profile called ``name``, each figure with its source spelled out."""
    data = _data()
    if name not in data["profiles"]:
        raise ValueError(f"unknown device profile {name!r}; known: {', '.join(names())}")
    entry = data["profiles"][name]
    figures = {f.name: entry[f.name] for f in fields(Figures)}
    return DeviceProfile(
        name=name,
        description=entry["description"],
        sources={k: f"{data['citations'][v['source']]}: {v['detail']}" for k, v in figures.items()},
        notes=entry.get("notes", ""),
        **{k: v["value"] for k, v in figures.items()},
    )


def scaled(name: str, host: HostMemory) -> ScaledProfile:
    """Profile ``name`` as it would perform beside this host's DRAM.

    Each bandwidth is the host's measured one times the profile's ratio to
    the reference DRAM (read and write separately). Both latencies scale by
    the host's random-access latency over the reference's, since calibration
    measures random latency only. Granularity is the device's own. So
    ``scaled("dram", host)`` is the host itself.
    """
    profile, ref = load(name), reference()
    latency = host.latency_ns / ref.rand_latency_ns
    return ScaledProfile(
        name=name,
        host=host,
        seq_latency_ns=profile.seq_latency_ns * latency,
        rand_latency_ns=profile.rand_latency_ns * latency,
        read_bw_gbs=host.read_bw_gbs * profile.read_bw_gbs / ref.read_bw_gbs,
        write_bw_gbs=host.write_bw_gbs * profile.write_bw_gbs / ref.write_bw_gbs,
        granularity_bytes=profile.granularity_bytes,
    )
