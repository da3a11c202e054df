"""Quick start: learn where a ResNet-50's tensors should live when DRAM holds only a quarter of them.

What `make demo` runs, in a few minutes on 2 cores:
1. build a ResNet-50 (random weights) and capture its placement graph;
2. train a placement on the simulated Optane tier at a 25% DRAM budget,
   timing real inferences (a progress bar shows the best latency so far);
3. compare it with the baselines (predicted and measured side by side);
4. save the policy and the training curve under examples/output/;
5. run the model under the policy and show where its tensors are.
"""

from pathlib import Path

import torch

import torch_tier
from torch_tier import baselines, zoo
from torch_tier.report import table

OUT = Path(__file__).resolve().parent / "output"
DEVICE = "optane-100"


def main() -> None:
    torch.set_num_threads(1)
    OUT.mkdir(exist_ok=True)
    work = zoo.build("resnet50", image_size=112)
    model, inputs = work.model, work.inputs
    print(f"{work.name}: {work.description}")

    graph = torch_tier.capture(model, inputs, name=work.name, repeats=20)
    budget = baselines.dram_budget(graph, "25%")
    print(f"captured {len(graph.nodes)} nodes; all-DRAM footprint "
          f"{graph.footprint(graph.policy())['dram'] / 2**20:.0f} MiB, budget {budget / 2**20:.0f} MiB\n")

    result = torch_tier.train(model, inputs, dram_budget=budget, pm=f"sim:{DEVICE}", fitness="measured",
                              evaluations=150, graph=graph, seed=0, compare_rounds=10)
    policy = result.policy
    policy.save(OUT / "resnet50-25.json")
    result.save_plot(OUT / "resnet50-25.png")
    rows = result.comparison  # the baselines and the trained policy, timed side by side on the same workers
    print("\n" + table(rows, against="trained"))
    print("\n(memory-mode is a model of Optane's DRAM-cache mode; all-dram ignores the budget)")
    print(f"\npolicy: {OUT / 'resnet50-25.json'}\ntraining curve: {OUT / 'resnet50-25.png'}\n")

    with torch_tier.enable(policy, model, pm=f"sim:{DEVICE}") as session:
        torch_tier.reset_peaks()
        with torch.no_grad():
            out = model(*inputs)
        weights = [torch_tier.tier_of(p) for p in model.parameters()]
        print(f"parameters: {weights.count('dram')} in DRAM, {weights.count('pm')} in PM; "
              f"the output is in {torch_tier.tier_of(out)}")
        for tier, s in session.stats().items():
            print(f"  {tier:4}  live {s['live_bytes'] / 2**20:6.1f} MiB   peak {s['peak_bytes'] / 2**20:6.1f} MiB   "
                  f"allocations {s['allocations']}   fallbacks {s['fallbacks']}")


if __name__ == "__main__":
    main()
