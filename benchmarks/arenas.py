"""Planned arenas vs the dynamic allocator: bytes per tier, latency, and tasks that fit.

For each model, all activations on the simulated pm tier (weights in DRAM):
- pm bytes the forward really touches: the dynamic arena's high-water mark
  (first fit), the planned arena, and the lower bound (most bytes live at once);
- latency with the dynamic allocator and with the planned arenas (median,
  interleaved rounds);
- how many concurrent inference tasks fit on the seed paper's server,
  16 GiB DRAM + 128 GiB PM, when each task needs its weights in DRAM and its
  activation arena in PM.
Prints a markdown table and writes benchmarks/results/arenas.md.

Usage: python benchmarks/arenas.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

import torch_tier as tt
from torch_tier import _C, arenas, zoo

DRAM, PM = 16 << 30, 128 << 30
RESULTS = Path(__file__).resolve().parent / "results" / "arenas.md"


def dynamic_high_water(work: zoo.Workload, policy: tt.Policy) -> int:
    with tt.enable(policy, work.model, pm="sim"), torch.no_grad():
        work.model(*work.inputs)
        return _C.pm_layout()["high_water"]


def latencies(work: zoo.Workload, graph: tt.TierGraph, policy: tt.Policy, rounds: int) -> tuple[float, float]:
    dynamic, planned = [], []
    for _ in range(rounds):
        dynamic.append(tt.measure(work.model, work.inputs, policy, pm="sim:dram", repeats=3).median)
        planned.append(tt.measure(work.model, work.inputs, policy, pm="sim:dram", repeats=3,
                                  arena="planned", graph=graph).median)
    return statistics.median(dynamic), statistics.median(planned)


def mib(n: int) -> str:
    return f"{n / 2**20:,.1f}"


def row(name: str, work: zoo.Workload, rounds: int) -> str:
    graph = tt.capture(work.model, work.inputs, name=name, repeats=1)
    policy = graph.policy([tt.Placement("dram", "pm")] * len(graph.nodes))
    plan = arenas.plan_arenas(graph, policy)["pm"]
    dynamic = dynamic_high_water(work, policy)
    weights = sum(n.weight_bytes for n in graph.nodes)
    t_dynamic, t_planned = latencies(work, graph, policy, rounds)

    def tasks(activations: int) -> int:
        return min(DRAM // max(weights, 1), PM // max(activations, 1))

    return (f"| {name} | {len(graph.buffers)} | {mib(dynamic)} | {mib(plan.arena_bytes)} | {mib(plan.lower_bound)} "
            f"| {'yes' if plan.optimal else 'no'} | {t_dynamic * 1e3:.1f} | {t_planned * 1e3:.1f} "
            f"| {tasks(dynamic)} | {tasks(plan.arena_bytes)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small models, one round")
    args = parser.parse_args()
    small = dict(width=0.25, depth=0.25)
    models = [("resnet50", dict(image_size=64, **small) if args.quick else {}),
              ("bert-base", dict(seq_len=64, **small) if args.quick else {"seq_len": 128}),
              ("gpt2", dict(seq_len=64, **small) if args.quick else {"seq_len": 128})]
    lines = ["| model | buffers | dynamic pm MiB (first-fit high water) | planned MiB | lower bound MiB | optimal "
             "| dynamic ms | planned ms | tasks, dynamic | tasks, planned |",
             "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    for name, size in models:
        lines.append(row(name, zoo.build(name, **size), 1 if args.quick else 5))
        print(lines[-1], flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("Planned arenas vs the dynamic allocator (all activations on the simulated pm tier; "
                       "tasks on 16 GiB DRAM + 128 GiB PM).\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
