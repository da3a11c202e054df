"""Measure this host's DRAM once, so device profiles can be scaled to it.

Three figures, all single-threaded, over one buffer far larger than the
last-level cache (256 MiB):

- read bandwidth: a streaming reduction (``max``) over the buffer;
- write bandwidth: a streaming ``fill`` of the buffer;
- random-access latency: a dependent pointer chase through the buffer, one
  random cache line per hop (see :func:`chase_latency_ns`).

Each is the best of a few runs (noise only ever makes a run slower). The
result is cached as JSON in ``$TORCH_TIER_CACHE/host.json`` (default
``~/.cache/torch-tier/host.json``) and reused on the same machine; the whole
measurement takes one to two seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from torch_tier import devices
from torch_tier.devices import HostMemory

BUFFER_BYTES = 256 << 20
CACHE_LINE = 64


def cache_path() -> Path:
    """Where the calibration is cached: ``$TORCH_TIER_CACHE`` (a directory) or ``~/.cache/torch-tier``."""
    root = os.environ.get("TORCH_TIER_CACHE") or Path.home() / ".cache" / "torch-tier"
    return Path(root) / "host.json"


def host(recalibrate: bool = False) -> HostMemory:
    """This host's DRAM figures: from the cache when it holds this machine's, else measured and cached."""
    path = cache_path()
    if not recalibrate:
        try:
            cached = HostMemory(**json.loads(path.read_text()))
            if cached.machine == platform.node():
                return cached
        except (OSError, ValueError, TypeError):
            pass  # missing, unreadable or from an older format: measure afresh
    measured = measure()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(asdict(measured), indent=2) + "\n")
    tmp.replace(path)  # atomic: concurrent workers never read a torn file
    return measured


def measure(buffer_bytes: int = BUFFER_BYTES, repeats: int = 5, hops: int = 500_000) -> HostMemory:
    """Measure streaming read/write bandwidth and random latency over a ``buffer_bytes`` buffer."""
    buf = np.empty(buffer_bytes // 8, dtype=np.intp)
    buf.fill(0)  # fault every page in before timing
    write = buffer_bytes / _best_seconds(lambda: buf.fill(1), repeats)
    read = buffer_bytes / _best_seconds(buf.max, repeats)
    return HostMemory(
        read_bw_gbs=read / 1e9,
        write_bw_gbs=write / 1e9,
        latency_ns=chase_latency_ns(buf, hops, repeats),
        buffer_bytes=buffer_bytes,
        machine=platform.node(),
        measured_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )


def chase_latency_ns(buf: np.ndarray, hops: int, repeats: int) -> float:
    """Nanoseconds per hop of a dependent pointer chase through ``buf`` (overwritten).

    ``buf`` is made into one random cycle over its cache lines: the first
    word of each line holds the index of the next line's first word. The
    chase is a single ``np.take(buf, chain[:-1], out=chain[1:])``: numpy
    copies neither the index array nor ``out`` here (mode ``wrap``, ``out``
    not overlapping ``buf``), so it reads ``chain[i]`` right after writing it,
    and each load's address is the value the previous load returned. The
    loads cannot overlap, so time per hop is the full load-to-use latency of
    a random cache line (including its TLB miss), plus a few cycles of
    numpy's loop. The chain is checked afterwards; if a numpy version ever
    copies the indices, this raises instead of reporting a throughput.
    """
    stride = CACHE_LINE // buf.itemsize
    order = np.random.default_rng(0).permutation(buf.size // stride) * stride
    buf[order] = np.roll(order, -1)
    chain = np.empty(hops + 1, dtype=np.intp)
    chain[0] = order[0]
    seconds = _best_seconds(lambda: np.take(buf, chain[:-1], out=chain[1:], mode="wrap"), repeats)
    if not np.array_equal(chain[1:], buf[chain[:-1]]):
        raise RuntimeError("pointer chase was not dependent: numpy copied the index array")
    return seconds / hops * 1e9


def _best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """The shortest wall time of ``repeats`` calls of ``fn``."""
    best = float("inf")
    for _ in range(repeats):
        start = time.thread_time()
        fn()
        best = min(best, time.thread_time() - start)
    return best


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``torch-tier host``; its handler is ``args.func(args) -> int``."""
    parser = subparsers.add_parser(
        "host",
        help="measure this host's DRAM and show each device profile scaled to it",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--recalibrate", action="store_true", help="measure again, ignoring the cache")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Print the host's figures and every profile scaled to them."""
    mem = host(recalibrate=args.recalibrate)
    ref = devices.reference()
    print(f"host DRAM ({mem.machine}, measured {mem.measured_at}, cached in {cache_path()})")
    print(f"  read bandwidth   {mem.read_bw_gbs:7.1f} GB/s  streaming, 1 thread, {mem.buffer_bytes >> 20} MiB")
    print(f"  write bandwidth  {mem.write_bw_gbs:7.1f} GB/s  streaming, 1 thread")
    print(f"  random latency   {mem.latency_ns:7.1f} ns    dependent pointer chase")
    print()
    print(
        f"profiles scaled to this host (ratios to '{ref.name}': {ref.seq_latency_ns:g}/"
        f"{ref.rand_latency_ns:g} ns, {ref.read_bw_gbs:g}/{ref.write_bw_gbs:g} GB/s read/write)"
    )
    print(f"{'profile':<18}{'seq ns':>8}{'rand ns':>9}{'read GB/s':>11}{'write GB/s':>12}{'granule B':>11}")
    for name in devices.names():
        p = devices.scaled(name, mem)
        print(
            f"{name:<18}{p.seq_latency_ns:8.0f}{p.rand_latency_ns:9.0f}"
            f"{p.read_bw_gbs:11.1f}{p.write_bw_gbs:12.1f}{p.granularity_bytes:11d}"
        )
    return 0
