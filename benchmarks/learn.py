"""Does measured search beat the model-based placement when the device is not what the model assumes?

For each emulated device model (torch_tier.device_models: a device whose
behaviour the cost model does not describe) and each workload (a CNN, a
transformer, a recsys model with embeddings) at one DRAM budget, these
placements are found and then timed side by side on that device:

- all-DRAM (ignores the budget: the floor), first-touch (the OS);
- greedy and optimal on the cost model of the *assumed* profile (optane-100);
- optimal on the *calibrated* model: calibrate_device's fit to at most
  `--probes` + `--holdout` timed runs on the device, then the exact optimum;
- trained: the ERL trainer with measured fitness on the device, at most
  `--evaluations` timed runs, seeded (started from optimal(assumed), the
  first incumbent, with the baselines in the first population) and
  unseeded (random chromosomes only);
- best known: the best of all of these and of an offline analysis
  (sequential linearisation of the device model over the graph's traffic,
  torch_tier.traffic.graph_traffic): what is known to be reachable.

Every timing reads `--clock` (torch_tier.clocks), by default the timing
thread's CPU time, which other jobs on a shared machine leave steady.
Timing is paired: `--rounds` rounds, each timing every placement once in a
shuffled order (`--repeats` forwards after a warm-up); each placement's
figure is the median over rounds of its time over optimal(assumed)'s in the
same round, with a distribution-free 95% interval (timing.Measurement).

An ablation follows on the (device, workload) where the assumed optimum is
furthest from the best known: evolution only, learner only, both, with and
without the model-based member, over `--seeds` seeds at the same budget of
timed runs. Per seed, every configuration's result and optimal(assumed) are
re-timed side by side in `--rounds` paired rounds, so each configuration has a
paired interval against optimal(assumed) and against the full trainer (both +
model member), per seed and pooled over the seeds' rounds. `--ablation-only`
runs the ablation alone on the one `--workloads` / `--devices` given (no case
rows), into results/tmp/learn.md, to merge by hand.

The emulated devices are research stand-ins (see device_models), not claims
about real hardware; only their difference from the assumed profile matters
here. Results: benchmarks/results/learn.md and learn.png.

    python benchmarks/learn.py            # the full run (about an hour on 2 cores)
    python benchmarks/learn.py --quick    # one workload, one device, small budgets
    python benchmarks/learn.py --ablation-only --workloads recsys --devices optane-threads --seeds 3
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from torch_tier import baselines, clocks, devices, placement, zoo
from torch_tier.calibrate import calibrate_device
from torch_tier.cost_model import GraphCosts
from torch_tier.graph import TierGraph
from torch_tier.graph_capture import capture
from torch_tier.timing import Measurement, measure
from torch_tier.traffic import graph_traffic
from torch_tier.trainer.config import TrainConfig
from torch_tier.trainer.erl import train

RESULTS = Path(__file__).parent / "results"
ASSUMED = "optane-100"
WORKLOADS = {  # small enough that hundreds of timed runs take minutes
    "cnn": ("resnet50", {"batch": 1, "image_size": 64, "width": 0.5, "depth": 0.5}),
    "transformer": ("bert-base", {"seq_len": 32, "width": 0.5, "depth": 0.5}),
    "recsys": ("dlrm", {"batch": 256, "rows": 0.05, "lookups": 32}),
}
ABLATION = {
    "evolution only": {"learner": False, "model_member": False},
    "learner only": {"evolution": False, "model_member": False},
    "both": {"model_member": False},
    "both + model member": {},
    "evolution + model member": {"learner": False},
}
FULL = "both + model member"  # the trainer's defaults: the ablation's second yardstick


def say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


@dataclass
class Case:
    """One (workload, device): the placements found, and how long finding them took in timed runs."""

    workload: str
    device: str
    graph: TierGraph
    found: dict[str, np.ndarray] = field(default_factory=dict)
    runs: dict[str, int] = field(default_factory=dict)  # timed runs each search used
    ratios: dict[str, Measurement] = field(default_factory=dict)  # time / optimal(assumed), paired, per round
    calibration: str = ""  # what the calibration fitted, in words


def device_latency(graph: TierGraph, array: np.ndarray, model) -> float:
    """The device model's latency of a placement over the graph's traffic (analysis only, never timing)."""
    return graph.base_time + sum(model(t) for t in graph_traffic(graph, array))


def linearised_optimum(graph: TierGraph, start: np.ndarray, budget: int, model, rounds: int = 4) -> np.ndarray:
    """Sequential linearisation of the device model: each decision's marginal extra at the current
    placement, the exact optimum of that linear model within the budget, repeated while it improves."""
    best, best_time = start, device_latency(graph, start, model)
    n = len(graph.nodes)
    for _ in range(rounds):
        marginal = np.zeros((n, 2))
        for i in range(n):
            for head in (0, 1):
                high, low = best.copy(), best.copy()
                high[i, head], low[i, head] = 1, 0
                marginal[i, head] = max(device_latency(graph, high, model) - device_latency(graph, low, model), 0.0)
        costs = GraphCosts(weight=marginal[:, 0], write=marginal[:, 1], read_src=np.zeros(0, int),
                           read_dst=np.zeros(0, int), read=np.zeros(0), compute=np.zeros(n), base_time=graph.base_time)
        candidate = placement.to_array(graph, baselines.optimal(graph, budget, costs=costs))
        candidate_time = device_latency(graph, candidate, model)
        if candidate_time >= best_time * (1 - 1e-6):
            break
        best, best_time = candidate, candidate_time
    return best


def time_paired(model: torch.nn.Module, inputs: tuple, graph: TierGraph, pm: str, found: dict[str, np.ndarray],
                reference: str, rounds: int, repeats: int, seed: int = 0) -> dict[str, Measurement]:
    """Each placement's time over `reference`'s in the same round, over `rounds` shuffled rounds."""
    per_round = time_rounds(model, inputs, graph, pm, found, rounds, repeats, seed)
    return {name: paired(per_round, name, reference) for name in found}


def paired(per_round: dict[str, list[float]], name: str, reference: str) -> Measurement:
    """`name`'s time over `reference`'s in the same round, one sample a round."""
    return Measurement(tuple(t / ref for t, ref in zip(per_round[name], per_round[reference])))


def time_rounds(model: torch.nn.Module, inputs: tuple, graph: TierGraph, pm: str, found: dict[str, np.ndarray],
                rounds: int, repeats: int, seed: int = 0) -> dict[str, list[float]]:
    """Each placement's median time in each of `rounds` rounds, every round timing all of them in a shuffled order."""
    space = placement.PlacementSpace(graph)
    names, order = list(found), random.Random(seed)
    per_round: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order.shuffle(names)
        for name in names:
            per_round[name].append(measure(model, inputs, space.policy(found[name]), pm=pm, repeats=repeats,
                                           warmup=1).median)
        say(f"    round {r + 1}/{rounds}: " + ", ".join(f"{n} {per_round[n][-1] * 1e3:.2f}" for n in found))
    return per_round


