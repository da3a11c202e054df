"""What torch-tier costs when it places everything in DRAM, and what memkind costs.

Prints two tables, measured in one run on this machine:
1. allocate + free, sizes 64 B to 64 MiB: torch-tier's DRAM path vs PyTorch's
   default CPU allocator (both timed in C++; target: within 1.2x), with no
   session and within one (where the DRAM tier keeps freed large blocks).
2. end-to-end inference of a ResNet-50 and BERT-base: plugin off, on with an
   all-DRAM policy (target: within 3% of off), and on with everything on
   memkind's PMEM kind in /dev/shm (when libmemkind is installed).
Modes are interleaved round by round, so drift on a shared machine hits all alike.

Usage: python benchmarks/overhead.py [--rounds 7] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import torch_tier as tt
from torch_tier import _C, memkind, tiers, zoo

SIZES = [64, 1 << 10, 16 << 10, 256 << 10, 1 << 20, 16 << 20, 64 << 20]


def human(n: int) -> str:
    for unit, scale in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n // scale} {unit}"
    return f"{n} B"


def allocation_table(rounds: int) -> list[str]:
    """ns per allocate + free: PyTorch's default, torch-tier's DRAM path with no session
    (plain malloc), and within a session (freed blocks of 64 KiB and up kept for reuse)."""
    rows = ["| size | PyTorch default (ns) | torch-tier DRAM (ns) | ratio | torch-tier DRAM, session on (ns) | ratio |",
            "|---:|---:|---:|---:|---:|---:|"]
    for size in SIZES:
        iterations = max(200, min(200_000, (256 << 20) // size))
        default, tiered, session = [], [], []
        for _ in range(rounds):
            default.append(_C.time_alloc_free(size, iterations, False))
            tiered.append(_C.time_alloc_free(size, iterations, True))
            tiers.activate(tiers.parse_pm("sim"), "fallback")
            try:
                session.append(_C.time_alloc_free(size, iterations, True))
            finally:
                tiers.deactivate()
        d, t, s = (statistics.median(v) for v in (default, tiered, session))
        rows.append(f"| {human(size)} | {d:,.0f} | {t:,.0f} | {t / d:.2f}x | {s:,.0f} | {s / d:.2f}x |")
    return rows


def time_forward(model: torch.nn.Module, inputs: tuple, repeats: int) -> float:
    with torch.no_grad():
        model(*inputs)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            model(*inputs)
    return (time.perf_counter() - start) / repeats


def latency_rows(name: str, workload: zoo.Workload, rounds: int, repeats: int) -> list[str]:
    model, inputs = workload.model, workload.inputs
    # A sim tier meters every node (its simulated delay); a memkind tier runs
    # only the tier-switching hooks, which is what placement itself costs.
    plain = "memkind:/dev/shm" if memkind.available() else "sim"
    modes = {"plugin off": None, f"all-DRAM policy (pm={plain})": ("dram", plain)}
    if memkind.available():
        modes["all memkind:/dev/shm"] = ("pm", "memkind:/dev/shm")
    samples: dict[str, list[float]] = {mode: [] for mode in modes}
    for _ in range(rounds):
        for mode, setting in modes.items():
            if setting is None:
                samples[mode].append(time_forward(model, inputs, repeats))
                continue
            tier, pm = setting
            with tt.enable(tt.Policy.uniform(model, tier, tier), model, pm=pm):
                samples[mode].append(time_forward(model, inputs, repeats))
    off = statistics.median(samples["plugin off"])
    rows = []
    for mode, values in samples.items():
        median = statistics.median(values)
        spread = (max(values) - min(values)) / median * 100
        rows.append(f"| {name} | {mode} | {median * 1e3:.1f} | ±{spread / 2:.1f}% | {median / off - 1:+.1%} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="small models, few rounds (a smoke run)")
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op threads, "
          f"memkind {'present' if memkind.available() else 'absent'}\n")
    print("## allocate + free, one thread\n")
    print("\n".join(allocation_table(rounds)))
    size = dict(width=0.25, depth=0.25) if args.quick else {}
    image = dict(image_size=64) if args.quick else {}
    print("\n## inference latency (median over rounds)\n")
    print("| model | mode | ms | spread | vs off |\n|---|---|---:|---:|---:|")
    for name, workload, repeats in (
        ("resnet50", zoo.build("resnet50", **size, **image), 3),
        ("bert-base", zoo.build("bert-base", **size), 3),
    ):
        print("\n".join(latency_rows(name, workload, rounds, repeats)), flush=True)


if __name__ == "__main__":
    main()
