"""The trainer against the baselines: model fitness on ResNet-50 and BERT-base, measured fitness on a CNN.

(a) Model fitness (the cost model's prediction), ResNet-50 and BERT-base at
    full size, DRAM budget 25% on optane-100 (and ResNet-50 at 10%, where
    greedy is far from the optimum): the trained policy's predicted
    latency against baselines.optimal (the exact MILP optimum) after 5,000
    evaluations, with the population seeded from the baselines and without.
    Besides the ratio of latencies (which the all-DRAM time dominates) it
    reports the gap in slow-tier extra: (trained - optimal) / (optimal -
    all-DRAM), and when the best first came within 1% of the optimum's
    latency, within 1% of its extra, and to the optimum itself. A control
    row gives the best of as many random placements passed through the same
    repair and fill, so what the search adds over the repair is visible.
(b) Measured fitness on the simulated tier (sim:optane-100), ResNet-50 at
    112x112 pixels, 25%: 300 timed evaluations on one local worker, then the
    trained policy and every baseline timed side by side on that worker in
    interleaved rounds; memory mode is derived from the measured all-DRAM and
    all-PM rows (torch_tier/comparison.py). The per-round ratio trained / greedy is
    reported as well, since greedy and the optimum differ by less than the noise.

Prints markdown tables, writes benchmarks/results/train.md and a PNG curve per
run next to it. About 10 minutes on 2 shared cores (`nice -n 5`).

Usage: python benchmarks/train.py [--evaluations 5000] [--timed 300] [--rounds 20] [--threads 1]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from torch_tier import baselines, host, predict, zoo
from torch_tier.comparison import compare, placements
from torch_tier.graph import TierGraph
from torch_tier.graph_capture import capture
from torch_tier.placement import PlacementSpace
from torch_tier.report import table
from torch_tier.trainer import train
from torch_tier.trainer.budget import Budget
from torch_tier.trainer.chromosome import Chromosome
from torch_tier.trainer.fitness import measured

RESULTS = Path(__file__).resolve().parent / "results"
BUDGET = "25%"  # of the measured part
DEVICE = "optane-100"
MODELS = {"resnet50": ({"batch": 1, "image_size": 224}, ["25%", "10%"]),
          "bert-base": ({"batch": 1, "seq_len": 128}, ["25%"])}
MEASURED = ("resnet50", {"batch": 1, "image_size": 112})


def first_within(best: list[tuple[int, float]], target: float) -> str:
    """Evaluations after which the best, as (evaluations, seconds) pairs, first came within `target`."""
    return next((str(n) for n, seconds in best if seconds <= target), "never")


def random_search(graph: TierGraph, limit: int, evaluations: int, seed: int) -> list[tuple[int, float]]:
    """The control: the best predicted latency so far over `evaluations` random placements
    (random chromosomes at temperature 1), each through the trainer's repair and fill."""
    space = PlacementSpace(graph)
    budget = Budget(space, limit)
    rng = np.random.default_rng(seed)
    latencies = [predict(graph, space.policy(budget.repair(*Chromosome.random(space.nodes, rng).sample(rng))), DEVICE)
                 for _ in range(evaluations)]
    return list(enumerate(np.minimum.accumulate(latencies).tolist(), start=1))


def row(label: str, best: list[tuple[int, float]], optimal: float, extra: float, seconds: str) -> str:
    """A table row for a search whose best so far is `best`."""
    final = best[-1][1]
    return (f"| {label} | {final * 1e3:.3f} | {final / optimal:.5f} | {(final - optimal) / extra:+.2%} | "
            f"{first_within(best, optimal * 1.01)} | {first_within(best, optimal + 0.01 * extra)} | "
            f"{first_within(best, optimal * (1 + 1e-9))} | {best[-1][0]} | {seconds} |")


