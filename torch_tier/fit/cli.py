"""`torch-tier fit`: train a fit agent on a request generator and compare it with
the fixed rules (and, on adversarial generators, the segment-aware oracle).

Prints a markdown table: mean return with its 95% interval over independent
runs (each run trains the agent from its own seed and evaluates every policy
on that run's episodes), and the mean of each run.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable

import numpy as np
import torch

from .evaluate import AGENTS, BASELINES, format_interval, markdown_table, run_mean
from .generators import GENERATORS, make_generator

MIN_PAGE_SIZE = 10  # the smallest page every generator fills (the adversarial ones place blocks of page/10)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `fit` subcommand to a CLI's subparsers; it sets `func` to `run`."""
    parser = subparsers.add_parser(
        "fit", help="learned fit policies for a fixed-capacity arena", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--generator", default="mixed", help=f"one of {', '.join(GENERATORS)}, or trace:PATH")
    parser.add_argument("--agent", choices=(*AGENTS, "none"), default="dqn", help="agent to train (default dqn)")
    parser.add_argument("--page-size", type=_at_least(MIN_PAGE_SIZE), default=256,
                        help=f"cells in the page, at least {MIN_PAGE_SIZE} (default 256)")
    parser.add_argument("--history", type=_at_least(0), default=10, help="recent request sizes observed (default 10)")
    parser.add_argument("--steps", type=_at_least(1), default=None, help="training steps (default: the agent's)")
    parser.add_argument("--runs", type=_at_least(1), default=3, help="independent training runs (default 3)")
    parser.add_argument("--episodes", type=_at_least(1), default=100,
                        help="evaluation episodes per run (default 100)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first run (default 0)")
    parser.add_argument("--tier", default=None, help="trace generators: replay only this tier's allocations")
    parser.add_argument("--cell-bytes", type=_at_least(1), default=None, help="trace generators: bytes per cell")
    parser.set_defaults(func=run)
    return parser


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least `minimum` (argparse says which flag, and exits 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


def run(args: argparse.Namespace) -> int:
    """Run the comparison `args` describe and print its table (exit code 2 if the generator
    cannot be made: an unknown name, a trace file that is missing or unreadable)."""
    torch.set_num_threads(1)
    env_options: dict = {"generator": args.generator, "page_size": args.page_size, "history": args.history}
    if args.generator.startswith("trace:"):
        env_options.update(tier=args.tier, cell_bytes=args.cell_bytes)
    problem = _generator_problem(env_options)
    if problem:
        print(f"torch-tier fit: {problem}", file=sys.stderr)
        return 2
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


def _generator_problem(env_options: dict) -> str | None:
    """Why the generator `env_options` name cannot be made, or None: made once here (a trace
    loaded once more than the runs do) so that a bad name or file is an error, not a traceback."""
    options = {k: env_options[k] for k in ("tier", "cell_bytes") if k in env_options}
    try:
        make_generator(env_options["generator"], env_options["page_size"], **options)
    except OSError as err:
        return f"--generator {env_options['generator']}: cannot read the trace ({err.strerror})"
    except KeyError as err:
        return f"--generator {env_options['generator']}: a trace event lacks field {err}"
    except (ValueError, TypeError, csv.Error) as err:  # an unknown name; a malformed trace
        return f"--generator {env_options['generator']}: {err}"
    return None


def main(argv: list[str] | None = None) -> int:
    """Run `fit` on its own (`python -m torch_tier.fit.cli ...`), without the package CLI."""
    parser = argparse.ArgumentParser(prog="torch-tier")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["fit", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
