"""The baseline placements on ResNet-50 and BERT-base at DRAM budgets of 25% and 50%.

For each model (full size; batch 1, BERT at 128 tokens) the graph is captured
once; then, per budget, every baseline of torch_tier.baselines is placed and
its latency predicted by the cost model and measured on the simulated tier
(``sim:optane-100``), with peak bytes per tier and slowdown against all-DRAM
(the tables of ``torch-tier baselines``: torch_tier.comparison, torch_tier.report). Memory mode is a
model of a hardware cache, so it is predicted only. Prints the tables and
writes them to ``benchmarks/results/baselines.md``.

Usage: python benchmarks/baselines.py [--repeats 20] [--rounds 4] [--threads 1]
Runs in about five minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

from torch_tier import baselines, comparison, host, report, zoo
from torch_tier.graph import TierGraph
from torch_tier.graph_capture import capture

RESULTS = Path(__file__).resolve().parent / "results" / "baselines.md"
MODELS = {"resnet50": {"batch": 1, "image_size": 224}, "bert-base": {"batch": 1, "seq_len": 128}}
BUDGETS = ["25%", "50%"]


def section(workload: zoo.Workload, graph: TierGraph, budget: str, args: argparse.Namespace) -> str:
    """One model at one budget: a heading and the comparison table."""
    print(f"{workload.name}, DRAM budget {budget}:", file=sys.stderr)
    rows = comparison.compare_locally(workload.model, workload.inputs, graph, budget, args.device, args.repeats,
                                      args.rounds)
    limit = baselines.dram_budget(graph, budget)
    full = graph.footprint(graph.policy())["dram"]
    heading = f"### {workload.name}, DRAM budget {budget} ({limit / 2**20:.1f} of {full / 2**20:.1f} MiB)"
    return f"{heading}\n\n{report.table(rows)}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed forwards per measured baseline")
    parser.add_argument("--rounds", type=int, default=4, help="rounds the repeats are spread over")
    parser.add_argument("--capture-repeats", type=int, default=20, help="timed forwards when capturing")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (1: steadiest on 2 shared cores)")
    parser.add_argument("--device", default="optane-100", help="slow-tier profile to simulate")
    parser.add_argument("--out", type=Path, default=RESULTS, help="markdown file to write")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    sections = []
    for name, size in MODELS.items():
        workload = zoo.build(name, **size)
        print(f"capturing {name} ...", file=sys.stderr)
        graph = capture(workload.model, workload.inputs, name=name, repeats=args.capture_repeats)
        sections += [section(workload, graph, budget, args) for budget in BUDGETS]
    memory = host.host()
    command = (f"python benchmarks/baselines.py --repeats {args.repeats} --rounds {args.rounds} "
               f"--capture-repeats {args.capture_repeats} --threads {args.threads}")
    models = ", ".join(f"{name} ({', '.join(f'{k}={v}' for k, v in size.items())})" for name, size in MODELS.items())
    header = [
        f"## Baselines on sim:{args.device}",
        "",
        f"`{command}` on {platform.node()} ({torch.get_num_threads()} intra-op thread(s), torch {torch.__version__}, "
        f"host DRAM {memory.read_bw_gbs:.1f}/{memory.write_bw_gbs:.1f} GB/s read/write), {time.strftime('%Y-%m-%d')}, "
        f"{time.perf_counter() - start:.0f} s. Models: {models}. Measured: median of the repeats (± half the "
        "interquartile range over the median); slowdowns are against the all-DRAM row, which ignores the budget.",
        "",
    ]
    text = "\n".join(header + sections)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
