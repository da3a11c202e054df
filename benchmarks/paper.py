"""The MARL paper's experiments (seed 001, section 6, figures 9 to 12) on the simulated Optane tier.

Workload: Wide ResNet-101-2 (the paper's), batch 1, at --image-size (default
112 instead of 224, a quarter of the compute, so the whole run takes about
half an hour on 2 cores; the layer structure and weights are unchanged).
Memory: the paper's server split, 16 GB DRAM : 128 GB PM. One task's DRAM
budget is 1/9 of its all-DRAM footprint (the DRAM share of the server's
memory); the capacity count uses the server's literal 16 + 128 GiB.

- Figure 9: one inference per mode: DRAM only, memory mode (a model: DRAM as a
  cache in front of PM), random PM+DRAM placement, first touch, greedy,
  optimal under the cost model, and the trained policies (--seeds independent
  runs, measured fitness on the simulated tier, --evaluations timed
  placements each; the paper: 300), timed side by side in --rounds rounds,
  with 95% intervals.
- Figure 10: how many concurrent tasks fit per mode, from the graph's
  footprint (and planned arenas), with a small count checked for real:
  that many processes running the model, their memory measured with psutil.
- Figure 11: latency per task as 1, 2, 4 tasks run in parallel processes.
- Figure 12: the training curves of every seed.
Writes benchmarks/results/paper.md and paper_fig*.png.

Usage: python benchmarks/paper.py [--image-size 112] [--evaluations 300] [--seeds 3] [--quick]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
from pathlib import Path

import psutil
import torch

import torch_tier as tt
from torch_tier import arenas, baselines, zoo
from torch_tier.trainer import TrainResult, train

RESULTS = Path(__file__).resolve().parent / "results"
DRAM_GIB, PM_GIB = 16, 128
PAPER = {
    "fig9": "MARL 1.2x faster than memory mode and 3.2x faster than random OS placement",
    "fig10": "85 parallel tasks with MARL vs 65 with memory mode (16 GB DRAM + 128 GB PM)",
    "fig12": "converged after 300 timed iterations (about 20 minutes)",
}


def bar_chart(path: Path, labels: list[str], values: list[float], ylabel: str, title: str,
              intervals: list[tuple[float, float] | None] | None = None) -> None:
    """Bars, with error bars where `intervals` gives a (low, high) pair."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 4.8))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    errors = None
    if intervals:
        errors = [[v - i[0] if i else 0 for v, i in zip(values, intervals)],
                  [i[1] - v if i else 0 for v, i in zip(values, intervals)]]
    axes.bar(labels, values, color=[f"C{i}" for i in range(len(labels))], yerr=errors, capsize=4)
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.tick_params(axis="x", labelrotation=20)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def figure9(work: zoo.Workload, graph: tt.TierGraph, budget: int, trained: list[tt.Policy],
            rounds: int) -> list[str]:
    """Every mode timed side by side: `rounds` rounds of 3 inferences each, each round visiting every mode."""
    modes = {
        "DRAM only": baselines.all_dram(graph),
        "random PM+DRAM": baselines.interleave(graph, budget),
        "first touch": baselines.first_touch(graph, budget),
        "greedy": baselines.greedy(graph, budget),
        "optimal (cost model)": baselines.optimal(graph, budget),
    } | {f"trained, seed {p.metadata['seed']}": p for p in trained}
    samples: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(rounds):  # interleaved rounds: load drift falls on every mode alike
        for name, policy in modes.items():
            samples[name] += tt.measure(work.model, work.inputs, policy, pm="sim:optane-100", repeats=3).samples
    timed = {name: tt.Measurement(tuple(s)) for name, s in samples.items()}
    reference = statistics.median(timed[f"trained, seed {p.metadata['seed']}"].median for p in trained)
    memory_mode = baselines.memory_mode_latency(graph, budget)
    lines = [f"{rounds} rounds x 3 inferences per mode, side by side; medians with distribution-free 95% "
             f"intervals; ratios against the median of the {len(trained)} trained policies "
             f"({reference * 1e3:.1f} ms).", "",
             "| mode | measured ms | 95% interval | predicted ms | vs trained |", "|---|---:|---:|---:|---:|"]
    for name, m in timed.items():
        low, high = m.interval()
        lines.append(f"| {name} | {m.median * 1e3:.1f} | {low * 1e3:.1f} to {high * 1e3:.1f} "
                     f"| {tt.predict(graph, modes[name]) * 1e3:.1f} | {m.median / reference:.2f}x |")
    lines.append(f"| memory mode (model) | (model) | | {memory_mode * 1e3:.1f} | {memory_mode / reference:.2f}x |")
    labels = list(timed) + ["memory mode (model)"]
    bar_chart(RESULTS / "paper_fig9.png", [label.replace(", seed ", " ") for label in labels],
              [m.median * 1e3 for m in timed.values()] + [memory_mode * 1e3], "ms per inference",
              f"WRN-101-2, DRAM budget {budget / 2**20:.0f} MiB, sim:optane-100 (95% intervals)",
              [tuple(v * 1e3 for v in m.interval()) for m in timed.values()] + [None])
    return lines