def run_case(workload: str, device: str, model: torch.nn.Module, inputs: tuple, graph: TierGraph,
             args: argparse.Namespace) -> Case:
    pm, case = f"sim:{device}", Case(workload, device, graph)
    budget = baselines.dram_budget(graph, args.budget)
    as_array = lambda policy: placement.to_array(graph, policy)  # noqa: E731
    case.found["all-dram"] = np.zeros((len(graph.nodes), 2), dtype=np.int8)
    case.found["first-touch"] = as_array(baselines.first_touch(graph, args.budget))
    case.found["greedy (assumed)"] = as_array(baselines.greedy(graph, args.budget, ASSUMED))
    case.found["optimal (assumed)"] = as_array(baselines.optimal(graph, args.budget, ASSUMED))
    say(f"  calibrating on {pm} ...")
    report = calibrate_device(model, inputs, pm, ASSUMED, budget=args.budget, probes=args.probes,
                              holdout=args.holdout, repeats=args.repeats, graph=graph)
    case.found["optimal (calibrated)"] = as_array(baselines.optimal(graph, args.budget,
                                                                   costs=report.calibration.costs))
    case.runs["optimal (calibrated)"] = args.probes + args.holdout
    case.calibration = calibration_summary(report)
    say(f"  {case.calibration}")
    planned = baselines.optimal(graph, args.budget, ASSUMED)
    for label, seeded in (("trained (seeded)", True), ("trained (unseeded)", False)):
        say(f"  {label}: up to {args.evaluations} timed runs on {pm} ...")
        result = train(model, inputs, dram_budget=args.budget, pm=pm, fitness="measured", graph=graph,
                       device=ASSUMED, progress=False, start=planned if seeded else None, config=TrainConfig(
                           evaluations=args.evaluations, seed=0, seed_baselines=seeded, repeats=args.repeats,
                           clock=args.clock))
        case.found[label] = as_array(result.policy)
        case.runs[label] = result.history[-1].evaluations if result.history else 0
    model_fn = devices.device_model(device)
    within = [array for name, array in case.found.items() if name != "all-dram"]  # all-DRAM ignores the budget
    start = min(within, key=lambda a: device_latency(graph, a, model_fn))
    case.found["best known (analysis)"] = linearised_optimum(graph, start, budget, model_fn)
    say(f"  timing {len(case.found)} placements side by side, {args.rounds} rounds ...")
    case.ratios = time_paired(model, inputs, graph, pm, case.found, "optimal (assumed)", args.rounds, args.repeats)
    return case


