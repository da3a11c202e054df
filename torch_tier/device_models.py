"""Device models for the emulated tier that the cost model does not describe.

Each is a function of one call's Traffic (torch_tier.traffic) returning the
extra seconds the slow tier adds, built on a profile scaled to this host (a
one-DIMM Optane server, optane-100-1dimm, or cxl), with one piece of
published behaviour the linear cost model leaves out. They exist so that a search driven by timed runs can be tested
against a device that differs from what the planner assumes, as real Optane
or CXL memory does in ways nobody has written down. They are for research
and testing, not a claim about any real device's numbers.

`pm="sim:optane-mixed"` etc. runs them (torch_tier.devices.SHIPPED_MODELS);
`torch_tier.register_device(name, model)` adds your own.

- optane-mixed: reads and writes to the device in one call interfere.
  Optane's bandwidth under a mix of reads and writes falls well below either
  alone (Yang et al., "An Empirical Guide to the Behavior and Use of
  Scalable Persistent Memory", FAST 2020: its mixed read/write measurements,
  and its guideline to avoid mixed and multi-threaded accesses). Here a call
  that both reads and writes the slow tier pays MIXED_PENALTY times the
  smaller of its read and write device time on top of the cost model's
  extra, none of it hidden by computation.
- optane-cached: activations live in the CPU's cache, not on the device.
  Writes to persistent memory go through the cache hierarchy (write-back)
  and Optane buffers and combines them on the DIMM (its XPBuffer, which FAST
  2020 describes), so a tensor that one layer writes and the next reads
  while it still fits in the last-level cache never reaches the media; the
  cost model charges every activation byte in pm a write and a read at the
  device's speed. Here activation streams (writes, and reads of inputs) of
  at most CACHE_BYTES cost nothing extra; weights, read once a forward after
  the rest of the forward has flushed them, pay in full; random reads of an
  embedding table hit in proportion to the share of the table the cache
  holds.
- optane-threads: write bandwidth falls as writer threads rise (FAST 2020,
  6 DIMMs interleaved: write bandwidth peaks near 12.5 GB/s at 4 threads and
  falls to 7.5 GB/s at 24). The profile quotes the peak; a server running
  WRITERS inference threads at once sees the lower figure, interpolated
  linearly between the two published points. The cost model's shape is
  right here, only a figure is off: the case calibration fixes.
- cxl-loaded: a CXL expander beside DRAM that co-running jobs load. Under
  load, DRAM's latency and bandwidth for this job can fall below the CXL
  tier's (Colloid, SOSP 2024), and the two tiers serve a call's streams in
  parallel, which is why weighted interleave gains 24% over DRAM alone on
  Xeon 6 with CXL (arXiv 2412.12491). Here this job gets DRAM_SHARE of the
  host's DRAM bandwidth, the cxl profile's bandwidth on the slow tier, and a
  call's memory time is the slower tier's: max(DRAM streams / loaded DRAM,
  CXL streams / CXL). The built-in profiles' cost model, where the slow
  tier only ever adds time, cannot express that a placement using both
  tiers beats all-DRAM; its parallel-tier structure (cost_model, parallel
  tiers) is exactly this one, and calibration fits it when the timed runs
  call for it: what the planner assumes still does not know it.
"""

from __future__ import annotations

import dataclasses
from functools import cached_property

from .cost_model import CostModel, cost_model, overlapped
from .traffic import Traffic, TrafficStream

MIXED_PENALTY = 2.0  # a modelling choice, not a published figure
CACHE_BYTES = 32 << 20  # this host's last-level cache (the paper's Xeon: 38.5 MiB)
WRITERS = 24
WRITE_BW_POINTS = ((4, 12.5), (24, 7.5))  # (threads, GB/s), FAST 2020, 6 DIMMs
DRAM_SHARE = 0.4  # of the host's DRAM bandwidth left to this job by its co-runners: a scenario, not a figure