def figure10(graph: tt.TierGraph, policy: tt.Policy) -> tuple[list[str], dict[str, int]]:
    footprint = sum(graph.footprint(policy).values())
    planned = sum(n.weight_bytes for n in graph.nodes) + sum(p.arena_bytes for p in arenas.plan_arenas(graph, policy).values())
    gib = 1 << 30
    tasks = {
        "DRAM only": DRAM_GIB * gib // footprint,
        "memory mode (PM is the memory, DRAM its cache)": PM_GIB * gib // footprint,
        "placement over DRAM + PM": (DRAM_GIB + PM_GIB) * gib // footprint,
        "placement + planned arenas": (DRAM_GIB + PM_GIB) * gib // planned,
    }
    lines = [f"Per task: {footprint / 2**20:.1f} MiB (weights + peak live activations), "
             f"{planned / 2**20:.1f} MiB with planned arenas.", "",
             "| mode | tasks in 16 GiB DRAM + 128 GiB PM |", "|---|---:|"]
    lines += [f"| {name} | {count} |" for name, count in tasks.items()]
    bar_chart(RESULTS / "paper_fig10.png", ["DRAM only", "memory mode", "placement", "placement+planned"],
              list(tasks.values()), "concurrent tasks", "Tasks that fit, 16 GiB DRAM + 128 GiB PM")
    return lines, {"footprint": footprint}


def _task(args: tuple) -> tuple[float, int]:
    """One task in its own process: build the model, run it under the policy; (median s, RSS growth)."""
    image_size, policy_dict, inferences, start = args
    torch.set_num_threads(1)
    before = psutil.Process().memory_info().rss
    work = zoo.build("wide_resnet101_2", image_size=image_size)
    policy = tt.Policy.from_dict(policy_dict)
    while time.time() < start:  # all tasks begin together
        time.sleep(0.01)
    result = tt.measure(work.model, work.inputs, policy, pm="sim:optane-100", repeats=inferences, warmup=1)
    return result.median, psutil.Process().memory_info().rss - before


def run_parallel(image_size: int, policy: tt.Policy, tasks: int, inferences: int) -> list[tuple[float, int]]:
    start = time.time() + 2 + tasks
    with mp.get_context("spawn").Pool(tasks) as pool:
        return pool.map(_task, [(image_size, policy.to_dict(), inferences, start)] * tasks)


def figure11(image_size: int, policy: tt.Policy, counts: list[int], inferences: int) -> tuple[list[str], int]:
    lines = ["| parallel tasks | latency per task, ms (median over tasks) | range over tasks, ms "
             "| memory per task, MiB (psutil) |", "|---:|---:|---:|---:|"]
    latencies, ranges, rss = [], [], 0
    for count in counts:
        results = run_parallel(image_size, policy, count, inferences)
        per_task = [r[0] * 1e3 for r in results]
        latencies.append(statistics.median(per_task))
        ranges.append((min(per_task), max(per_task)))
        rss = max(rss, max(r[1] for r in results))
        lines.append(f"| {count} | {latencies[-1]:.1f} | {min(per_task):.1f} to {max(per_task):.1f} "
                     f"| {statistics.median(r[1] for r in results) / 2**20:.0f} |")
        print(lines[-1], flush=True)
    bar_chart(RESULTS / "paper_fig11.png", [str(c) for c in counts], latencies,
              "ms per inference, per task", "Latency as parallel tasks grow (2 cores; bars: range over tasks)", ranges)
    return lines, rss


