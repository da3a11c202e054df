"""Regenerate the shipped policies: every zoo model at 25% and 50% DRAM budgets on sim:optane-100.

    nice python policies/make.py                       # all models, both budgets
    nice python policies/make.py gpt2 llama --budgets 25%
    nice python policies/make.py --measure-limit 0     # skip timing (metadata says so)
    nice python policies/make.py llama qwen2 --budgets 25% --generate 16   # decode policies

With --generate N the graph is a whole greedy generate call of N new tokens over the zoo's
default prompt (capture(..., generate=N)), the policy is written to policies/generate/, and the
measured latency is a generate call's, with its time to first token and decode tokens/s.

Each model is built at the zoo's default (full published) size, captured once, and trained with
the cost model as fitness (2000 evaluations, population 20, seed 0, one torch thread), so a run is
deterministic. The policy's metadata records the budget (fraction and bytes), the device, the trainer
settings, the predicted latency and the baselines' predicted latencies, and a measured latency on
sim:optane-100 (median of a few timed inferences after one warm-up), unless the predicted time of
those runs exceeds --measure-limit seconds, in which case `measured_latency` is null and
`measured_note` says why: a number is never invented.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

import torch_tier
from torch_tier import baselines, comparison, zoo
from torch_tier.cost_model import predict_generate

HERE = Path(__file__).resolve().parent
PM = "sim:optane-100"
DEVICE = "optane-100"
BUDGETS = ("25%", "50%")
TRAINER = {"fitness": "model", "evaluations": 2000, "population": 20, "seed": 0}


def path_for(model: str, budget: str, generate: int | None = None) -> Path:
    """policies/MODEL-PCT.json, e.g. policies/resnet50-25.json; decode policies in policies/generate/."""
    return (HERE / "generate" if generate else HERE) / f"{model}-{budget.rstrip('%')}.json"


def make(name: str, budgets: list[str], repeats: int, measure_limit: float, generate: int | None = None) -> None:
    t0 = time.perf_counter()
    work = zoo.build(name)
    graph = torch_tier.capture(work.model, work.inputs, name=name, generate=generate)
    all_dram = graph.footprint(graph.policy())["dram"]
    print(f"{name}: built and captured in {time.perf_counter() - t0:.1f} s; {len(graph.nodes)} nodes, "
          f"all-DRAM footprint {all_dram / 2**20:.1f} MiB", flush=True)
    for fraction in budgets:
        t1 = time.perf_counter()
        budget = baselines.dram_budget(graph, fraction)
        result = torch_tier.train(work.model, work.inputs, dram_budget=budget, pm=PM, graph=graph,
                                  progress=False, **TRAINER)
        policy = result.policy
        train_s = time.perf_counter() - t1
        footprint = graph.footprint(policy)
        assert footprint["dram"] <= budget, (name, fraction, footprint, budget)
        rows = comparison.compare(graph, comparison.placements(graph, budget, DEVICE, policy), budget, DEVICE)
        meta = policy.metadata
        meta.update(
            model=name, size={}, description=work.description,
            budget=fraction, budget_bytes=budget, all_dram_bytes=all_dram,
            footprint={tier: int(b) for tier, b in footprint.items()},
            trainer={**TRAINER, "population": meta["population"], "progress": False,
                     "seeded_from_baselines": meta["seeded_from_baselines"], "torch_threads": torch.get_num_threads()},
            predicted_baselines={r.name: r.predicted for r in rows},
            train_seconds=round(train_s, 1),
            generated_by="policies/make.py",
            environment={"torch": torch.__version__, "python": platform.python_version(),
                         "machine": platform.machine()},
        )
        if generate:
            figures = predict_generate(graph, policy, DEVICE)
            meta.update(generate=generate, prompt_tokens=graph.generation.prompt_tokens,
                        kv_bytes_largest=graph.kv_bytes()[-1], predicted_first_token=figures.first_token,
                        predicted_tokens_per_s=figures.decode_tokens_per_s)
        expected = meta["predicted_latency"] * (repeats + 1)
        if expected > measure_limit:
            meta.update(measured_latency=None, measured_samples=[],
                        measured_note=f"not measured: {repeats + 1} runs were predicted to take {expected:.0f} s, "
                                      f"over the {measure_limit:.0f} s limit of policies/make.py")
        else:
            timing = torch_tier.measure(work.model, work.inputs, policy, pm=PM, repeats=repeats, warmup=1,
                                        generate=generate)
            meta.update(measured_latency=timing.median, measured_samples=list(timing.samples),
                        measured_spread=timing.spread,
                        measured_note=f"median of {repeats} timed {'generate calls' if generate else 'inferences'} "
                                      f"after 1 warm-up on {PM} (the cost model plus noise: a built-in profile), "
                                      f"{torch.get_num_threads()} torch thread(s)")
            if generate:
                meta.update(measured_first_token=timing.time_to_first_token,
                            measured_tokens_per_s=timing.decode_tokens_per_s)
        out = path_for(name, fraction, generate)
        out.parent.mkdir(exist_ok=True)
        policy.save(out)
        measured = meta["measured_latency"]
        print(f"  {out.name}: budget {budget / 2**20:.1f} MiB, DRAM {footprint['dram'] / 2**20:.1f} MiB, "
              f"predicted {meta['predicted_latency'] * 1e3:.1f} ms, "
              f"measured {'-' if measured is None else f'{measured * 1e3:.1f} ms'} "
              f"(greedy {meta['predicted_baselines'].get('greedy', float('nan')) * 1e3:.1f} ms predicted); "
              f"train {train_s:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    forward = [name for name in zoo.names() if name not in zoo.GENERATION]
    parser.add_argument("models", nargs="*", default=forward, help=f"default: all ({', '.join(forward)})")
    parser.add_argument("--budgets", nargs="+", default=list(BUDGETS))
    parser.add_argument("--evaluations", type=int, default=TRAINER["evaluations"],
                        help=f"trainer evaluations (default {TRAINER['evaluations']}; a 0.5 B model's generate "
                             f"graph costs seconds an evaluation here)")
    parser.add_argument("--generate", type=int, metavar="N",
                        help="decode policies: place a generate call of N new tokens (policies/generate/)")
    parser.add_argument("--repeats", type=int, default=3, help="timed inferences per policy (default 3)")
    parser.add_argument("--measure-limit", type=float, default=120.0, metavar="S",
                        help="skip timing a policy whose runs are predicted to take longer (default 120 s)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    TRAINER["evaluations"] = args.evaluations
    for name in args.models:
        make(name, args.budgets, args.repeats, args.measure_limit, args.generate)
    print(json.dumps({"written": sorted(p.name for p in HERE.glob("*.json"))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
