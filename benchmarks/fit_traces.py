"""Issue 7, real half: fit rules and a learned fit policy on real PyTorch allocation traces.

Records the allocation traces of the zoo models' inference (several passes,
modest sizes) and of one training step of a small resnet50 and bert, all
activations on the simulated pm tier (torch_tier.trace), then:

1. bytes, in the C++ simulated-tier arena: per fixed fit, the peak extent
   (high-water mark in an arena of 16x the peak live bytes) over the peak
   live bytes, and the first allocation that fails at 1.05x and 1.10x;
2. cells, in the FitEnv page (256 cells, history 10): each trace scaled so the
   page holds 1.05x .. 1.5x its peak live cells, one episode per factor; the
   fixed rules and DQN (torch_tier.fit.dqn) on the same episodes. DQN is
   trained leave-one-model-out: for each model, on the traces of all the
   other models, evaluated on that model's traces; independent runs, seeds
   0, 1, ...; 95% intervals over the runs.

    nice -n 10 .venv/bin/python benchmarks/fit_traces.py            # about 9 min on 2 shared cores
    nice -n 10 .venv/bin/python benchmarks/fit_traces.py --quick    # under a minute, not the result

Prints markdown and writes it to benchmarks/results/fit_traces.md (full run only).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from multiprocessing import Pool
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch_tier import trace, zoo  # noqa: E402
from torch_tier.fit.evaluate import BASELINES, format_interval, interval, markdown_table  # noqa: E402
from torch_tier.fit.real import FITS, Episode, Fragmentation, cell_episodes, episode_returns, fragmentation, train_dqn  # noqa: E402
from torch_tier.fit.rules import RulePolicy  # noqa: E402
from torch_tier.fit.trace import TraceEvent  # noqa: E402

INFERENCE = {
    "resnet50": {"width": 0.5, "image_size": 128},
    "wide_resnet101_2": {"width": 0.25, "depth": 0.25, "image_size": 128},
    "bert-base": {"width": 0.5, "depth": 0.5, "seq_len": 128},
    "gpt2": {"width": 0.5, "depth": 0.5, "seq_len": 128},
    "llama": {"width": 0.5, "depth": 0.5, "seq_len": 128},
    "dlrm": {"rows": 0.001, "batch": 256},
}
TRAINING = {
    "resnet50": {"width": 0.25, "depth": 0.25, "image_size": 64, "batch": 2},
    "bert-base": {"width": 0.25, "depth": 0.25, "seq_len": 64},
}
PASSES = 3
TIGHT = (1.05, 1.10)
FACTORS = (1.05, 1.10, 1.25, 1.5)
PAGE, HISTORY = 256, 10
RESULTS = Path(__file__).resolve().parent / "results" / "fit_traces.md"


def record() -> dict[tuple[str, str], list[TraceEvent]]:
    """Traces keyed by (model, "inference" | "training step")."""
    traces = {}
    for name, size in INFERENCE.items():
        work = zoo.build(name, **size)
        traces[(name, "inference")] = trace.trace(work.model, work.inputs, passes=PASSES)
    for name, size in TRAINING.items():
        work = zoo.build(name, **size)
        traces[(name, "training step")] = trace.trace(work.model.train(), work.inputs, passes=1, train_step=True)
    return traces


def held_out_run(model: str, run: int, episodes: dict[tuple, list[Episode]], steps: int) -> tuple:
    """DQN trained from seed `run` on every trace but `model`'s; its returns on `model`'s episodes."""
    torch.set_num_threads(1)
    training = [e for key, eps in episodes.items() if key[0] != model for e in eps]
    policy = train_dqn(training, PAGE, HISTORY, steps, seed=run)
    return model, run, {key: episode_returns(policy, eps, PAGE, HISTORY) for key, eps in episodes.items() if key[0] == model}


def label(key: tuple[str, str]) -> str:
    """A trace's row name."""
    return f"{key[0]} ({key[1]})"


def traces_table(traces: dict, frag: dict[tuple, list[Fragmentation]]) -> str:
    rows = [[label(k), str(frag[k][0].allocations), f"{frag[k][0].peak_live / 2**20:.2f}"] for k in traces]
    return markdown_table(["trace", "allocations", "peak live MiB"], rows)


def fit_table(frag: dict[tuple, list[Fragmentation]], cell: Callable[[Fragmentation], str]) -> str:
    """One row per trace, one column per fit, `cell` of each."""
    rows = [[label(k), *(cell(f) for f in fits)] for k, fits in frag.items()]
    return markdown_table(["trace", *FITS], rows)


def extent(f: Fragmentation) -> str:
    return f"{f.extent_ratio:.3f}"


def failures(f: Fragmentation) -> str:
    return " / ".join("—" if f.first_failure[t] is None else str(f.first_failure[t]) for t in TIGHT)


def cell_table(rules: dict, learned: dict) -> str:
    """Per trace and capacity factor: each rule's return and DQN's (mean ± 95% CI over runs)."""
    rows = []
    for key, by_rule in rules.items():
        for i, factor in enumerate(FACTORS):
            runs = np.array([returns[i] for returns in learned[key]])
            rows.append([label(key), f"{factor:.2f}x", *(f"{by_rule[b][i]:.1f}" for b in BASELINES), format_interval(runs)])
    return markdown_table(["trace", "capacity", *BASELINES, "dqn (held out)"], rows)