def model_fitness(name: str, graph: TierGraph, workload: zoo.Workload, budget: str, args: argparse.Namespace) -> str:
    """Part (a) for one model and budget: seeded and unseeded runs and the control, against the optimum."""
    limit = baselines.dram_budget(graph, budget)
    optimal = predict(graph, baselines.optimal(graph, limit, DEVICE), DEVICE)
    greedy = predict(graph, baselines.greedy(graph, limit, DEVICE), DEVICE)
    extra = optimal - graph.base_time
    rows = []
    for seeded in (True, False):
        label = "seeded" if seeded else "unseeded"
        print(f"{name} at {budget}: model fitness, {label} ...", file=sys.stderr)
        result = train(workload.model, workload.inputs, dram_budget=limit, pm=f"sim:{DEVICE}", fitness="model",
                       evaluations=args.evaluations, seed=args.seed, seed_baselines=seeded, graph=graph)
        result.save_plot(RESULTS / f"train.{name}-{budget.rstrip('%')}-{label}.png",
                         {"optimal": optimal, "greedy": greedy})
        best = [(g.evaluations, g.best) for g in result.history]
        rows.append(row(f"trained, {label}", best, optimal, extra, f"{result.history[-1].wall_time:.0f}"))
    rows.append(row("control: random placements, same repair", random_search(graph, limit, args.evaluations,
                                                                               args.seed), optimal, extra, ""))
    return "\n".join([
        f"### {name} ({len(graph.nodes)} nodes), DRAM budget {budget} ({limit / 2**20:.1f} MiB), model fitness",
        "",
        f"Optimal (MILP) {optimal * 1e3:.3f} ms; all-DRAM {graph.base_time * 1e3:.3f} ms, so the optimum's slow-tier "
        f"extra is {extra * 1e3:.3f} ms; greedy {greedy * 1e3:.3f} ms ({(greedy - optimal) / extra:+.2%} of that "
        f"extra), all-PM {predict(graph, baselines.all_pm(graph, limit, DEVICE), DEVICE) * 1e3:.3f} ms.",
        "",
        "| search | best ms | best / optimal | gap in slow-tier extra | evaluations to within 1% of the optimum "
        "| to within 1% of its extra | to the optimum | evaluations | seconds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows, ""])


def measured_fitness(args: argparse.Namespace) -> str:
    """Part (b): train on timed runs, then time everything side by side on the same worker."""
    name, size = MEASURED
    workload = zoo.build(name, **size)
    graph = capture(workload.model, workload.inputs, name=f"{name}@{size['image_size']}", repeats=10)
    limit = baselines.dram_budget(graph, BUDGET)
    pm = f"sim:{DEVICE}"
    print(f"{graph.model_name}: measured fitness ...", file=sys.stderr)
    result = train(workload.model, workload.inputs, dram_budget=limit, pm=pm, fitness="measured",
                   evaluations=args.timed, population=10, seed=args.seed, workers=1, graph=graph)
    named = placements(graph, limit, DEVICE, result.policy)
    print(f"{graph.model_name}: timing {len(named)} policies side by side, {args.rounds} rounds ...", file=sys.stderr)
    with measured(workload.model, workload.inputs, graph, pm, workers=1, repeats=3) as judge:
        rows = compare(graph, named, limit, DEVICE, judge, args.rounds)
        space = PlacementSpace(graph)
        encoded = {n: space.encode(p) for n, p in named.items()}
        pair = {n: encoded[n] for n in ("trained", "greedy")}
        ratios = [statistics.median(s["trained"]) / statistics.median(s["greedy"])
                  for s in (judge.compare(pair, 1) for _ in range(args.rounds))]
    result.save_plot(RESULTS / "train.measured.png", {r.name: r.measured for r in rows
                                                      if r.name in ("greedy", "first-touch", "interleave")})
    q = statistics.quantiles(ratios, n=4)
    return "\n".join([
        f"### {graph.model_name} ({len(graph.nodes)} nodes), DRAM budget {BUDGET} ({limit / 2**20:.1f} MiB), "
        f"measured fitness on {pm}",
        "",
        f"{result.history[-1].evaluations} timed evaluations in {len(result.history)} generations, "
        f"{result.history[-1].wall_time:.0f} s; the returned placement was timed "
        f"{result.policy.metadata['samples']} times. Side by side: {args.rounds} rounds x 3 runs per policy "
        "(median, ± half the interquartile range over the median).",
        "",
        table(rows, against="optimal"),
        "",
        f"The trained placement differs from greedy's in {(encoded['trained'] != encoded['greedy']).sum()} and "
        f"from the optimum's in {(encoded['trained'] != encoded['optimal']).sum()} of "
        f"{space.decisions} decisions. Paired, {args.rounds} further rounds timing only trained and greedy: "
        f"median ratio trained / greedy {statistics.median(ratios):.4f} (interquartile range {q[0]:.4f} to "
        f"{q[2]:.4f}).",
        ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--evaluations", type=int, default=5000, help="model-fitness evaluations per run")
    parser.add_argument("--timed", type=int, default=300, help="measured-fitness evaluations")
    parser.add_argument("--rounds", type=int, default=20, help="side-by-side rounds of the measured comparison")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (1: steadiest on 2 shared cores)")
    parser.add_argument("--skip-model", action="store_true", help="only part (b)")
    parser.add_argument("--skip-measured", action="store_true", help="only part (a)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    sections = []
    if not args.skip_model:
        for name, (size, budgets) in MODELS.items():
            workload = zoo.build(name, **size)
            print(f"capturing {name} ...", file=sys.stderr)
            graph = capture(workload.model, workload.inputs, name=name, repeats=10)
            sections += [model_fitness(name, graph, workload, budget, args) for budget in budgets]
    if not args.skip_measured:
        sections.append(measured_fitness(args))
    memory = host.host()
    header = [
        "## The trainer against the baselines",
        "",
        f"`python benchmarks/train.py --evaluations {args.evaluations} --timed {args.timed} --rounds {args.rounds} "
        f"--threads {args.threads}` on {platform.node()} (2 cores shared with other jobs, {args.threads} intra-op "
        f"thread(s), torch {torch.__version__}, host DRAM {memory.read_bw_gbs:.1f}/{memory.write_bw_gbs:.1f} GB/s), "
        f"{time.strftime('%Y-%m-%d')}, {time.perf_counter() - start:.0f} s in all. Latencies per inference, "
        f"batch 1. Curves: benchmarks/results/train.*.png.",
        "",
    ]
    text = "\n".join(header + sections)
    print(text)
    (RESULTS / "train.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
