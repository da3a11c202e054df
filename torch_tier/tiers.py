"""The two logical tiers, `dram` and `pm`, and what backs the `pm` tier.

`pm` specs:
  sim, sim:NAME      an emulated slow tier: a mapped arena of real memory with
                     its own capacity and accounting; NAME decides the slowness
                     the runtime adds: a device profile (default optane-100), a
                     profile file PATH.json, or a device model (shipped in
                     torch_tier.device_models, or torch_tier.register_device).
  memkind:DIR        memkind's PMEM kind: a file-backed heap in DIR (a DAX
                     filesystem for real PM; any directory, e.g. /dev/shm, works).
  numa:NODE          NUMA node NODE's memory: a CXL memory expander or PM
                     exposed as a CPU-less node, or another socket's DRAM. An
                     arena as sim's (same cells and fit rules), its memory bound
                     to the node (mbind) before first touch; capacity the
                     node's size unless pm_capacity is smaller. Needs no
                     library (raw syscalls).
  kmem               memkind's MEMKIND_DAX_KMEM: PM or CXL memory exposed as a
                     CPU-less NUMA node (for users who have memkind; numa:NODE
                     does the same without it).
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
NUMA_NODES = "/sys/devices/system/node"

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
    """What backs the pm tier: kind 'sim', 'memkind', 'kmem' or 'numa'."""

    kind: str
    directory: str = ""
    profile: str = ""
    capacity: int = 0  # bytes; 0: the backend's own limit (sim: this machine's RAM; numa: the node's size)
    fit: str = "first"
    node: int = 0  # numa

    def __str__(self) -> str:
        return {"sim": f"sim:{self.profile}", "memkind": f"memkind:{self.directory}", "kmem": "kmem",
                "numa": f"numa:{self.node}"}[self.kind]


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
        if cap:  # MEMKIND_DAX_KMEM is a static kind: memkind takes no size limit for it
            raise ValueError(f"pm capacity {capacity!r}: 'kmem' cannot be limited (memkind's MEMKIND_DAX_KMEM "
                             "has no maximum size); use 'numa:NODE' with a capacity, or no capacity")
        return PmSpec("kmem", fit=fit)
    if kind == "numa" and re.fullmatch(r"\d+", arg):
        return PmSpec("numa", node=_numa_node(int(arg), cap), capacity=cap, fit=fit)
    raise ValueError(f"pm: cannot read {spec!r} (expected 'sim', 'sim:PROFILE', 'memkind:DIR', 'kmem' or 'numa:NODE')")


def _known_profile(name: str) -> str:
    if not devices.known(name):
        raise ValueError(f"pm: unknown device profile {name!r} (known: {', '.join(devices.known_names())}, "
                         "a profile file PATH.json, or a name given to torch_tier.register_device)")
    if devices.is_profile_file(name):
        devices.load(name)  # a bad file fails here, naming the file and the field
    return name


def _read_list(path: str) -> list[int]:
    """A sysfs list such as '0-3,8,10-11' read as numbers (none if the file is missing)."""
    try:
        with open(path) as f:
            listed = f.read().strip()
    except FileNotFoundError:
        return []
    numbers: list[int] = []
    for part in filter(None, listed.split(",")):
        first, _, last = part.partition("-")
        numbers += range(int(first), int(last or first) + 1)
    return numbers


def numa_nodes() -> list[int]:
    """This machine's NUMA nodes that have memory (none if the kernel shows no NUMA topology)."""
    return _read_list(f"{NUMA_NODES}/has_memory")


def numa_node_cpus(node: int) -> list[int]:
    """The CPUs of NUMA node `node` (none for a CPU-less node, such as a CXL memory expander)."""
    return _read_list(f"{NUMA_NODES}/node{node}/cpulist")


