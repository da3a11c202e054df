"""Acceptance benchmark of issue 7 (learned fit policies, synthetic half).

Page 256 with a history of 10 request sizes (the paper's setting for the
high-level experiments): the fixed rules, the segment-aware oracle, DQN and
linear Q-learning on each generator. Page 10, random requests: the fixed
rules and low-level PPO. Each entry is the mean return with its 95% interval
over independent runs; run r trains every agent from seed r and evaluates
every policy on the same episodes of that run (see torch_tier.fit.evaluate).

    nice -n 10 .venv/bin/python benchmarks/fit.py            # about 26 min with --jobs 1, 13 to 25 with 2
    nice -n 10 .venv/bin/python benchmarks/fit.py --quick    # a few minutes, not the acceptance

Prints markdown and writes it to benchmarks/results/fit.md (full run only).
"""

from __future__ import annotations

import argparse
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from torch_tier.fit.evaluate import BASELINES, format_interval, markdown_table, run_mean  # noqa: E402

HIGH_GENERATORS = ("random", "bf-good", "wf-good", "mixed")
HIGH_AGENTS = ("dqn", "linear-q")
HIGH_OPTIONS = {"page_size": 256, "history": 10}
LOW_OPTIONS = {"generator": "random", "page_size": 10}
QUICK_STEPS = {"dqn": 10_000, "linear-q": 10_000, "ppo": 50_000}
# The paper's figures (return = 0.1 per served allocation), for the baselines row check.
PAPER = {
    "bf-good": "best 20-21, first/worst 1.2",
    "wf-good": "worst 19.4, others 0.8",
    "mixed": "best 6.6, worst 5.4, first 1.1; DQN 21.2",
    "random (page 10)": "fixed rules 0.48, PPO 0.32",
}
RESULTS = Path(__file__).resolve().parent / "results" / "fit.md"


def job(table: str, generator: str, name: str, run: int, episodes: int, steps: int | None) -> tuple:
    """One (policy, run) cell: its run mean and the seconds it took. Page-10
    episodes are short, so that table evaluates 10 times as many."""
    import torch

    torch.set_num_threads(1)
    high = table == "high"
    options = {**HIGH_OPTIONS, "generator": generator} if high else LOW_OPTIONS
    start = time.time()
    mean = run_mean(name, options, run, episodes if high else 10 * episodes, seed=0, steps=steps)
    return (table, generator, name, run), mean, time.time() - start


def jobs(runs: int, episodes: int, quick: bool) -> list[tuple]:
    """All cells of both tables, agents first (the long ones)."""
    cells = [("low", "random", "ppo")]
    cells += [("high", g, a) for a in HIGH_AGENTS for g in HIGH_GENERATORS]
    cells += [("high", g, "oracle") for g in HIGH_GENERATORS if g != "random"]
    cells += [("high", g, b) for b in BASELINES for g in HIGH_GENERATORS]
    cells += [("low", "random", b) for b in BASELINES]
    return [(t, g, n, r, episodes, QUICK_STEPS.get(n) if quick else None) for t, g, n in cells for r in range(runs)]


def collect(results: list[tuple]) -> tuple[dict, dict]:
    """Run means and total seconds per (table, generator, policy)."""
    means: dict[tuple, list[float]] = {}
    seconds: dict[tuple, float] = {}
    for (table, generator, name, _), mean, took in results:
        means.setdefault((table, generator, name), []).append(mean)
        seconds[(table, generator, name)] = seconds.get((table, generator, name), 0.0) + took
    return {k: np.array(v) for k, v in means.items()}, seconds


def high_table(means: dict) -> str:
    rows = []
    for name in (*BASELINES, "oracle", *HIGH_AGENTS):
        cells = [format_interval(means[("high", g, name)]) if ("high", g, name) in means else "—" for g in HIGH_GENERATORS]
        rows.append([name, *cells])
    return markdown_table(["policy", *HIGH_GENERATORS], rows)


