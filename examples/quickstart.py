"""Quick start: learn, by timing real runs, where a recommender's tensors should live on a device the planner
gets wrong.

What `make demo` runs, in a few minutes on 2 cores:
1. build a DLRM-style recommender (random weights) and capture its placement graph;
2. the planner's view: the exact optimum at a 25% DRAM budget on the cost model of the
   profile it assumes (`cxl`, a CXL expander's datasheet figures);
3. the device that really runs is an emulated one the planner does not know
   (`sim:cxl-loaded`: DRAM loaded by co-running jobs beside the CXL expander, so both
   tiers serve a call's streams at once; torch_tier/device_models.py);
4. train a placement with measured fitness on that device, starting from the planner's
   (the first incumbent): a progress bar, a curve of the best placement so far, which
   starts at the planner's and falls only when a candidate beats the incumbent in paired
   re-timing;
5. time the trained placement side by side with the planner's, in paired rounds, and
   save the policy and the curve under examples/output/.
Every timing reads the timing thread's CPU time (torch_tier.clocks), which other jobs
on a shared machine leave steady; the model runs on one intra-op thread.
The emulated device is a research stand-in, not a claim about real hardware.
"""

from pathlib import Path

import torch

import torch_tier
from torch_tier import baselines, clocks, zoo
from torch_tier.timing import Measurement, measure
from torch_tier.trainer.config import TrainConfig

OUT = Path(__file__).resolve().parent / "output"
ASSUMED = "cxl"  # what the planner believes
DEVICE = "sim:cxl-loaded"  # what runs
ROUNDS = 10


def paired(model, inputs, graph, named: dict, reference: str) -> dict[str, Measurement]:
    """Each policy's time over `reference`'s, round by round (ROUNDS rounds, each timing every policy)."""
    times: dict[str, list[float]] = {name: [] for name in named}
    for _ in range(ROUNDS):
        for name, policy in named.items():
            times[name].append(measure(model, inputs, policy, pm=DEVICE, repeats=3, warmup=1).median)
    return {name: Measurement(tuple(t / r for t, r in zip(times[name], times[reference]))) for name in named}


def main() -> None:
    torch.set_num_threads(1)
    with clocks.use("cpu"):
        run()


def run() -> None:
    OUT.mkdir(exist_ok=True)
    work = zoo.build("dlrm", batch=256, rows=0.05, lookups=32)
    model, inputs = work.model, work.inputs
    print(f"{work.name}: {work.description}")
    graph = torch_tier.capture(model, inputs, name=work.name)
    budget = baselines.dram_budget(graph, "25%")
    print(f"captured {len(graph.nodes)} nodes; all-DRAM footprint "
          f"{graph.footprint(graph.policy())['dram'] / 2**20:.0f} MiB, budget {budget / 2**20:.0f} MiB\n")

    planned = baselines.optimal(graph, budget, ASSUMED)
    planned_seconds = measure(model, inputs, planned, pm=DEVICE, repeats=10).median
    print(f"the planner's optimum on '{ASSUMED}': {torch_tier.predict(graph, planned, ASSUMED) * 1e3:.2f} ms "
          f"predicted; timed on {DEVICE}: {planned_seconds * 1e3:.2f} ms\n")

    result = torch_tier.train(model, inputs, dram_budget=budget, pm=DEVICE, fitness="measured", graph=graph,
                              device=ASSUMED, start=planned, config=TrainConfig(evaluations=300, seed=0, clock="cpu"))
    trained = result.policy
    trained.save(OUT / "dlrm-25.json")

    named = {"all-dram (ignores the budget)": graph.policy(), "first-touch": baselines.first_touch(graph, budget),
             f"optimal on '{ASSUMED}' (planner)": planned, "trained (measured)": trained}
    print(f"\ntiming side by side on {DEVICE}, {ROUNDS} paired rounds ...")
    ratios = paired(model, inputs, graph, named, f"optimal on '{ASSUMED}' (planner)")
    print("\n| placement | DRAM MiB | time / planner's, median | 95% interval |\n|---|---|---|---|")
    for name, ratio in ratios.items():
        low, high = ratio.interval()
        print(f"| {name} | {graph.footprint(named[name])['dram'] / 2**20:.1f} | {ratio.median:.3f} | "
              f"[{low:.3f}, {high:.3f}] |")

    result.save_plot(OUT / "dlrm-25.png", references={"the planner's optimum, timed alone": planned_seconds})
    print(f"\npolicy: {OUT / 'dlrm-25.json'}\ntraining curve: {OUT / 'dlrm-25.png'}")

    with torch_tier.enable(trained, model, pm=DEVICE) as session:
        with torch.no_grad():
            model(*inputs)
        pm_params = sum(torch_tier.tier_of(p) == "pm" for p in model.parameters())
        print(f"under the trained policy: {pm_params} of {len(list(model.parameters()))} parameters in the slow tier; "
              f"slow tier live {session.stats()['pm']['live_bytes'] / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
