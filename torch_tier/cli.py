"""The `torch-tier` command: one subcommand per concept, each defined beside its module.

A subcommand's module is imported only when that subcommand runs, so
`torch-tier plan` never loads torch and `torch-tier --help` is instant.
`COMMANDS` lists every subcommand with its module and help line; the module's
`add_parser(subparsers)` registers the subcommand's real arguments, and sets
`func` to its handler, which returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# (subcommand, module whose add_parser registers it, help line in `torch-tier --help`).
# A module may register several subcommands: give each its own line.
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("host", "torch_tier.host", "measure this host's DRAM and show each device profile scaled to it"),
    ("plan", "torch_tier.planner", "plan buffer offsets in one arena (MiniMalloc's problem)"),
    ("profile", "torch_tier.report", "capture a model's placement graph and show what each node costs"),
    ("baselines", "torch_tier.report", "compare the baseline placements under a DRAM budget, predicted and measured"),
    ("calibrate", "torch_tier.calibrate", "fit a device profile (and per-node corrections) to timed runs of a model"),
    ("trace", "torch_tier.trace", "record a model's allocation trace"),
    ("fit", "torch_tier.fit.cli", "learned fit policies for a fixed-capacity arena"),
    ("train", "torch_tier.trainer.cli", "search a placement policy by evolutionary RL"),
    ("worker", "torch_tier.trainer.cli", "time placements sent by a trainer"),
)


def main(argv: list[str] | None = None) -> int:
    """Runs `torch-tier` on `argv` (default: the process's arguments) and returns its exit code.

    Reads the subcommand's name first, from placeholder parsers that know
    only the names and help lines; then imports that one module and parses
    the arguments again with its real parser (which also serves `--help`).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _command_name(argv)
    parser = _top_parser()
    module = importlib.import_module({name: path for name, path, _ in COMMANDS}[command])
    module.add_parser(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    return args.func(args) or 0


def _command_name(argv: list[str]) -> str:
    """The subcommand `argv` names; argparse prints the help, or the error and exits, if none does."""
    parser = _top_parser()
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, _, help_line in COMMANDS:
        commands.add_parser(name, help=help_line, add_help=False)  # its own -h is the real parser's
    return parser.parse_known_args(argv)[0].command


def _top_parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(
        prog="torch-tier", description="Place PyTorch weights and activations across DRAM and a slower memory tier."
    )


if __name__ == "__main__":
    sys.exit(main())
