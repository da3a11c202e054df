"""The command line's tables: `torch-tier profile` (a model's placement graph) and
`torch-tier baselines` (the baseline placements under a DRAM budget, each
predicted by the cost model and measured on the simulated tier), and ``table``,
the one printer of a comparison (torch_tier.comparison) that the trainer's
CLI, the examples and the benchmarks print too. Nothing below the CLI imports
this module.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from . import baselines, clocks, comparison, devices, zoo
from .comparison import MEMORY_MODE, Row
from .cost_model import predict
from .graph import TierGraph
from .graph_capture import capture
from .timing import check_generates


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table, numbers right-aligned."""
    lines = ["| " + " | ".join(headers) + " |", "|---|" + "---:|" * (len(headers) - 1)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def _mib(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f}"


def table(rows: list[Row], against: str = "all-dram") -> str:
    """A comparison as a markdown table: peak bytes per tier, predicted and (when row `against`
    was timed) measured latency, each also as a ratio to row `against`; memory mode's row, a
    model of a hardware cache rather than a placement, is marked and explained in a note."""
    base = next(r for r in rows if r.name == against)
    timed = base.timing is not None
    phases = base.generate is not None  # rows of a generate graph: a latency is a whole generate call's
    timed_phases = timed and bool(base.timing.first_token)
    headers = ["policy", "DRAM peak MiB", "PM peak MiB", "predicted ms", f"vs {against}"]
    headers += ["predicted first token ms", "predicted tokens/s"] if phases else []
    headers += ["measured ms", "±", f"vs {against}"] if timed else []
    headers += ["measured first token ms", "measured tokens/s"] if timed_phases else []
    cells = []
    for r in rows:
        model = r.name == MEMORY_MODE
        line = [f"{r.name} (model)" if model else r.name, _mib(r.dram_bytes) + (" cache" if model else ""),
                _mib(r.pm_bytes), f"{r.predicted * 1e3:.3f}", f"{r.predicted / base.predicted:.4f}"]
        if phases:
            line += ([f"{r.generate.first_token * 1e3:.3f}", f"{r.generate.decode_tokens_per_s:.2f}"]
                     if r.generate is not None else ["(model)"] * 2)
        if timed and r.measured is None:
            line += ["(model)"] * 3
        elif timed:
            spread = f"{r.spread:.1%}" if r.spread is not None else "(model)"
            line += [f"{r.measured * 1e3:.2f}", spread, f"{r.measured / base.measured:.3f}"]
        if timed_phases:
            line += ([f"{r.timing.time_to_first_token * 1e3:.2f}", f"{r.timing.decode_tokens_per_s:.2f}"]
                     if r.timing is not None and r.timing.first_token else ["(model)"] * 2)
        cells.append(line)
    notes = [f"{MEMORY_MODE} (model): every tensor in PM behind a DRAM cache of the budget's size, at a hit ratio "
             f"of {r.policy.metadata['hit_ratio']:.2f} (the share of the working set the cache holds); its latency "
             f"is the cost model's, and where measured, the timed all-DRAM and all-PM latencies weighed by that "
             f"ratio: never timed itself." for r in rows if r.name == MEMORY_MODE]
    return "\n\n".join([markdown_table(headers, cells), *notes])


def _size(text: str) -> tuple[str, Any]:
    """A `--size key=value` argument: the value as an int, a float, or else the string."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value (e.g. image_size=64), got {text!r}")
    for kind in (int, float):
        try:
            return key, kind(value)
        except ValueError:
            pass
    return key, value


def _budget(text: str) -> str:
    try:
        baselines.parse_budget(text)
    except baselines.BudgetError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _tokens(text: str) -> int:
    try:
        tokens = int(text)
    except ValueError:
        tokens = 0
    if tokens < 1:
        raise argparse.ArgumentTypeError(f"expected a number of new tokens >= 1, got {text!r}")
    return tokens


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """MODEL, --size, --capture-repeats, --threads, --clock and --generate: how every model command
    builds, runs and times its workload."""
    parser.add_argument("model", metavar="MODEL",
                        help=f"a zoo model ({', '.join(zoo.names())}), a directory with a transformers "
                             "config.json (random weights), or a dotted path to a function returning "
                             "(model, example_inputs)")
    parser.add_argument("--size", type=_size, nargs="+", action="extend", default=[], metavar="K=V",
                        help="keyword arguments of the model function, e.g. --size image_size=64 width=0.5")
    parser.add_argument("--capture-repeats", type=int, default=5, metavar="N",
                        help="timed forwards when capturing the graph (default 5)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="intra-op threads (default PyTorch's); 1 is steadiest on a shared machine")
    parser.add_argument("--clock", choices=clocks.CLOCKS, default="wall",
                        help="what timings read (default wall): cpu, the timing thread's CPU time, stays steady "
                             "on a machine shared with other jobs (needs --threads 1)")
    parser.add_argument("--generate", type=_tokens, metavar="N",
                        help="a whole greedy generate call of N new tokens instead of one forward (a "
                             "transformers causal LM): captured, placed and timed, with time to first token "
                             "and decode tokens/s")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `torch-tier profile` and `torch-tier baselines`; each sets `func` to its handler."""
    profile = subparsers.add_parser("profile", help="capture a model's placement graph and show what each node costs",
                                    description=run_profile.__doc__)
    add_model_arguments(profile)
    profile.add_argument("--device", default=baselines.DEFAULT_DEVICE, choices=devices.names(),
                         help=f"slow-tier profile for the costs (default {baselines.DEFAULT_DEVICE})")
    profile.add_argument("--out", metavar="GRAPH.json", help="save the graph here")
    profile.set_defaults(func=run_profile)

    compare_parser = subparsers.add_parser(
        "baselines", help="compare the baseline placements under a DRAM budget, predicted and measured",
        description=run_baselines.__doc__)
    add_model_arguments(compare_parser)
    compare_parser.add_argument("--budget", type=_budget, default="25%",
                                help="DRAM budget: bytes ('64MiB') or a share of the all-DRAM footprint "
                                     "('25%%', the default)")
    compare_parser.add_argument("--device", default=baselines.DEFAULT_DEVICE, choices=devices.names(),
                                help=f"slow-tier profile to simulate (default {baselines.DEFAULT_DEVICE})")
    compare_parser.add_argument("--repeats", type=int, default=10, metavar="N",
                                help="timed forwards per measured baseline (default 10)")
    compare_parser.add_argument("--rounds", type=int, default=2, metavar="N",
                                help="rounds the repeats are spread over, each visiting every baseline "
                                     "(default 2)")
    compare_parser.set_defaults(func=run_baselines)


def fail(command: str, err: Exception) -> int:
    """Report a user error of `torch-tier COMMAND`; the exit code is 2."""
    print(f"torch-tier {command}: {err}", file=sys.stderr)
    return 2


def build_workload(args: argparse.Namespace) -> zoo.Workload:
    """MODEL built at --size (ValueError or TypeError if it cannot be, or cannot generate with
    --generate), with --threads applied."""
    if args.threads:
        torch.set_num_threads(args.threads)
    clocks.check(args.clock)
    workload = zoo.resolve(args.model, **dict(args.size))
    if args.generate:
        check_generates(workload.model)
    return workload


def capture_workload(workload: zoo.Workload, args: argparse.Namespace) -> TierGraph:
    """Capture the workload's graph (of a generate call with --generate) with --capture-repeats,
    saying so on stderr; ValueError if MODEL cannot generate."""
    what = f", a generate call of {args.generate} tokens" if args.generate else ""
    _stderr(f"capturing {workload.name} ({workload.description}{what}) ...")
    return capture(workload.model, workload.inputs, name=workload.name, repeats=args.capture_repeats,
                   generate=args.generate, clock=args.clock)


def _costliest(graph: TierGraph, device: str, count: int = 10) -> str:
    """The `count` items that cost most in PM, and the all-DRAM and all-PM predictions."""
    costs = baselines.item_costs(graph, device)
    all_pm = predict(graph, baselines.all_pm(graph, 0, device), device)
    lines = [f"on {device} (cost model): all-DRAM {graph.base_time * 1e3:.2f} ms, all-PM {all_pm * 1e3:.2f} ms; "
             f"the {count} tensors costing most in PM:"]
    for (node, what), cost in sorted(costs.items(), key=lambda kv: -kv[1])[:count]:
        lines.append(f"  +{cost * 1e3:8.3f} ms  {graph.nodes[node].path or '<root>'} {what}s")
    return "\n".join(lines)


def _phases(graph: TierGraph) -> str:
    """A generate graph's phases, all DRAM: time to first token, decode tokens/s, the KV cache."""
    gen, kv = graph.generation, graph.kv_bytes()
    decode = graph.base_time - gen.prefill_time
    return (f"generate: {gen.prompt_tokens}-token prompt, {gen.new_tokens} new tokens; all DRAM, first token in "
            f"{gen.prefill_time * 1e3:.2f} ms, {(gen.new_tokens - 1) / decode:.2f} decode tokens/s; KV cache "
            f"{_mib(kv[0])} MiB after the prefill, {_mib(kv[-1])} MiB at its largest")


def run_profile(args: argparse.Namespace) -> int:
    """Capture MODEL's placement graph, print its nodes and what the slow tier would cost them."""
    try:
        workload = build_workload(args)
    except (ValueError, TypeError) as err:
        return fail("profile", err)
    graph = capture_workload(workload, args)
    print(graph.summary())
    print(f"\nall-DRAM footprint {_mib(graph.footprint(graph.policy())['dram'])} MiB")
    if graph.generation:
        print(_phases(graph))
    print(_costliest(graph, args.device))
    if args.out:
        graph.save(args.out)
        print(f"graph saved to {args.out}")
    return 0


def run_baselines(args: argparse.Namespace) -> int:
    """Place MODEL with every baseline under a DRAM budget and print each one's predicted
    latency, measured latency on the simulated slow tier, peak bytes per tier and slowdown."""
    try:
        workload = build_workload(args)
    except (ValueError, TypeError) as err:
        return fail("baselines", err)
    graph = capture_workload(workload, args)
    try:
        limit = baselines.dram_budget(graph, args.budget)
    except baselines.BudgetError as err:
        return fail("baselines", err)
    full = graph.footprint(graph.policy())["dram"]
    _stderr(f"DRAM budget {args.budget}: {_mib(limit)} of {_mib(full)} MiB; measuring each baseline "
            f"({args.repeats} runs on sim:{args.device}) ...")
    with clocks.use(args.clock):
        rows = comparison.compare_locally(workload.model, workload.inputs, graph, args.budget, args.device,
                                          args.repeats, args.rounds)
    print(f"{workload.name} on {args.device}, DRAM budget {args.budget} ({_mib(limit)} of {_mib(full)} MiB)\n")
    print(table(rows))
    return 0
