"""Planned arenas vs the dynamic allocator: bytes per tier, latency, and tasks that fit.

For each model, weights and activations all on the simulated pm tier:
- activation bytes the forward really needs there: the dynamic arena's growth
  over the weights (first fit, high-water mark), the planned arena, and the
  lower bound (most bytes live at once);
- latency with the dynamic allocator and with the planned arenas (median,
  interleaved rounds);
- how many concurrent inference tasks fit in the seed paper's 128 GiB of PM,
  each holding its weights and its activations there.
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

PM = 128 << 30
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
    policy = graph.policy([tt.Placement("pm", "pm")] * len(graph.nodes))
    plan = arenas.plan_arenas(graph, policy)["pm"]
    weights = sum(n.weight_bytes for n in graph.nodes)
    dynamic = dynamic_high_water(work, policy) - weights  # the arena also holds the weights, placed first
    t_dynamic, t_planned = latencies(work, graph, policy, rounds)
    return (f"| {name} | {len(graph.buffers)} | {mib(weights)} | {mib(dynamic)} | {mib(plan.arena_bytes)} "
            f"| {mib(plan.lower_bound)} | {'yes' if plan.optimal else 'no'} | {t_dynamic * 1e3:.1f} "
            f"| {t_planned * 1e3:.1f} | {PM // (weights + dynamic)} | {PM // (weights + plan.arena_bytes)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small models, one round")
    args = parser.parse_args()
    small = dict(width=0.25, depth=0.25)
    models = [("resnet50", dict(image_size=64, **small) if args.quick else {}),
              ("bert-base", dict(seq_len=64, **small) if args.quick else {"seq_len": 128}),
              ("gpt2", dict(seq_len=64, **small) if args.quick else {"seq_len": 128})]
    lines = ["| model | buffers | weights MiB | activations MiB, dynamic (first fit) | planned MiB | lower bound MiB "
             "| optimal | dynamic ms | planned ms | tasks in 128 GiB, dynamic | tasks, planned |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    print("\n".join(lines), flush=True)
    for name, size in models:
        lines.append(row(name, zoo.build(name, **size), 1 if args.quick else 5))
        print(lines[-1], flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("Planned arenas vs the dynamic allocator (weights and activations on the simulated pm "
                       "tier; tasks that fit in 128 GiB of PM).\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
