"""Device profiles of memory tiers, and their scaling to this host.

``data/devices.json`` holds published figures for each device (latency,
bandwidth, access granularity), each with its source. Those figures were
measured on other servers, so a profile is never used as absolute numbers:
it is read as ratios to the reference DRAM profile (``dram``, the DRAM of the
server the papers measured) and applied to this host's own DRAM as measured
by :mod:`torch_tier.host` (:func:`scaled`).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass, field, fields
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping

DEFAULT_PROFILE = "optane-100"  # what the planner assumes unless told


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
    """The names of the built-in device profiles."""
    return list(_data()["profiles"])


def reference() -> DeviceProfile:
    """The DRAM profile every other profile is a ratio to."""
    return load(_data()["reference"])


def is_profile_file(name: str) -> bool:
    """Whether ``name`` names a profile file (a path ending in .json) rather than a built-in profile."""
    return name.endswith(".json")


@cache
def _file(path: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    """(profile name, entry, citations) of a profile file: the schema of data/devices.json, one profile."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read a device profile file ({err})") from None
    profiles = data.get("profiles") if isinstance(data, dict) else None
    if not isinstance(profiles, dict) or len(profiles) != 1:
        raise ValueError(f"{path}: expected {{\"profiles\": {{NAME: {{...}}}}}} with exactly one profile, "
                         "in the schema of torch_tier/data/devices.json")
    (name, entry), = profiles.items()
    for f in fields(Figures):
        value = entry.get(f.name, {}).get("value") if isinstance(entry.get(f.name), dict) else None
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{path}: profile {name!r} field {f.name!r}: expected {{\"value\": a positive "
                             f"number, ...}}, got {entry.get(f.name)!r}")
    return name, entry, {**_data()["citations"], **data.get("citations", {})}


# Device models shipped with torch-tier, by reference ("module:function"), resolved when first used.
SHIPPED_MODELS = {
    "optane-mixed": "torch_tier.device_models:optane_mixed",
    "optane-cached": "torch_tier.device_models:optane_cached",
    "optane-threads": "torch_tier.device_models:optane_threads",
    "cxl-loaded": "torch_tier.device_models:cxl_loaded",
}
_registered: dict[str, Callable[..., float]] = {}


def register_device(name: str, model: Callable[..., float]) -> None:
    """Make `pm="sim:NAME"` emulate a device whose slowness `model` decides.

    `model(traffic)` takes a torch_tier.Traffic (what one call of one node
    moved, as the emulated tier observed it) and returns the extra seconds
    (>= 0) the slow tier adds to that call. A module-level function travels
    to the trainer's worker processes by reference (`module:function`).
    """
    if not name or ":" in name or is_profile_file(name) or name in _data()["profiles"]:
        raise ValueError(f"register_device: {name!r} cannot name a device model (empty, has ':', ends in "
                         f".json, or is a built-in profile: {', '.join(names())})")
    if not callable(model):
        raise TypeError(f"register_device({name!r}, ...): the model must be callable, got {model!r}")
    _registered[name] = model


def model_reference(name: str) -> str | None:
    """`module:function` of a registered or shipped device model, if one importable by that path exists."""
    if name in _registered:
        model = _registered[name]
        qualname = getattr(model, "__qualname__", "")
        module = getattr(model, "__module__", "")
        return f"{module}:{qualname}" if module and qualname and "<" not in qualname else None
    return SHIPPED_MODELS.get(name)


def registered_references() -> dict[str, str]:
    """`module:function` of each model registered in this process (not shipped) that can travel by reference."""
    return {name: ref for name in _registered if name not in SHIPPED_MODELS and (ref := model_reference(name))}


def resolve_reference(reference: str) -> Callable[..., float]:
    """The callable at `module:function` (a device model passed by reference)."""
    module, _, attribute = reference.partition(":")
    try:
        value: Any = importlib.import_module(module)
        for part in attribute.split("."):
            value = getattr(value, part)
    except (ImportError, AttributeError, ValueError) as err:
        raise ValueError(f"device model {reference!r}: cannot import it ({err})") from None
    if not callable(value):
        raise ValueError(f"device model {reference!r} is not callable")
    return value


def device_model(name: str) -> Callable[..., float] | None:
    """The registered or shipped device model called `name`; None where `name` is a profile."""
    if name in _registered:
        return _registered[name]
    if name in SHIPPED_MODELS:
        _registered[name] = resolve_reference(SHIPPED_MODELS[name])
        return _registered[name]
    return None


def known(name: str) -> bool:
    """Whether `sim:NAME` can run: a built-in profile, a profile file, or a registered or shipped model."""
    return name in _data()["profiles"] or is_profile_file(name) or name in _registered or name in SHIPPED_MODELS


def known_names() -> list[str]:
    """Every name `sim:NAME` accepts besides profile files."""
    return names() + sorted(set(SHIPPED_MODELS) | set(_registered))


def assumed_profile(name: str) -> str:
    """The profile the model-based parts assume when `sim:NAME` runs: the profile itself, else the default."""
    return name if name in _data()["profiles"] or is_profile_file(name) else DEFAULT_PROFILE


def load(name: str) -> DeviceProfile:
    """The profile called ``name`` (built in, or a profile file's path), each figure with its source spelled out."""
    if is_profile_file(name):
        name, entry, citations = _file(name)
    else:
        data = _data()
        if name not in data["profiles"]:
            raise ValueError(f"unknown device profile {name!r}; known: {', '.join(names())}, or a profile file "
                             "(PATH.json)")
        entry, citations = data["profiles"][name], data["citations"]
    figures = {f.name: entry[f.name] for f in fields(Figures)}
    return DeviceProfile(
        name=name,
        description=entry.get("description", ""),
        sources={k: f"{citations.get(v.get('source'), v.get('source', 'unstated'))}: {v.get('detail', '')}"
                 for k, v in figures.items()},
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
