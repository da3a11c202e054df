"""The two logical tiers, `dram` and `pm`, and what backs the `pm` tier.

`pm` specs:
  sim, sim:NAME      an emulated slow tier: a mapped arena of real memory with
                     its own capacity and accounting; NAME decides the slowness
                     the runtime adds: a device profile (default optane-100), a
                     profile file PATH.json, or a device model (shipped in
                     torch_tier.device_models, or torch_tier.register_device).
  memkind:DIR        memkind's PMEM kind: a file-backed heap in DIR (a DAX
                     filesystem for real PM; any directory, e.g. /dev/shm, works).
  kmem               memkind's MEMKIND_DAX_KMEM: PM or CXL memory exposed as a
                     CPU-less NUMA node.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass

import psutil
import torch

from . import _C
from . import devices, memkind
from .devices import DEFAULT_PROFILE

TIER_NAMES = ("dram", "pm")
DRAM, PM = 0, 1
FITS = ("first", "best", "worst", "next")
ON_FULL = ("fallback", "error")

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kb": 1000, "kib": 1 << 10, "m": 1 << 20, "mb": 1000**2,
          "mib": 1 << 20, "g": 1 << 30, "gb": 1000**3, "gib": 1 << 30, "t": 1 << 40, "tb": 1000**4,
          "tib": 1 << 40}


def parse_bytes(value: int | str, what: str = "size") -> int:
    """Bytes from an int or a string such as '512MiB', '2G', '1.5 GB'."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{what} must be >= 0, got {value}")
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"{what}: cannot read {value!r} as a byte count (e.g. 1073741824, '512MiB', '2GB')")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


@dataclass(frozen=True)
class PmSpec:
    """What backs the pm tier: kind 'sim', 'memkind' or 'kmem'."""

    kind: str
    directory: str = ""
    profile: str = ""
    capacity: int = 0  # bytes; 0: the backend's own limit (sim: this machine's RAM)
    fit: str = "first"

    def __str__(self) -> str:
        return {"sim": f"sim:{self.profile}", "memkind": f"memkind:{self.directory}", "kmem": "kmem"}[self.kind]


def parse_pm(spec: str | None, capacity: int | str | None = None, fit: str = "first") -> PmSpec:
    """Parse a pm spec; None means $TORCH_TIER_PM, else 'sim' with a warning."""
    if spec is None:
        spec = os.environ.get("TORCH_TIER_PM")
        if not spec:
            warnings.warn(
                "torch-tier: no slow memory configured (pm=... or TORCH_TIER_PM); using the simulated tier 'sim'",
                stacklevel=3,
            )
            spec = "sim"
    cap = parse_bytes(capacity, "pm capacity") if capacity is not None else 0
    if fit not in FITS:
        raise ValueError(f"fit: unknown rule {fit!r} (expected one of {list(FITS)})")
    kind, _, arg = spec.partition(":")
    if kind == "sim":
        return PmSpec("sim", profile=_known_profile(arg or DEFAULT_PROFILE), capacity=cap, fit=fit)
    if kind == "memkind" and arg:
        return PmSpec("memkind", directory=arg, capacity=cap, fit=fit)
    if kind == "kmem" and not arg:
        return PmSpec("kmem", capacity=cap, fit=fit)
    raise ValueError(f"pm: cannot read {spec!r} (expected 'sim', 'sim:PROFILE', 'memkind:DIR' or 'kmem')")


def _known_profile(name: str) -> str:
    if not devices.known(name):
        raise ValueError(f"pm: unknown device profile {name!r} (known: {', '.join(devices.known_names())}, "
                         "a profile file PATH.json, or a name given to torch_tier.register_device)")
    if devices.is_profile_file(name):
        devices.load(name)  # a bad file fails here, naming the file and the field
    return name


def activate(pm: PmSpec, on_full: str) -> None:
    """Register the tiering allocator with PyTorch, its pm tier backed as `pm` says."""
    if on_full not in ON_FULL:
        raise ValueError(f"on_full: expected one of {list(ON_FULL)}, got {on_full!r}")
    error = on_full == "error"
    if pm.kind == "sim":
        _C.enable_sim(pm.capacity or min(psutil.virtual_memory().total, _C.SIM_MAX_CAPACITY), pm.fit, error)
        return
    kind = memkind.pmem_kind(pm.directory, pm.capacity) if pm.kind == "memkind" else memkind.kmem_kind()
    _C.enable_memkind(kind.kind, kind.posix_memalign, kind.free, kind.destroy_kind, kind.malloc_usable_size,
                      kind.name, error)


def deactivate() -> None:
    """Restore PyTorch's previous allocator; blocks still live free to their tier later."""
    _C.disable()


def tier_of(tensor: torch.Tensor) -> str | None:
    """'dram' or 'pm' for memory torch-tier allocated, None for any other tensor."""
    index = _C.tier_of(tensor)
    return TIER_NAMES[index] if index >= 0 else None


def stats() -> dict[str, dict[str, int]]:
    """Per tier, for every block torch-tier allocated:

    live_bytes, peak_bytes: what the tier's live blocks occupy, each block
        counted as its backend holds it: the request rounded up to the
        backend's granularity (sim arena: 256-byte cells, so the pm tier's
        live_bytes is the arena's capacity minus its free bytes; memkind: the
        size class jemalloc gives it; DRAM and planned slots: 64 bytes). Each
        thread counts its own, summed here. The peak is exact while one thread
        allocates at a time; with several at once it is the highest total seen
        as each thread reached its own highest.
    allocations: blocks allocated so far.
    fallbacks (pm): allocations pm could not hold, served by DRAM instead.
    failures (pm): allocations pm could not hold that raised (on_full="error").
    dram also: cached_bytes, the freed large blocks kept for reuse (DRAM the
        tier holds beyond live_bytes), at most cache_capacity (1/16 of this
        machine's memory, at most 1 GiB, unless set; least recently freed
        evicted first), cache_hits and cache_evictions.
    """
    return {name: _C.stats(index) for index, name in enumerate(TIER_NAMES)}


def reset_peaks() -> None:
    """Set each tier's peak to its current live bytes."""
    _C.reset_peaks()
