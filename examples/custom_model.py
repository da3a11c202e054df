"""Your own nn.Module, end to end: capture, train a placement, compare, enable, check, inspect.

    python examples/custom_model.py            # well under a minute on 2 cores

1. define a model (here a small convolutional encoder plus an MLP head: any nn.Module works);
2. capture its placement graph from one example inference;
3. train a placement at a 25% DRAM budget on the simulated Optane tier, with the cost model as
   fitness (fast and deterministic; use fitness="measured" to time real inferences instead);
4. compare its predicted latency with the greedy and first-touch baselines;
5. run the model under the policy: the output is identical to the all-DRAM run;
6. show which tier holds each layer's weights.
"""

import torch
from torch import nn

import torch_tier
from torch_tier import baselines

PM = "sim:optane-100"
DEVICE = "optane-100"


class Classifier(nn.Module):
    """A user's model: three conv stages, global pooling and a two-layer MLP head."""

    def __init__(self, classes: int = 100) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU())
        self.stage1 = nn.Sequential(nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.BatchNorm2d(128), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(128, 256, 3, stride=2, padding=1), nn.BatchNorm2d(256), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(256, 2048), nn.ReLU(), nn.Linear(2048, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.stage2(self.stage1(self.stem(x)))))


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = Classifier().eval()
    inputs = (torch.randn(8, 3, 64, 64),)

    graph = torch_tier.capture(model, inputs, name="Classifier")
    budget = baselines.dram_budget(graph, "25%")
    full = graph.footprint(graph.policy())["dram"]
    print(f"captured {len(graph.nodes)} nodes; all-DRAM footprint {full / 2**20:.1f} MiB, "
          f"25% budget {budget / 2**20:.1f} MiB")

    result = torch_tier.train(model, inputs, dram_budget=budget, pm=PM, fitness="model",
                              evaluations=600, graph=graph, seed=0, progress=False)
    policy = result.policy
    print(f"trained: {policy.metadata['evaluations']} evaluations, {policy.metadata['generations']} generations\n")

    rows = {
        "all-dram (no budget)": baselines.all_dram(graph),
        "first-touch": baselines.first_touch(graph, budget, DEVICE),
        "greedy": baselines.greedy(graph, budget, DEVICE),
        "trained": policy,
    }
    dram_only = torch_tier.predict(graph, rows["all-dram (no budget)"])
    print(f"{'policy':22} {'DRAM MiB':>9} {'predicted ms':>13} {'vs all-DRAM':>12}")
    for name, p in rows.items():
        latency = torch_tier.predict(graph, p)
        print(f"{name:22} {graph.footprint(p)['dram'] / 2**20:9.2f} {latency * 1e3:13.2f} {latency / dram_only:11.2f}x")

    with torch.no_grad():
        expected = model(*inputs)
    with torch_tier.enable(policy, model, pm=PM) as session:
        torch_tier.reset_peaks()  # count this inference only, not the weights' move into their tiers
        with torch.no_grad():
            out = model(*inputs)
        tiers = {name: torch_tier.tier_of(p) for name, p in model.named_parameters()}
        stats = session.stats()
    print(f"\noutput under the policy identical to the all-DRAM run: {torch.equal(out, expected)}")
    print("\nweights by tier:")
    for name, p in model.named_parameters():
        if name.endswith("weight"):
            print(f"  {name:18} {tuple(p.shape)!s:20} {tiers[name]}")
    for tier, s in stats.items():
        print(f"  {tier:4} peak {s['peak_bytes'] / 2**20:6.2f} MiB, {s['allocations']} allocations, "
              f"{s['fallbacks']} fallbacks")


if __name__ == "__main__":
    main()