def numa_node_bytes(node: int) -> int:
    """The size of NUMA node `node`'s memory (MemTotal in its sysfs meminfo)."""
    path = f"{NUMA_NODES}/node{node}/meminfo"
    with open(path) as f:
        for line in f:
            match = re.fullmatch(rf"Node {node} MemTotal:\s+(\d+) kB\s*", line)
            if match:
                return int(match.group(1)) << 10
    raise ValueError(f"{path}: no 'Node {node} MemTotal' line")


def _numa_node(node: int, capacity: int) -> int:
    """`node`, checked: it exists here, has memory, and holds `capacity` bytes (0: any)."""
    nodes = numa_nodes()
    if node not in nodes:
        raise ValueError(f"pm: NUMA node {node} does not exist or has no memory here (nodes with memory: "
                         f"{', '.join(map(str, nodes)) or 'none'}; see {NUMA_NODES}/has_memory)")
    size = numa_node_bytes(node)
    if capacity > size:
        raise ValueError(f"pm capacity: {capacity} bytes is more than NUMA node {node} has ({size} bytes)")
    return node


def activate(pm: PmSpec, on_full: str) -> None:
    """Register the tiering allocator with PyTorch, its pm tier backed as `pm` says."""
    if on_full not in ON_FULL:
        raise ValueError(f"on_full: expected one of {list(ON_FULL)}, got {on_full!r}")
    error = on_full == "error"
    if pm.kind == "sim":
        _C.enable_sim(pm.capacity or min(psutil.virtual_memory().total, _C.SIM_MAX_CAPACITY), pm.fit, error)
        return
    if pm.kind == "numa":
        _C.enable_numa(pm.node, pm.capacity or min(numa_node_bytes(pm.node), _C.SIM_MAX_CAPACITY), pm.fit, error)
        return
    kind = memkind.pmem_kind(pm.directory, pm.capacity) if pm.kind == "memkind" else memkind.kmem_kind()
    _C.enable_memkind(kind.kind, kind.posix_memalign, kind.free, kind.destroy_kind, kind.malloc_usable_size,
                      kind.name, error)


def deactivate() -> None:
    """Restore PyTorch's previous allocator; blocks still live free to their tier later."""
    _C.disable()


def tier_of(tensor: torch.Tensor) -> str | None:
    """'dram' or 'pm' for memory torch-tier allocated, 'split' for a split block (its first
    pages in DRAM, the rest in pm: tier_bytes says how many), None for any other tensor."""
    index = _C.tier_of(tensor)
    if index == _C.SPLIT:
        return "split"
    return TIER_NAMES[index] if index >= 0 else None


def tier_bytes(tensor: torch.Tensor) -> dict[str, int]:
    """Bytes of `tensor`'s storage in each tier: a split block's pages in each (whole 4 KiB pages),
    a whole block's bytes in its tier; zeros for memory torch-tier did not allocate."""
    return dict(zip(TIER_NAMES, _C.tier_bytes(tensor)))


def stats() -> dict[str, dict[str, int]]:
    """Per tier, for every block torch-tier allocated:

    live_bytes, peak_bytes: what the tier's live blocks occupy, each block
        counted as its backend holds it: the request rounded up to the
        backend's granularity (the sim and numa arenas: 256-byte cells, so the
        pm tier's live_bytes is the arena's capacity minus its free bytes; memkind: the
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
    split_cached_bytes (both): the pages in this tier of freed split blocks
        kept whole for the next split block of their shape (held beyond
        live_bytes; a sim or numa arena counts the pm ones as used). pm also:
        split_cache_capacity (both tiers' pages together; the DRAM cache's
        default unless set with _C.set_split_cache_capacity),
        split_cache_hits, split_cache_evictions (blocks given back: to make
        room, when pm was full, or when the session closed).
    """
    return {name: _C.stats(index) for index, name in enumerate(TIER_NAMES)}


def reset_peaks() -> None:
    """Set each tier's peak to its current live bytes."""
    _C.reset_peaks()