def figure12(results: list[TrainResult]) -> None:
    """Every seed's best-so-far and generation-median curves on one plot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.8))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for i, result in enumerate(results):
        evaluations = [g.evaluations for g in result.history]
        seed = result.policy.metadata["seed"]
        axes.plot(evaluations, [g.median * 1e3 for g in result.history], color=f"C{i}", alpha=0.35, linewidth=1)
        axes.plot(evaluations, [g.best * 1e3 for g in result.history], color=f"C{i}", label=f"seed {seed}: best")
    axes.set_xlabel("timed evaluations")
    axes.set_ylabel("ms per inference (measured; faint: generation median)")
    axes.set_title("Training on sim:optane-100, WRN-101-2")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(RESULTS / "paper_fig12.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--evaluations", type=int, default=300, help="timed evaluations for training (paper: 300)")
    parser.add_argument("--seeds", type=int, default=3, help="independent training runs (seeds 0, 1, ...)")
    parser.add_argument("--rounds", type=int, default=5, help="side-by-side rounds of 3 inferences in figure 9")
    parser.add_argument("--repeats", type=int, default=9, help="timed inferences per task in figure 11")
    parser.add_argument("--quick", action="store_true", help="a small smoke run (image 32, 40 evaluations)")
    args = parser.parse_args()
    global RESULTS
    if args.quick:  # a smoke run: its figures go to results/tmp/, not over the real ones
        args.image_size, args.evaluations, args.repeats, args.rounds, args.seeds = 32, 40, 3, 2, 2
        RESULTS = RESULTS / "tmp"
    torch.set_num_threads(1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.time()
    work = zoo.build("wide_resnet101_2", image_size=args.image_size)
    graph = tt.capture(work.model, work.inputs, name="wide_resnet101_2")
    budget = baselines.dram_budget(graph, 1 / 9)
    print(f"captured {len(graph.nodes)} nodes; DRAM budget {budget / 2**20:.1f} MiB", flush=True)
    results = []
    for seed in range(args.seeds):
        print(f"training, seed {seed} ...", flush=True)
        results.append(train(work.model, work.inputs, dram_budget=budget, pm="sim:optane-100", fitness="measured",
                             evaluations=args.evaluations, graph=graph, seed=seed))
    figure12(results)
    fig9 = figure9(work, graph, budget, [r.policy for r in results], args.rounds)
    fig10, sizes = figure10(graph, results[0].policy)
    fig11, rss = figure11(args.image_size, results[0].policy, [1, 2] if args.quick else [1, 2, 4], args.repeats)
    curves = "; ".join(f"seed {r.policy.metadata['seed']}: best {r.latency * 1e3:.1f} ms after "
                       f"{r.history[-1].wall_time / 60:.1f} min" for r in results)
    text = "\n".join([
        "# The MARL paper's experiments on the simulated Optane tier",
        "",
        f"Wide ResNet-101-2, batch 1, {args.image_size}x{args.image_size} images, 1 intra-op thread per task, "
        f"sim:optane-100; DRAM budget per task {budget / 2**20:.1f} MiB (1/9 of the all-DRAM footprint, the "
        f"paper's 16:128 GB split). Run took {(time.time() - started) / 60:.0f} min.",
        "", "## Figure 9: one inference per mode", "", f"Paper: {PAPER['fig9']}.", "", *fig9,
        "", "![figure 9](paper_fig9.png)",
        "", "## Figure 10: concurrent tasks that fit", "", f"Paper: {PAPER['fig10']}.", "", *fig10, "",
        f"Checked for real: the largest growth in a task process's resident memory was {rss / 2**20:.0f} MiB, "
        f"against {sizes['footprint'] / 2**20:.0f} MiB estimated from the graph (the process also holds "
        "PyTorch itself and the all-DRAM copy of the weights made before the policy moves them).",
        "", "![figure 10](paper_fig10.png)",
        "", "## Figure 11: latency per task as parallel tasks grow", "", *fig11, "", "![figure 11](paper_fig11.png)",
        "", "## Figure 12: training curves", "", f"Paper: {PAPER['fig12']}. Here: {args.evaluations} timed "
        f"evaluations per run, {args.seeds} runs; {curves}.", "", "![figure 12](paper_fig12.png)", ""])
    (RESULTS / "paper.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