@dataclass
class Ablated:
    """One configuration over the seeds: per seed, the timed runs it used and its per-round ratios."""

    runs: list[int] = field(default_factory=list)
    minutes: list[float] = field(default_factory=list)  # wall minutes of each training
    vs_assumed: list[Measurement] = field(default_factory=list)  # time / optimal(assumed), per seed
    vs_full: list[Measurement] = field(default_factory=list)  # time / the full trainer's, per seed

    @staticmethod
    def pooled(per_seed: list[Measurement]) -> Measurement:
        """Every seed's rounds as one sample: the median and interval over seeds and timing noise together."""
        return Measurement(tuple(x for m in per_seed for x in m.samples))


def ablation(workload: str, device: str, model: torch.nn.Module, inputs: tuple, graph: TierGraph,
             args: argparse.Namespace, each_seed=None) -> dict[str, Ablated]:
    """Each configuration over `--seeds` seeds; per seed, all results and optimal(assumed) re-timed side by side.
    `each_seed(results so far)` after every seed: a run cut short keeps its finished seeds."""
    pm = f"sim:{device}"
    reference = placement.to_array(graph, baselines.optimal(graph, args.budget, ASSUMED))
    out = {name: Ablated() for name in ABLATION}
    for seed in range(args.seeds):
        found = {"optimal (assumed)": reference}
        for name, switches in ABLATION.items():
            say(f"  ablation {name}, seed {seed} ...")
            config = replace(TrainConfig(evaluations=args.evaluations, seed=seed, repeats=args.repeats,
                                         clock=args.clock), **switches)
            began = time.time()
            result = train(model, inputs, dram_budget=args.budget, pm=pm, fitness="measured", graph=graph,
                           device=ASSUMED, progress=False, config=config)
            out[name].minutes.append((time.time() - began) / 60)
            out[name].runs.append(result.history[-1].evaluations if result.history else 0)
            found[name] = placement.to_array(graph, result.policy)
            say(f"    {out[name].runs[-1]} timed runs, {out[name].minutes[-1]:.1f} min")
        say(f"  ablation seed {seed}: timing {len(found)} placements side by side, {args.rounds} rounds ...")
        per_round = time_rounds(model, inputs, graph, pm, found, args.rounds, args.repeats, seed)
        for name in ABLATION:
            out[name].vs_assumed.append(paired(per_round, name, "optimal (assumed)"))
            out[name].vs_full.append(paired(per_round, name, FULL))
        if each_seed:
            each_seed(out)
    return out


def interval(m: Measurement) -> str:
    low, high = m.interval()
    return f"{m.median:.3f} [{low:.3f}, {high:.3f}]"


def calibration_summary(report) -> str:
    """What calibrate_device fitted (tiers, DRAM share, device scales) and its held-out error before and after."""
    fitted, errors = report.calibration, report.errors()
    tiers = ("tiers adding" if fitted.dram_share is None
             else f"tiers in parallel, DRAM share {fitted.dram_share:.2f}")
    scales = ", ".join(f"{k} x{v:.2f}" for k, v in fitted.scales.items())
    return (f"calibration: {tiers}; device scales {scales}; held-out error {errors['before']['mean']:.1%} "
            f"(assumed) -> {errors['after']['mean']:.1%} (fitted)")