def low_table(means: dict) -> str:
    rows = [[name, format_interval(means[("low", "random", name)])] for name in (*BASELINES, "ppo")]
    return markdown_table(["policy", "random, page 10"], rows)


def per_run(means: dict) -> str:
    """Every agent's run means, to show the spread between training runs."""
    rows = [
        [f"{name} ({generator}{', page 10' if table == 'low' else ''})", " ".join(f"{m:.2f}" for m in values)]
        for (table, generator, name), values in means.items()
        if name in (*HIGH_AGENTS, "ppo")
    ]
    return markdown_table(["agent", "run means"], rows)


def best_rule(means: dict, table: str, generator: str) -> tuple[str, float]:
    """The fixed rule with the highest mean return."""
    return max(((b, means[(table, generator, b)].mean()) for b in BASELINES), key=lambda x: x[1])


def targets(means: dict) -> str:
    """The issue's targets, each with the numbers and met / missed."""
    lines = []

    def check(label: str, value: float, bound: float, against: str) -> None:
        verdict = "met" if value >= bound - 1e-9 else "MISSED"
        lines.append(f"- {label}: {value:.3f} vs {against} {bound:.3f}: **{verdict}**")

    for generator in HIGH_GENERATORS:
        rule, bound = best_rule(means, "high", generator)
        for agent in HIGH_AGENTS:
            check(f"{agent} on {generator} >= best fixed rule", means[("high", generator, agent)].mean(), bound, rule)
    check("dqn on mixed >= 22.5", means[("high", "mixed", "dqn")].mean(), 22.5, "target")
    check("dqn on wf-good >= 23", means[("high", "wf-good", "dqn")].mean(), 23.0, "target")
    rule, bound = best_rule(means, "low", "random")
    check("ppo at page 10 reaches the fixed rules", means[("low", "random", "ppo")].mean(), bound, rule)
    return "\n".join(lines)


def report(means: dict, seconds: dict, runs: int, episodes: int, quick: bool, wall: float, workers: int) -> str:
    agent_time = ", ".join(
        f"{name} {np.mean([s for (t, g, n), s in seconds.items() if n == name]) / runs:.0f} s"
        for name in (*HIGH_AGENTS, "ppo")
    )
    paper = "\n".join(f"- {k}: {v}" for k, v in PAPER.items())
    return f"""# Learned fit policies (issue 7, synthetic half)

`benchmarks/fit.py{' --quick' if quick else ''}`: {runs} independent runs x {episodes} evaluation
episodes ({10 * episodes} at page 10); mean return and 95% Student-t interval over the run means. Return =
0.1 per served allocation (horizon {2 * HIGH_OPTIONS['page_size']} allocations at page 256, 20 at page 10).
Wall time {wall / 60:.1f} min with {workers} worker process(es) on 2 shared cores; training + evaluation per run: {agent_time}.

## Page 256, history 10: fixed rules, oracle, DQN ([32, 32] scoring each action's effect), linear Q (9 hand features)

{high_table(means)}

## Page 10, random requests (sizes 1..5): fixed rules and low-level PPO (greedy, invalid addresses masked)

{low_table(means)}

## Per-run means of the agents

{per_run(means)}

## Targets

{targets(means)}

## The paper's figures (its return counts one allocation fewer: about -0.1)

{paper}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 runs, 30 episodes, short training")
    parser.add_argument("--runs", type=int, default=None, help="independent runs (default 5, quick 2)")
    parser.add_argument("--episodes", type=int, default=None, help="evaluation episodes (default 100, quick 30)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    args = parser.parse_args()
    runs = args.runs or (2 if args.quick else 5)
    episodes = args.episodes or (30 if args.quick else 100)
    start = time.time()
    with Pool(args.jobs) as pool:
        results = pool.starmap(job, jobs(runs, episodes, args.quick), chunksize=1)
    means, seconds = collect(results)
    text = report(means, seconds, runs, episodes, args.quick, time.time() - start, args.jobs)
    print(text)
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
