"""A Llama-style decoder (transformers' LlamaForCausalLM, random weights) with a quarter of it in DRAM.

    python examples/transformers_llm.py        # about a minute on 2 cores

The zoo's `llama` at half width and half depth (6 layers, hidden 384, grouped-query attention,
32k vocabulary): captured, a placement trained at a 25% DRAM budget on the simulated Optane tier
(cost-model fitness), compared with the baselines (predicted, then timed on sim:optane-100), and
run under the policy, whose logits must equal the all-DRAM run's. For the full-size model use
`zoo.build("llama")`, or the shipped policies/llama-25.json.
"""

import torch

import torch_tier
from torch_tier import baselines, zoo

PM = "sim:optane-100"
DEVICE = "optane-100"


def main() -> None:
    torch.set_num_threads(1)
    work = zoo.build("llama", seq_len=64, width=0.5, depth=0.5)
    model, inputs = work.model, work.inputs
    params = sum(p.numel() for p in model.parameters())
    print(f"{work.name}: {params / 1e6:.1f}M parameters, input {tuple(inputs[0].shape)}")

    graph = torch_tier.capture(model, inputs, name="llama-small")
    budget = baselines.dram_budget(graph, "25%")
    print(f"captured {len(graph.nodes)} nodes; all-DRAM footprint {graph.footprint(graph.policy())['dram'] / 2**20:.1f} "
          f"MiB, 25% budget {budget / 2**20:.1f} MiB")
    result = torch_tier.train(model, inputs, dram_budget=budget, pm=PM, fitness="model", evaluations=1000,
                              graph=graph, seed=0, progress=False)
    print(f"trained: {result.policy.metadata['evaluations']} evaluations\n")

    named = {
        "all-dram": baselines.all_dram(graph),
        "all-pm": baselines.all_pm(graph, budget, DEVICE),
        "first-touch": baselines.first_touch(graph, budget, DEVICE),
        "greedy": baselines.greedy(graph, budget, DEVICE),
        "trained": result.policy,
    }
    print(f"{'policy':12} {'DRAM MiB':>9} {'predicted ms':>13} {'measured ms':>12}")
    for name, policy in named.items():
        timing = torch_tier.measure(model, inputs, policy, pm=PM, repeats=3, warmup=1)
        print(f"{name:12} {graph.footprint(policy)['dram'] / 2**20:9.1f} {torch_tier.predict(graph, policy) * 1e3:13.1f} "
              f"{timing.median * 1e3:12.1f}")
    print("(all-dram ignores the budget: the floor every placement is measured against)")

    with torch.no_grad():
        expected = model(*inputs).logits
    with torch_tier.enable(result.policy, model, pm=PM):
        with torch.no_grad():
            logits = model(*inputs).logits
        placed = [torch_tier.tier_of(p) for p in model.parameters()]
        embed = torch_tier.tier_of(model.model.embed_tokens.weight)
        head = torch_tier.tier_of(model.lm_head.weight)
    print(f"\nlogits identical to the all-DRAM run: {torch.equal(logits, expected)}")
    print(f"parameters: {placed.count('dram')} tensors in DRAM, {placed.count('pm')} in PM; "
          f"embedding in {embed}, LM head in {head}")


if __name__ == "__main__":
    main()