def case_table(case: Case) -> list[str]:
    best_known = min(m.median for m in case.ratios.values() if m is not case.ratios["all-dram"])
    gap = 1 - best_known
    lines = [f"### {case.workload} on `sim:{case.device}`",
             f"optimal(assumed) is {gap:.1%} slower than the best known placement within the budget "
             f"({'the device changes the optimum' if gap >= 0.05 else 'the device hardly changes the optimum'})",
             "", case.calibration, "", "| placement | timed runs to find | time / optimal(assumed), median [95% interval] | "
                 "vs best known |", "|---|---|---|---|"]
    for name, m in case.ratios.items():
        runs = case.runs.get(name, "")
        lines.append(f"| {name} | {runs} | {interval(m)} | {m.median / best_known:.3f} |")
    return lines + [""]


def plot(cases: list[Case], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [n for n in cases[0].ratios if n != "all-dram"]
    fig = Figure(figsize=(2.2 + 1.9 * len(cases), 4.2))
    ax = fig.add_subplot()
    width = 0.8 / len(names)
    for k, name in enumerate(names):
        xs = [i + (k - len(names) / 2) * width for i in range(len(cases))]
        med = [c.ratios[name].median for c in cases]
        lows = [c.ratios[name].median - c.ratios[name].interval()[0] for c in cases]
        highs = [c.ratios[name].interval()[1] - c.ratios[name].median for c in cases]
        ax.bar(xs, med, width, yerr=[lows, highs], label=name, capsize=2)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(cases)), [f"{c.workload}\n{c.device}" for c in cases], fontsize=8)
    ax.set_ylabel("time / optimal(assumed), paired, 95% interval")
    ax.set_ylim(bottom=min(0.6, min(c.ratios[n].median for c in cases for n in names) - 0.05))
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(str(path))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="recsys on cxl-loaded only, small budgets, results/tmp")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--devices", default=",".join(devices.SHIPPED_MODELS))
    parser.add_argument("--budget", default="25%")
    parser.add_argument("--evaluations", type=int, default=300, help="timed runs per training (default 300)")
    parser.add_argument("--probes", type=int, default=14)
    parser.add_argument("--holdout", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3, help="forwards per timed run (default 3)")
    parser.add_argument("--rounds", type=int, default=10, help="side-by-side rounds (default 10)")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per ablation configuration (default 2; 0: no ablation)")
    parser.add_argument("--clock", choices=clocks.CLOCKS, default="cpu",
                        help="what every timing reads (torch_tier.clocks; default cpu: steady on a shared machine)")
    parser.add_argument("--ablation-only", action="store_true",
                        help="the ablation alone on the one --workloads / --devices given, no case rows; "
                             "into results/tmp/learn.md")
    args = parser.parse_args()
    out = RESULTS
    if args.quick:
        args.workloads, args.devices, args.evaluations, args.rounds, args.seeds = "recsys", "cxl-loaded", 60, 4, 1
        args.probes, args.holdout = 8, 4
        out = RESULTS / "tmp"
    if args.ablation_only:
        if "," in args.workloads or "," in args.devices or args.seeds < 1:
            parser.error("--ablation-only needs one --workloads, one --devices and --seeds of 1 or more")
        out = RESULTS / "tmp"
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    with clocks.use(args.clock):
        return run(args, out)


def run(args: argparse.Namespace, out: Path) -> int:
    started = time.time()
    if args.ablation_only:
        return run_ablation(args, out, started)
    cases: list[Case] = []
    workloads = {}
    for workload in args.workloads.split(","):
        name, size = WORKLOADS[workload]
        built = zoo.build(name, **size)
        say(f"{workload}: capturing {name} {size} ...")
        workloads[workload] = (built.model, built.inputs, capture(built.model, built.inputs))
        for device in args.devices.split(","):
            say(f"{workload} on sim:{device}")
            cases.append(run_case(workload, device, *workloads[workload], args))
            write(out, report(args, cases, started))  # a run cut short keeps its finished cases
    furthest = min(cases, key=lambda c: min(m.median for n, m in c.ratios.items() if n != "all-dram"))
    say(f"ablation on {furthest.workload} / {furthest.device} ...")
    ablated = ablation(furthest.workload, furthest.device, *workloads[furthest.workload], args) if args.seeds else {}
    lines = report(args, cases, started) + (ablation_table(args, furthest, ablated) if ablated else [])
    write(out, lines)
    plot(cases, out / "learn.png")
    print("\n".join(lines))
    return 0