class _OnProfile:
    """A device model on top of a built-in profile's cost model (made on first use: it measures the host)."""

    profile = "optane-100-1dimm"

    @cached_property
    def cost(self) -> CostModel:
        return cost_model(self.profile)

    def __repr__(self) -> str:
        return f"<device model {type(self).__name__} on {self.profile}>"


class MixedReadWrite(_OnProfile):
    """optane-mixed: the cost model's extra, plus a penalty for reading and writing the device in one call."""

    def __init__(self, penalty: float = MIXED_PENALTY):
        self.penalty = penalty

    def __call__(self, traffic: Traffic) -> float:
        pm = traffic.in_tier("pm")
        reads = sum(self.cost.seconds(s, self.cost.pm) for s in pm if not s.write)
        writes = sum(self.cost.seconds(s, self.cost.pm) for s in pm if s.write)
        return self.cost.call_extra(traffic) + self.penalty * min(reads, writes)


class Cached(_OnProfile):
    """optane-cached: activations that fit in the cache never reach the device; weights do."""

    def __init__(self, cache_bytes: int = CACHE_BYTES):
        self.cache_bytes = cache_bytes

    def miss_share(self, stream: TrafficStream) -> float:
        """The share of the stream's bytes that the device serves."""
        if stream.random:
            return max(0.0, 1.0 - self.cache_bytes / stream.footprint) if stream.footprint > 0 else 0.0
        if stream.extent:  # a weight: flushed by the rest of the forward since its last read
            return 1.0
        return 0.0 if stream.bytes <= self.cache_bytes else 1.0

    def __call__(self, traffic: Traffic) -> float:
        pm_extra = dram = 0.0
        for stream in traffic.streams:
            dram += self.cost.in_dram(stream)
            if stream.tier == "pm":
                pm_extra += self.miss_share(stream) * self.cost.extra(stream)
        return overlapped(pm_extra, traffic.seconds, dram)


class WriteThreads(_OnProfile):
    """optane-threads: the cost model with the write bandwidth that WRITERS concurrent writers see."""

    def __init__(self, writers: int = WRITERS):
        self.writers = writers

    @staticmethod
    def write_bandwidth(writers: int) -> float:
        """GB/s of the 6-DIMM device with `writers` threads writing, between FAST 2020's two points."""
        (t0, b0), (t1, b1) = WRITE_BW_POINTS
        share = min(max((writers - t0) / (t1 - t0), 0.0), 1.0)
        return b0 + share * (b1 - b0)

    @cached_property
    def cost(self) -> CostModel:
        base = cost_model(self.profile)
        scale = self.write_bandwidth(self.writers) / self.write_bandwidth(WRITE_BW_POINTS[0][0])
        pm = dataclasses.replace(base.pm, write_bw_gbs=base.pm.write_bw_gbs * scale)
        return CostModel(f"{self.profile}@{self.writers}-writers", pm, base.dram)

    def __call__(self, traffic: Traffic) -> float:
        return self.cost.call_extra(traffic)


class LoadedDram(_OnProfile):
    """cxl-loaded: DRAM shared with co-runners, and both tiers serving a call's streams at once."""

    profile = "cxl"

    def __init__(self, dram_share: float = DRAM_SHARE):
        self.dram_share = dram_share

    def __call__(self, traffic: Traffic) -> float:
        cost = self.cost
        unloaded = sum(cost.in_dram(s) for s in traffic.streams)
        in_dram = sum(cost.in_dram(s) for s in traffic.in_tier("dram")) / self.dram_share
        in_cxl = sum(cost.seconds(s, cost.pm) for s in traffic.in_tier("pm"))
        return overlapped(max(0.0, max(in_dram, in_cxl) - unloaded), traffic.seconds, unloaded)


optane_mixed = MixedReadWrite()
optane_cached = Cached()
optane_threads = WriteThreads()
cxl_loaded = LoadedDram()
