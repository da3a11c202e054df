"""Quick start: run a ResNet-50 with half its layers' tensors in a slower memory tier.

What `make demo` runs. It builds a ResNet-50 (random weights), runs it with
everything in DRAM, then with the last two stages' weights and activations in
the simulated Optane tier, checks that the outputs are identical, and shows
where the tensors live and what each tier holds.
"""

import time

import torch

import torch_tier
from torch_tier import zoo


def timed(model: torch.nn.Module, inputs: tuple, repeats: int = 3) -> tuple[torch.Tensor, float]:
    with torch.no_grad():
        out = model(*inputs)
        start = time.perf_counter()
        for _ in range(repeats):
            out = model(*inputs)
    return out, (time.perf_counter() - start) / repeats


def main() -> None:
    work = zoo.build("resnet50", batch=1, image_size=224)
    model, inputs = work.model, work.inputs
    print(f"{work.name}: {work.description}")
    reference, t_plain = timed(model, inputs)

    policy = torch_tier.Policy.uniform(model, name=work.name)
    for name, _ in model.named_modules():
        if name.startswith(("layer3", "layer4")):
            policy.nodes[name] = torch_tier.Placement(weight="pm", activation="pm")

    with torch_tier.enable(policy, model, pm="sim:optane-100") as session:
        out, t_tiered = timed(model, inputs)
        print(f"\nsession: {session}")
        print(f"layer1.0.conv1.weight is in {torch_tier.tier_of(model.layer1[0].conv1.weight)}")
        print(f"layer4.2.conv3.weight is in {torch_tier.tier_of(model.layer4[2].conv3.weight)}")
        print(f"the output is in {torch_tier.tier_of(out)}\n")
        print("| tier | live MiB | peak MiB | allocations | fallbacks |\n|---|---:|---:|---:|---:|")
        for tier, s in session.stats().items():
            print(f"| {tier} | {s['live_bytes'] / 2**20:.1f} | {s['peak_bytes'] / 2**20:.1f} "
                  f"| {s['allocations']} | {s['fallbacks']} |")
    print(f"\noutputs identical: {torch.equal(out, reference)}")
    print(f"latency: {t_plain * 1e3:.0f} ms plain, {t_tiered * 1e3:.0f} ms tiered "
          "(the simulated tier's slowness arrives with the cost model)")


if __name__ == "__main__":
    main()
