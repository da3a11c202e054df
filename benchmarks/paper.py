"""The MARL paper's experiments (seed 001, section 6, figures 9 to 12) on the simulated Optane tier.

Workload: Wide ResNet-101-2 (the paper's), batch 1, at --image-size (default
112 instead of 224, a quarter of the compute, so the whole run takes about
half an hour on 2 cores; the layer structure and weights are unchanged).
Memory: the paper's server split, 16 GB DRAM : 128 GB PM. One task's DRAM
budget is 1/9 of its all-DRAM footprint (the DRAM share of the server's
memory); the capacity count uses the server's literal 16 + 128 GiB.

- Figure 9: one inference per mode: DRAM only, memory mode (a model: DRAM as a
  cache in front of PM), random PM+DRAM placement, first touch, greedy,
  optimal under the cost model, and the trained policy (measured fitness on
  the simulated tier, --evaluations timed placements; the paper: 300).
- Figure 10: how many concurrent tasks fit per mode, from the graph's
  footprint (and planned arenas), with a small count checked for real:
  that many processes running the model, their memory measured with psutil.
- Figure 11: latency per task as 1, 2, 4 tasks run in parallel processes.
- Figure 12: the training curve.
Writes benchmarks/results/paper.md and paper_fig*.png.

Usage: python benchmarks/paper.py [--image-size 112] [--evaluations 300] [--quick]
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
from torch_tier.train import train

RESULTS = Path(__file__).resolve().parent / "results"
DRAM_GIB, PM_GIB = 16, 128
PAPER = {
    "fig9": "MARL 1.2x faster than memory mode and 3.2x faster than random OS placement",
    "fig10": "85 parallel tasks with MARL vs 65 with memory mode (16 GB DRAM + 128 GB PM)",
    "fig12": "converged after 300 timed iterations (about 20 minutes)",
}


def bar_chart(path: Path, labels: list[str], values: list[float], ylabel: str, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.bar(labels, values, color=[f"C{i}" for i in range(len(labels))])
    axes.set_ylabel(ylabel)
    axes.set_title(title)
    axes.tick_params(axis="x", labelrotation=20)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def figure9(work: zoo.Workload, graph: tt.TierGraph, budget: int, trained: tt.Policy, repeats: int) -> list[str]:
    modes = {
        "DRAM only": baselines.all_dram(graph),
        "random PM+DRAM": baselines.interleave(graph, budget),
        "first touch": baselines.first_touch(graph, budget),
        "greedy": baselines.greedy(graph, budget),
        "optimal (cost model)": baselines.optimal(graph, budget),
        "trained": trained,
    }
    measured = {name: [] for name in modes}
    for _ in range(3):  # interleaved rounds: load drift falls on every mode alike
        for name, policy in modes.items():
            measured[name] += tt.measure(work.model, work.inputs, policy, pm="sim:optane-100",
                                         repeats=max(1, repeats // 3)).samples
    latency = {name: statistics.median(s) for name, s in measured.items()}
    latency["memory mode (model)"] = baselines.memory_mode_latency(graph, budget)
    lines = ["| mode | measured ms | predicted ms | vs trained |", "|---|---:|---:|---:|"]
    for name, seconds in latency.items():
        predicted = tt.predict(graph, modes[name]) if name in modes else seconds
        lines.append(f"| {name} | {'(model)' if name not in modes else f'{seconds * 1e3:.1f}'} "
                     f"| {predicted * 1e3:.1f} | {seconds / latency['trained']:.2f}x |")
    bar_chart(RESULTS / "paper_fig9.png", list(latency), [v * 1e3 for v in latency.values()], "ms per inference",
              f"WRN-101-2, DRAM budget {budget / 2**20:.0f} MiB, sim:optane-100")
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
    lines = ["| parallel tasks | latency per task, ms (median over tasks) | memory per task, MiB (psutil) |",
             "|---:|---:|---:|"]
    latencies, rss = [], 0
    for count in counts:
        results = run_parallel(image_size, policy, count, inferences)
        latencies.append(statistics.median(r[0] for r in results))
        rss = max(rss, max(r[1] for r in results))
        lines.append(f"| {count} | {latencies[-1] * 1e3:.1f} | {statistics.median(r[1] for r in results) / 2**20:.0f} |")
        print(lines[-1], flush=True)
    bar_chart(RESULTS / "paper_fig11.png", [str(c) for c in counts], [v * 1e3 for v in latencies],
              "ms per inference, per task", "Latency as parallel tasks grow (2 cores)")
    return lines, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--evaluations", type=int, default=300, help="timed evaluations for training (paper: 300)")
    parser.add_argument("--repeats", type=int, default=9, help="timed inferences per mode in figure 9")
    parser.add_argument("--quick", action="store_true", help="a small smoke run (image 32, 40 evaluations)")
    args = parser.parse_args()
    global RESULTS
    if args.quick:  # a smoke run: its figures go to results/tmp/, not over the real ones
        args.image_size, args.evaluations, args.repeats = 32, 40, 3
        RESULTS = RESULTS / "tmp"
    torch.set_num_threads(1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.time()
    work = zoo.build("wide_resnet101_2", image_size=args.image_size)
    graph = tt.capture(work.model, work.inputs, name="wide_resnet101_2")
    budget = baselines.dram_budget(graph, 1 / 9)
    print(f"captured {len(graph.nodes)} nodes; DRAM budget {budget / 2**20:.1f} MiB", flush=True)
    result = train(work.model, work.inputs, dram_budget=budget, pm="sim:optane-100", fitness="measured",
                   evaluations=args.evaluations, graph=graph, seed=0)
    result.save_plot(RESULTS / "paper_fig12.png")
    fig9 = figure9(work, graph, budget, result.policy, args.repeats)
    fig10, sizes = figure10(graph, result.policy)
    fig11, rss = figure11(args.image_size, result.policy, [1, 2] if args.quick else [1, 2, 4], args.repeats)
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
        "", "## Figure 12: training curve", "", f"Paper: {PAPER['fig12']}. Here: {args.evaluations} timed "
        f"evaluations, best {result.latency * 1e3:.1f} ms after "
        f"{result.history[-1].wall_time / 60:.1f} min.", "", "![figure 12](paper_fig12.png)", ""])
    (RESULTS / "paper.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
