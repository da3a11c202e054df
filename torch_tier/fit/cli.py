"""`torch-tier fit`: train a fit agent on a request generator and compare it with
the fixed rules (and, on adversarial generators, the segment-aware oracle).

Prints a markdown table: mean return with its 95% interval over independent
runs (each run trains the agent from its own seed and evaluates every policy
on that run's episodes), and the mean of each run.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from .evaluate import AGENTS, BASELINES, format_interval, markdown_table, run_mean
from .generators import GENERATORS


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `fit` subcommand to a CLI's subparsers; it sets `func` to `run`."""
    parser = subparsers.add_parser(
        "fit", help="learned fit policies for a fixed-capacity arena", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--generator", default="mixed", help=f"one of {', '.join(GENERATORS)}, or trace:PATH")
    parser.add_argument("--agent", choices=(*AGENTS, "none"), default="dqn", help="agent to train (default dqn)")
    parser.add_argument("--page-size", type=int, default=256, help="cells in the page (default 256)")
    parser.add_argument("--history", type=int, default=10, help="recent request sizes observed (default 10)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the agent's)")
    parser.add_argument("--runs", type=int, default=3, help="independent training runs (default 3)")
    parser.add_argument("--episodes", type=int, default=100, help="evaluation episodes per run (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first run (default 0)")
    parser.add_argument("--tier", default=None, help="trace generators: replay only this tier's allocations")
    parser.add_argument("--cell-bytes", type=int, default=None, help="trace generators: bytes per cell")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the comparison `args` describe and print its table."""
    torch.set_num_threads(1)
    env_options: dict = {"generator": args.generator, "page_size": args.page_size, "history": args.history}
    if args.generator.startswith("trace:"):
        env_options.update(tier=args.tier, cell_bytes=args.cell_bytes)
    names = list(BASELINES)
    if args.generator in GENERATORS and args.generator != "random":
        names.append("oracle")
    if args.agent != "none":
        names.append(args.agent)
    rows = []
    for name in names:
        means = np.array([run_mean(name, env_options, r, args.episodes, args.seed, args.steps) for r in range(args.runs)])
        rows.append([name, format_interval(means), " ".join(f"{m:.2f}" for m in means)])
    print(f"generator {args.generator}, page {args.page_size}, history {args.history}, "
          f"{args.runs} runs x {args.episodes} episodes\n")
    print(markdown_table(["policy", "return (95% CI)", "per run"], rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run `fit` on its own (`python -m torch_tier.fit.cli ...`), without the package CLI."""
    parser = argparse.ArgumentParser(prog="torch-tier")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["fit", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