def run_ablation(args: argparse.Namespace, out: Path, started: float) -> int:
    """--ablation-only: the ablation on the one (workload, device) given, and no case rows."""
    name, size = WORKLOADS[args.workloads]
    built = zoo.build(name, **size)
    say(f"{args.workloads}: capturing {name} {size} ...")
    graph = capture(built.model, built.inputs)
    say(f"ablation on {args.workloads} / {args.devices} ...")
    case = Case(args.workloads, args.devices, graph)
    table = lambda ablated: report(args, [], started) + ablation_table(args, case, ablated)  # noqa: E731
    lines = table(ablation(args.workloads, args.devices, built.model, built.inputs, graph, args,
                           each_seed=lambda ablated: write(out, table(ablated))))
    write(out, lines)
    print("\n".join(lines))
    return 0


def report(args: argparse.Namespace, cases: list[Case], started: float) -> list[str]:
    """The results file's header and a table per case."""
    lines = ["# Measured search against the model-based placement, on emulated devices the model does not describe",
             "",
             f"{time.strftime('%Y-%m-%d')}, {torch.get_num_threads()} intra-op thread, torch {torch.__version__}, "
             f"budget {args.budget} of each model's all-DRAM footprint, assumed profile `{ASSUMED}`, "
             f"{args.evaluations} timed runs per training ({args.repeats} forwards each), "
             + ("" if args.ablation_only else f"calibration {args.probes} + {args.holdout} timed runs, ")
             + f"{args.rounds} paired rounds; {args.clock} clock; {(time.time() - started) / 60:.0f} min so far. "
             f"`python benchmarks/learn.py {' '.join(sys.argv[1:])}`.",
             "",
             "Each device is an emulation (torch_tier.device_models): the \"measured\" times are the device "
             "model's delay spun on real forwards, evidence about search against a device the planner does not "
             "know, not about any real hardware. Figures are time over optimal(assumed) in the same round: "
             "below 1 is faster.", ""]
    for case in cases:
        lines += case_table(case)
    return lines


def ablation_table(args: argparse.Namespace, case: Case, ablated: dict[str, Ablated]) -> list[str]:
    seeds = range(min((len(result.vs_assumed) for result in ablated.values()), default=0))
    lines = [f"## Ablation on {case.workload} / `sim:{case.device}`", "",
             f"{len(seeds)} of {args.seeds} seeds each, at most {args.evaluations} timed runs each. Per seed, the "
             f"five results and optimal(assumed) timed side by side in {args.rounds} paired rounds; median [95% "
             f"interval] of the per-round ratio. Pooled: every seed's rounds as one sample "
             f"({len(seeds) * args.rounds} ratios), seed-to-seed and timing noise together.", ""]
    parts = (("time / optimal(assumed)", "vs_assumed"), (f"time / {FULL} (the full trainer)", "vs_full"))
    for title, part in parts:
        lines += [f"**{title}**", "",
                  "| configuration | " + " | ".join(f"seed {s}" for s in seeds) + " | median over seeds | pooled |",
                  "|---|" + "---|" * (len(seeds) + 2)]
        for name, result in ablated.items():
            per_seed = getattr(result, part)
            lines.append(f"| {name} | " + " | ".join(interval(m) for m in per_seed) +
                         f" | {statistics.median(m.median for m in per_seed):.3f} | "
                         f"{interval(Ablated.pooled(per_seed))} |")
        lines.append("")
    lines += ["| configuration | timed runs used, per seed | training minutes, per seed |", "|---|---|---|"]
    for name, result in ablated.items():
        lines.append(f"| {name} | {', '.join(str(r) for r in result.runs)} | "
                     f"{', '.join(f'{m:.1f}' for m in result.minutes)} |")
    return lines + [""]


def write(out: Path, lines: list[str]) -> None:
    (out / "learn.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