def totals(rules: dict, learned: dict, runs: int) -> tuple[dict[str, float], np.ndarray]:
    """Mean return over all held-out episodes: per rule, and per DQN run."""
    by_rule = {b: float(np.mean([r[b] for r in rules.values()])) for b in BASELINES}
    by_run = np.array([np.mean([learned[k][run] for k in learned]) for run in range(runs)])
    return by_rule, by_run


def answer(rules: dict, learned: dict, runs: int) -> str:
    """The verdict: DQN vs the best single fixed fit over all held-out episodes, then trace by trace."""
    by_rule, by_run = totals(rules, learned, runs)
    best = max(by_rule, key=by_rule.get)
    mean, half = interval(by_run)
    per_trace = [np.mean(learned[key]) - max(np.mean(r[b]) for b in BASELINES) for key, r in rules.items()]
    wins = sum(d > 1e-9 for d in per_trace)
    losses = sum(d < -1e-9 for d in per_trace)
    if mean - half > by_rule[best]:
        verdict = "**Yes**"
    elif mean > by_rule[best]:
        verdict = "**Not significantly** (the 95% interval reaches the best rule)"
    else:
        verdict = "**No**"
    return (
        f"{verdict}: over all {len(rules) * len(FACTORS)} held-out episodes the mean return of the learned policy is "
        f"{mean:.2f} ± {half:.2f} (per run: {' '.join(f'{m:.2f}' for m in by_run)}), the best fixed fit "
        f"({best}) {by_rule[best]:.2f}; rules: " + ", ".join(f"{b} {v:.2f}" for b, v in by_rule.items()) + ". "
        f"Against the best rule of each trace (chosen with hindsight), DQN's mean is higher on {wins}, "
        f"lower on {losses} and equal on {len(per_trace) - wins - losses} of {len(per_trace)} traces."
    )


def report(traces: dict, frag: dict, rules: dict, learned: dict, runs: int, steps: int, quick: bool, wall: float) -> str:
    return f"""# Fit rules and a learned fit policy on real allocation traces (issue 7, real half)

`benchmarks/fit_traces.py{' --quick' if quick else ''}`: {PASSES} inference passes per zoo model and one training
step of a small resnet50 and bert, all activations on the simulated pm tier, weights in DRAM. Wall time
{wall / 60:.1f} min on 2 shared cores.

## Traces

{traces_table(traces, frag)}

## Bytes: peak extent over peak live bytes (C++ arena, capacity 16x peak live)

The high-water mark counts each block's 64-byte in-band tag. First and best fit reuse freed holes before
untouched room, so their extent stays near what the trace needs; worst fit (and next fit, which runs on past freed
holes) spreads over whatever room the arena has, so theirs grows with the capacity.

{fit_table(frag, extent)}

## Bytes: first allocation that fails at {' / '.join(f'{t:.2f}x' for t in TIGHT)} peak live bytes

Allocation ordinal in the trace (— = the whole trace fits).

{fit_table(frag, failures)}

## Cells: fixed rules vs DQN trained on the other models' traces

Page {PAGE} cells, history {HISTORY}; each trace scaled so the page holds the given factor times its peak live
cells (sizes rounded up to whole cells), one episode per factor, replayed to its end or to the first
allocation no hole holds. Return = 0.1 per served allocation (the whole trace: 0.1 x allocations).
DQN [32, 32] trained for {steps} steps per run, leave-one-model-out ({runs} runs; mean ± 95% CI over runs).

{cell_table(rules, learned)}

## Does the learned policy beat the best fixed fit on held-out real traces?

{answer(rules, learned, runs)}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 runs, 5000 training steps")
    parser.add_argument("--runs", type=int, default=None, help="independent training runs (default 5, quick 2)")
    parser.add_argument("--steps", type=int, default=None, help="DQN training steps (default 30000, quick 5000)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    args = parser.parse_args()
    runs = args.runs or (2 if args.quick else 5)
    steps = args.steps or (5_000 if args.quick else 30_000)
    torch.set_num_threads(1)
    start = time.time()
    traces = record()
    frag = {key: fragmentation(events, TIGHT) for key, events in traces.items()}
    episodes = {key: cell_episodes(events, PAGE, FACTORS) for key, events in traces.items()}
    rules = {key: {b: episode_returns(RulePolicy(b), eps, PAGE, HISTORY) for b in BASELINES} for key, eps in episodes.items()}
    with Pool(args.jobs) as pool:
        results = pool.starmap(held_out_run, [(m, r, episodes, steps) for m in INFERENCE for r in range(runs)])
    learned: dict[tuple, list[np.ndarray]] = {key: [] for key in traces}
    for _model, _run, returns in results:  # in run order per model
        for key, values in returns.items():
            learned[key].append(values)
    text = report(traces, frag, rules, learned, runs, steps, args.quick, time.time() - start)
    print(text)
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
