"""ResNet-50 with every tensor on memkind:/dev/shm against the all-DRAM policy, process by process.

issue 16 saw some processes run memkind 16% to 21% slower throughout (benchmarks/results/
overhead.md). This looks for such a process: each child process times both modes in interleaved
rounds (shuffled order, a fresh kind per round as in benchmarks/overhead.py) on the timing
thread's CPU time with one intra-op thread, and prints memkind/DRAM per round. A child whose
median ratio passes --threshold then runs more rounds and the profiler (self time per op,
memkind over DRAM: the profiler's op intervals are wall time, so on a busy machine one op's figure
can be off by several times; compare them across slow processes) and times a streaming read of one forward's activations in each tier, so that
a slow process says what is slow in it.

Usage: python benchmarks/memkind_split.py [--processes 10] [--rounds 3] [--threshold 1.1]
       [--image-size 224]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time


def child(rounds: int, threshold: float, image_size: int) -> None:
    import torch
    from torch.profiler import profile

    import torch_tier as tt
    from torch_tier import clocks, zoo

    torch.set_num_threads(1)
    workload = zoo.build("resnet50", image_size=image_size)
    model, inputs = workload.model, workload.inputs
    kept: list[torch.Tensor] = []

    def keep(module, args, out):
        if isinstance(out, torch.Tensor) and out.nbytes >= (256 << 10):
            kept.append(out)

    def forward(repeats: int) -> float:
        with torch.no_grad():
            model(*inputs)  # warm-up
            start = clocks.now()
            for _ in range(repeats):
                model(*inputs)
            return (clocks.now() - start) / repeats

    def stream_gbs() -> float:
        """GB/s of a sum over one forward's activations (those of 256 KiB and up) in the current tier."""
        kept.clear()
        handles = [m.register_forward_hook(keep) for m in model.modules() if not list(m.children())]
        with torch.no_grad():
            model(*inputs)
        for h in handles:
            h.remove()
        best = min(_timed(lambda: [t.sum() for t in kept], clocks) for _ in range(3))
        total = sum(t.nbytes for t in kept)
        kept.clear()
        return total / best / 1e9

    def run(n: int, extra: bool) -> tuple[dict[str, list[float]], dict[str, dict[str, float]], dict[str, float]]:
        samples: dict[str, list[float]] = {"dram": [], "pm": []}
        ops: dict[str, dict[str, float]] = {}
        stream: dict[str, float] = {}
        order = list(samples)
        shuffle = random.Random(0).shuffle
        for r in range(n):
            shuffle(order)
            for mode in order:
                with tt.enable(tt.Policy.uniform(model, mode, mode), model, pm="memkind:/dev/shm"):
                    samples[mode].append(forward(3))
                    if extra and r == n - 1:
                        with torch.no_grad(), profile() as prof:
                            for _ in range(3):
                                model(*inputs)
                        ops[mode] = {e.key: e.self_cpu_time_total for e in prof.key_averages()}
                        stream[mode] = stream_gbs()
        return samples, ops, stream

    with clocks.use("cpu"):
        samples, _, _ = run(rounds, extra=False)
    ratios = [pm / dram for pm, dram in zip(samples["pm"], samples["dram"])]
    ratio = statistics.median(samples["pm"]) / statistics.median(samples["dram"])
    print(f"pid {os.getpid()} load {os.getloadavg()[0]:.1f} memkind/DRAM {ratio:.3f} "
          f"(DRAM {statistics.median(samples['dram']) * 1e3:.1f} ms; rounds "
          + " ".join(f"{x:.3f}" for x in ratios) + ")", flush=True)
    if ratio > threshold:
        with clocks.use("cpu"):
            samples, ops, stream = run(2 * rounds, extra=True)
        top = sorted(ops["dram"], key=lambda k: -ops["dram"][k])[:8]
        print("  slow: more rounds " + " ".join(f"{p / d:.3f}" for p, d in zip(samples["pm"], samples["dram"])))
        print("  profiler self time per op (wall intervals), memkind/DRAM: "
              + ", ".join(f"{k} {ops['pm'].get(k, 0.0) / max(ops['dram'][k], 1e-9):.2f}" for k in top))
        print(f"  streaming read of the activations: DRAM {stream['dram']:.1f} GB/s, memkind {stream['pm']:.1f} GB/s",
              flush=True)


def _timed(fn, clocks) -> float:
    start = clocks.now()
    fn()
    return clocks.now() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threshold", type=float, default=1.1, help="memkind/DRAM beyond which a process is looked into")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.rounds, args.threshold, args.image_size)
        return
    for i in range(args.processes):  # one at a time: each process its own address layout and kinds
        print(f"{time.strftime('%H:%M:%S')} process {i + 1}/{args.processes}: ", end="", flush=True)
        subprocess.run([sys.executable, __file__, "--child", "--rounds", str(args.rounds),
                        "--threshold", str(args.threshold), "--image-size", str(args.image_size)], check=True)


if __name__ == "__main__":
    main()
