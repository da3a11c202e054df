"""What torch-tier's allocator costs, backend by backend, and what memkind costs end to end.

Prints, measured in one run on this machine:
1. allocate + free (ns per pair, timed in C++): torch-tier's DRAM tier, simulated-tier arena
   and memkind tier (inside a session) against PyTorch's default CPU allocator and glibc's
   posix_memalign/free, sizes 64 B to 64 MiB, with 1 or 10,000 other blocks live per thread
   (with a freed block between every two, so free lists are long), 1, 2 and 4 threads.
2. the planned backend: one planned allocate + free whose slot overlaps N earlier slots,
   with N blocks held.
2b. ("split") a 1 MiB split block (half its pages in each tier) against whole ones, per pm
   backend at hand: allocate + free and allocate + write every page + free (us, through
   torch.empty), fresh (its cache's capacity 0: a new mapping and new pages each time) and
   cached (the same shape again, served by the cache).
3. end-to-end inference of a ResNet-50 and BERT-base: plugin off, an all-DRAM policy, and
   every tensor on memkind's PMEM kind in /dev/shm (tmpfs: the same DRAM), modes interleaved
   round by round in a shuffled order, so that drift on a shared machine hits all alike.

   With --clock cpu (and --threads 1) timed on the thread's CPU time, which other jobs on a
   shared machine do not stretch; page faults per forward (getrusage) beside each mode.

Usage: python benchmarks/overhead.py [--rounds 5] [--quick] [--only alloc,planned,split,e2e]
       [--threads N] [--clock wall|cpu]
"""

from __future__ import annotations

import argparse
import random
import resource
import statistics
import time
from functools import partial

import torch

import torch_tier as tt
from torch_tier import _C, clocks, memkind, tiers, zoo

SIZES = [64, 1 << 10, 16 << 10, 256 << 10, 1 << 20, 16 << 20, 64 << 20]
LIVE = [1, 10_000]
LIVE_MAX_SIZE = 16 << 10  # 10,000 live blocks (and as many holes) per thread only up to this size
THREADS = [1, 2, 4]


