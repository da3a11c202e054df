"""The `torch-tier` command: one subcommand per concept, each defined beside its module."""

from __future__ import annotations

import argparse
import sys

from . import calibrate, planner, report, trace
from .fit import cli as fit_cli
from .train import cli as train_cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="torch-tier", description="Place PyTorch weights and activations across DRAM and a slower memory tier."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (calibrate, planner, report, trace, fit_cli, train_cli):
        module.add_parser(commands)
    args = parser.parse_args(argv)
    return args.func(args) or 0


if __name__ == "__main__":
    sys.exit(main())
