"""A zoo model with its tensors on another NUMA node's memory, timed, beside the cost model's prediction.

On a machine with two or more NUMA nodes, a remote node stands in for CXL memory (the method of
Pond and TPP): every thread is pinned to the CPUs of --cpu-node (default 0), whose memory is
the DRAM tier (first touch), and pm="numa:N" is node N's memory. For each placement (all in
DRAM, the cost model's optimum at --budget of the all-DRAM footprint in DRAM, all in pm) the
table gives, from one run: the latency measured (median over rounds, each round timing every
placement in a shuffled order, with a 95% interval of the median) and its ratio to all-DRAM
measured in the same run; the cost model's prediction for the --assume device profile
(default cxl) and its ratio to the predicted all-DRAM; and the pages of the pm weights that
move_pages finds on node N (every one, or the placement is not what it claims).

The prediction is the cost model's for a published device profile, not for this machine's
remote node: the two columns side by side are the test of the model, not a calibration.

On a one-node machine only --node 0 can run (--cpu-node 0): numa:0 is then the very memory of
the DRAM tier, and the table measures what the NUMA backend costs, not a slow tier.

Usage: python benchmarks/numa.py [--node N] [--cpu-node 0] [--model resnet50] [--assume cxl]
                                 [--budget 25%] [--rounds 5] [--repeats 5] [--threads 0] [--clock wall]
                                 [--quick]
About a minute with --quick; a few minutes at full size.
"""

from __future__ import annotations

import argparse
import os
import random

import torch

from torch_tier import Placement, Policy, _C, baselines, enable, tier_of, tiers, zoo
from torch_tier.cost_model import predict
from torch_tier.graph_capture import capture
from torch_tier.timing import Measurement, measure

QUICK_SIZE = {"resnet50": dict(batch=2, image_size=64, width=0.25, depth=0.34),
              "bert-base": dict(batch=2, seq_len=32, width=0.25, depth=0.17)}


def remote_node(cpu_node: int) -> int | None:
    """The first node with memory other than `cpu_node`, if any."""
    return next((n for n in tiers.numa_nodes() if n != cpu_node), None)


def pin_to(node: int) -> list[int]:
    """Pins this process (and the threads it starts later: torch's pool) to `node`'s CPUs."""
    cpus = tiers.numa_node_cpus(node)
    if not cpus:
        raise SystemExit(f"NUMA node {node} has no CPUs to pin to (a CPU-less node: pick another --cpu-node)")
    os.sched_setaffinity(0, cpus)
    return cpus


def pages_on(model: torch.nn.Module, policy: Policy, pm: str, node: int) -> tuple[int, int]:
    """Pages of the model's pm weights on `node`, and all their pages, inside a session."""
    on_node = total = 0
    with enable(policy, model, pm=pm):
        for param in model.parameters():
            if tier_of(param) == "pm":
                nodes = _C.page_nodes(param)
                on_node += sum(n == node for n in nodes)
                total += len(nodes)
    return on_node, total


def timed(model: torch.nn.Module, inputs: tuple, policies: dict[str, Policy], pm: str, rounds: int,
          repeats: int, clock: str) -> dict[str, Measurement]:
    """Each policy's samples, the policies timed in a shuffled order in each round."""
    samples: dict[str, list[float]] = {name: [] for name in policies}
    order = list(policies)
    for _ in range(rounds):
        random.shuffle(order)
        for name in order:
            samples[name] += measure(model, inputs, policies[name], pm=pm, repeats=repeats, warmup=1,
                                     clock=clock).samples
    return {name: Measurement(tuple(values)) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--node", type=int, help="the pm tier's NUMA node (default: the first other than --cpu-node)")
    parser.add_argument("--cpu-node", type=int, default=0, help="the node whose CPUs run the model, and its DRAM")
    parser.add_argument("--model", default="resnet50", choices=sorted(QUICK_SIZE))
    parser.add_argument("--assume", default="cxl", help="the device profile the cost model predicts for")
    parser.add_argument("--budget", default="25%", help="DRAM budget of the optimum placement")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards per placement per round")
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: one per pinned CPU)")
    parser.add_argument("--clock", default="wall", choices=["wall", "cpu"],
                        help="torch_tier.clocks: 'cpu' (with --threads 1) on a machine shared with other jobs")
    parser.add_argument("--quick", action="store_true", help="a small model, two rounds (a smoke run)")
    args = parser.parse_args()
    node = args.node if args.node is not None else remote_node(args.cpu_node)
    if node is None:
        parser.error(f"this machine has one NUMA node with memory ({tiers.numa_nodes()}): a slow tier needs a "
                     f"second; --node {args.cpu_node} runs on the same node, timing the backend's overhead only")
    pm = tiers.parse_pm(f"numa:{node}")  # a node that does not exist fails here, naming the ones that do
    cpus = pin_to(args.cpu_node)
    torch.set_num_threads(args.threads or len(cpus))
    rounds = 2 if args.quick else args.rounds

    work = zoo.build(args.model, **(QUICK_SIZE[args.model] if args.quick else {}))
    model, inputs = work.model, work.inputs
    graph = capture(model, inputs, name=args.model, clock=args.clock)
    policies = {
        "all DRAM": graph.policy(),
        f"optimum at {args.budget} DRAM ({args.assume})": baselines.optimal(graph, args.budget, args.assume),
        "all pm": graph.policy([Placement("pm", "pm")] * len(graph.nodes)),
    }
    print(f"{args.model}{' (quick size)' if args.quick else ''}, pm={pm}, {torch.get_num_threads()} threads "
          f"pinned to node {args.cpu_node} (CPUs {cpus[0]}-{cpus[-1]}), torch {torch.__version__}")
    if node == args.cpu_node:
        print(f"node {node} is the DRAM tier's own node: this measures the backend's cost, not a slow tier")
    measured = timed(model, inputs, policies, str(pm), rounds, args.repeats, args.clock)
    predicted = {name: predict(graph, policy, args.assume) for name, policy in policies.items()}
    base_measured, base_predicted = measured["all DRAM"].median, predicted["all DRAM"]
    print(f"\n| placement | pm bytes | measured ms | 95% interval | vs all DRAM | predicted ms ({args.assume}) | "
          f"predicted vs all DRAM | pm weight pages on node {node} |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, policy in policies.items():
        low, high = measured[name].interval()
        on_node, total = pages_on(model, policy, str(pm), node)
        print(f"| {name} | {graph.footprint(policy)['pm']:,} | {measured[name].median * 1e3:.2f} | "
              f"{low * 1e3:.2f} to {high * 1e3:.2f} | {measured[name].median / base_measured:.3f}x | "
              f"{predicted[name] * 1e3:.2f} | {predicted[name] / base_predicted:.3f}x | {on_node:,} of {total:,} |")
    print(f"\n{rounds} rounds x {args.repeats} forwards per placement; median of all "
          f"{rounds * args.repeats} samples ({args.clock} clock)")


if __name__ == "__main__":
    main()