def human(n: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n // scale} {unit}"
    return f"{n} B"


def _time(size: int, allocator: str, threads: int, live: int, rounds: int, quick: bool) -> float:
    iterations = max(100, min(2_000 if quick else 20_000, (256 << 20) // size))
    _C.time_alloc_free(size, iterations, allocator, threads, live, live > 1)  # warm-up: a kind's first extents
    return statistics.median(
        _C.time_alloc_free(size, iterations, allocator, threads, live, live > 1) for _ in range(rounds))


def _in_session(pm: str, tier: int, fn):
    tiers.activate(tiers.parse_pm(pm), "fallback")
    _C.set_tier(tier)
    try:
        return fn()
    finally:
        _C.set_tier(tiers.DRAM)
        tiers.deactivate()


def allocation_tables(rounds: int, quick: bool, skip: set[str]) -> list[str]:
    columns = {"PyTorch default": None, "glibc": None, "torch-tier DRAM": ("sim", tiers.DRAM),
               "torch-tier sim arena": ("sim", tiers.PM)}
    if memkind.available():
        columns["torch-tier memkind"] = ("memkind:/dev/shm", tiers.PM)
    columns = {name: setting for name, setting in columns.items() if name.split()[-1] not in skip}
    out = []
    for threads in [1] if quick else THREADS:
        out += [f"\n### {threads} thread{'s' * (threads > 1)}, ns per allocate + free (median of {rounds})\n",
                "| size | live blocks | " + " | ".join(columns) + " |",
                "|---:|---:|" + "---:|" * len(columns)]
        for size in SIZES:
            for live in LIVE:
                if live > 1 and size > LIVE_MAX_SIZE:
                    continue
                cells = []
                for name, setting in columns.items():
                    if setting is None:
                        allocator = "default" if name == "PyTorch default" else "glibc"
                        cells.append(_time(size, allocator, threads, live, rounds, quick))
                    else:
                        pm, tier = setting
                        cells.append(_in_session(pm, tier, partial(_time, size, "torch-tier", threads, live, rounds,
                                                                   quick)))
                out.append(f"| {human(size)} | {live:,} | " + " | ".join(f"{c:,.0f}" for c in cells) + " |")
    return out


def planned_table(rounds: int) -> list[str]:
    rows = ["| slots overlapped and blocks held | ns per planned allocate + free |", "|---:|---:|"]
    for live in (1, 100, 10_000):
        ns = statistics.median(_C.time_planned(live, 500) for _ in range(rounds))
        rows.append(f"| {live:,} | {ns:,.0f} |")
    return rows


SPLIT_BYTES = 1 << 20


def split_table(iterations: int) -> list[str]:
    """Microseconds per allocate(+write)+free of SPLIT_BYTES, fresh and cached: whole in DRAM (fresh:
    the DRAM cache's capacity 0), and per pm backend at hand whole in pm and split half and half
    (fresh: the split cache's capacity 0). Medians of `iterations`, through torch.empty."""
    backends = ["sim"] + (["memkind:/dev/shm"] if memkind.available() else []) + \
        [f"numa:{node}" for node in tiers.numa_nodes()[:1]]
    caches = {tiers.DRAM: (_C.set_dram_cache_capacity, _C.default_dram_cache_capacity()),
              0.5: (_C.set_split_cache_capacity, _C.default_dram_cache_capacity())}
    rows = [("| backend | block | allocate+free fresh | allocate+free cached | allocate+write+free fresh | "
             "allocate+write+free cached |"), "|---|---|---:|---:|---:|---:|"]
    for pm in backends:
        tiers.activate(tiers.parse_pm(pm, "256MiB", "first"), "error")
        try:
            kinds = {"whole in pm": tiers.PM, "split 1:1": 0.5}
            if pm == backends[0]:
                kinds = {"whole in DRAM": tiers.DRAM, **kinds}
            for kind, tier in kinds.items():
                cells = {}
                for touch in (False, True):
                    if tier in caches:
                        set_capacity, default = caches[tier]
                        set_capacity(0)
                        try:
                            cells["fresh", touch] = f"{time_alloc(tier, touch, iterations) * 1e6:.1f}"
                        finally:
                            set_capacity(default)
                    else:  # the arenas and memkind's heaps keep their pages: a block is never fresh
                        cells["fresh", touch] = "-"
                    cells["cached", touch] = f"{time_alloc(tier, touch, iterations) * 1e6:.1f}"
                rows.append(f"| {'DRAM' if tier == tiers.DRAM else pm} | {kind} | " + " | ".join(
                    cells[path, touch] for touch in (False, True) for path in ("fresh", "cached")) + " |")
        finally:
            tiers.deactivate()
    return rows


def time_alloc(tier: float, touch: bool, iterations: int) -> float:
    """Median seconds of one allocate(+write)+free of SPLIT_BYTES in `tier` (a tier index or a pm share)."""
    samples = []
    _C.set_tier(tier)
    try:
        for _ in range(iterations):
            start = time.perf_counter()
            block = torch.empty(SPLIT_BYTES, dtype=torch.uint8)
            if touch:
                block.fill_(1)
            del block
            samples.append(time.perf_counter() - start)
    finally:
        _C.set_tier(tiers.DRAM)
    return statistics.median(samples)


def page_faults() -> int:
    """Minor and major page faults of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt + usage.ru_majflt


def time_forward(model: torch.nn.Module, inputs: tuple, repeats: int) -> tuple[float, float]:
    """Seconds per forward on this thread's clock (torch_tier.clocks), and page faults per forward."""
    with torch.no_grad():
        model(*inputs)  # warm-up
        faults, start = page_faults(), clocks.now()
        for _ in range(repeats):
            model(*inputs)
        seconds = clocks.now() - start
    return seconds / repeats, (page_faults() - faults) / repeats


def latency_rows(name: str, workload: zoo.Workload, rounds: int, repeats: int) -> list[str]:
    model, inputs = workload.model, workload.inputs
    # A sim tier meters every node (its simulated delay); a memkind tier runs
    # only the tier-switching hooks, which is what placement itself costs.
    plain = "memkind:/dev/shm" if memkind.available() else "sim"
    modes = {"plugin off": None, f"all-DRAM policy (pm={plain})": ("dram", plain)}
    if memkind.available():
        modes["all memkind:/dev/shm"] = ("pm", "memkind:/dev/shm")
    samples: dict[str, list[float]] = {mode: [] for mode in modes}
    faults: dict[str, list[float]] = {mode: [] for mode in modes}
    order = list(modes.items())
    shuffle = random.Random(0).shuffle
    for _ in range(rounds):
        shuffle(order)  # no mode always runs first or last in a round
        for mode, setting in order:
            if setting is None:
                seconds, per_forward = time_forward(model, inputs, repeats)
            else:
                tier, pm = setting
                with tt.enable(tt.Policy.uniform(model, tier, tier), model, pm=pm):
                    seconds, per_forward = time_forward(model, inputs, repeats)
            samples[mode].append(seconds)
            faults[mode].append(per_forward)
    off = statistics.median(samples["plugin off"])
    dram = statistics.median(samples[f"all-DRAM policy (pm={plain})"])
    rows = []
    for mode, values in samples.items():
        median = statistics.median(values)
        low, _, high = statistics.quantiles(values, n=4) if len(values) > 1 else (median, median, median)
        spread = (high - low) / 2 / median * 100  # half the interquartile range: a busy machine's outliers aside
        rows.append(f"| {name} | {mode} | {median * 1e3:.1f} | ±{spread:.1f}% | {median / off - 1:+.1%} | "
                    f"{median / dram - 1:+.1%} | {statistics.mean(faults[mode]):.1f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="small models, one thread, few rounds (a smoke run)")
    parser.add_argument("--only", default="alloc,planned,split,e2e", help="sections to run (comma-separated)")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads for the end-to-end runs (0: torch's)")
    parser.add_argument("--clock", choices=clocks.CLOCKS, default="wall",
                        help="the end-to-end runs' clock: wall time, or the thread's CPU time (needs --threads 1)")
    parser.add_argument("--skip", default="", help="allocate+free columns to leave out (comma-separated last words, "
                        "e.g. memkind)")
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    sections = set(args.only.split(","))
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, "
          f"memkind {'present' if memkind.available() else 'absent'}")
    if "alloc" in sections:
        print("\n## allocate + free")
        print("\n".join(allocation_tables(rounds, args.quick, set(filter(None, args.skip.split(","))))), flush=True)
    if "planned" in sections:
        print("\n## planned backend\n")
        print("\n".join(planned_table(rounds)), flush=True)
    if "split" in sections:
        iterations = 100 if args.quick else 500
        print(f"\n## split blocks: us per {SPLIT_BYTES >> 20} MiB block (median of {iterations}, through torch.empty)\n")
        print("\n".join(split_table(iterations)), flush=True)
    if "e2e" in sections:
        size = {"width": 0.25, "depth": 0.25} if args.quick else {}
        image = {"image_size": 64} if args.quick else {}
        print("\n## inference latency (median over rounds)\n")
        print(f"on the {args.clock} clock\n")
        print("| model | mode | ms | ±IQR/2 | vs off | vs all-DRAM | page faults per forward |\n"
              "|---|---|---:|---:|---:|---:|---:|")
        for name, workload, repeats in (
            ("resnet50", zoo.build("resnet50", **size, **image), 3),
            ("bert-base", zoo.build("bert-base", **size), 3),
        ):
            with clocks.use(args.clock):
                print("\n".join(latency_rows(name, workload, rounds, repeats)), flush=True)


if __name__ == "__main__":
    main()
