"""A Llama-style decoder loaded from its checkpoint straight into the tiers, generating with a quarter of it in DRAM.

    python examples/transformers_llm.py        # a few minutes on 2 busy cores

Nothing can be downloaded here, so the example first writes a checkpoint: the zoo's `llama`
(transformers' LlamaForCausalLM, random weights) at half width and half depth, saved by
save_pretrained in shards, with its greedy tokens for a prompt. Then torch_tier.from_pretrained
loads it with dram_budget="25%": every weight is read from its file straight into the slow
tier, a whole generate call is captured with the weights there (each node timed with its own
weights copied into DRAM, in groups within the budget), the cost model's decode-aware optimum
for the budget is found, and the weights it puts in DRAM move there. The session generates;
its tokens must equal the plain model's. Last, time to first token and decode tokens/s under
that placement and all in DRAM, timed in alternating rounds.

On sim:optane-100 the emulated tier runs the cost model itself: the timed figures are its
prediction plus noise. They show what the placement costs under that model, not that the
model (or the optimum) is right.
"""

import statistics
import tempfile
from pathlib import Path

import torch

import torch_tier
from torch_tier import zoo
from torch_tier.timing import Measurement, generate_options

PM = "sim:optane-100"
PROMPT, NEW_TOKENS = 32, 16
ROUNDS = 3


def write_checkpoint(directory: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """A random Llama saved as transformers saves one, and its greedy tokens (the reference)."""
    work = zoo.build("llama", seq_len=PROMPT, width=0.5, depth=0.5)
    work.model.save_pretrained(directory, max_shard_size="20MB")
    with torch.no_grad():
        tokens = work.model.generate(*work.inputs, **generate_options(NEW_TOKENS))
    return work.inputs[0], tokens


def timed(model: torch.nn.Module, prompt: torch.Tensor, policies: dict[str, torch_tier.Policy]) -> dict[str, Measurement]:
    """Each policy's generate calls, timed in ROUNDS rounds that each time every policy in turn."""
    runs: dict[str, list[Measurement]] = {name: [] for name in policies}
    for _ in range(ROUNDS):
        for name, policy in policies.items():
            runs[name].append(torch_tier.measure(model, prompt, policy, pm=PM, repeats=2, warmup=1,
                                                 generate=NEW_TOKENS))
    return {name: Measurement(sum((m.samples for m in ms), ()), first_token=sum((m.first_token for m in ms), ()),
                              new_tokens=NEW_TOKENS) for name, ms in runs.items()}


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        prompt, expected = write_checkpoint(directory)
        size = sum(f.stat().st_size for f in directory.glob("*.safetensors"))
        print(f"checkpoint: {len(list(directory.glob('*.safetensors')))} safetensors shards, {size / 2**20:.1f} MiB")

        base = torch_tier.stats()["dram"]["live_bytes"]
        torch_tier.reset_peaks()
        with torch_tier.from_pretrained(directory, dram_budget="25%", pm=PM, inputs=prompt,
                                        capture_options={"generate": NEW_TOKENS, "repeats": 3}) as session:
            model, policy = session.model, session.policy
            with torch.no_grad():
                tokens = model.generate(prompt, **generate_options(NEW_TOKENS))
            peak = torch_tier.stats()["dram"]["peak_bytes"] - base
            placed = [torch_tier.tier_of(p) for p in model.parameters()]
        budget = policy.metadata["dram_budget"]
        in_place = policy.metadata["capture"]["timing"]["in_place"]
        print(f"loaded, captured (one generate call of {NEW_TOKENS} tokens) and placed within a DRAM budget of "
              f"{budget:,} bytes: DRAM peak {peak:,} bytes while loading, capturing and generating")
        print(f"nodes timed with their weights in pm (too large for the budget): {', '.join(in_place) or 'none'}")
        print(f"parameters: {placed.count('dram')} tensors in DRAM, {placed.count('pm')} in pm")
        print(f"tokens identical to the plain model's: {torch.equal(tokens, expected)}\n")

        results = timed(model, prompt, {"all-dram": torch_tier.Policy.uniform(model), "decode-aware optimum": policy})
        print(f"{'policy':22} {'first token ms':>15} {'decode tokens/s':>16} {'generate ms':>12}")
        for name, m in results.items():
            print(f"{name:22} {m.time_to_first_token * 1e3:15.1f} {m.decode_tokens_per_s:16.2f} {m.median * 1e3:12.1f}")
        ratio = statistics.median(results["decode-aware optimum"].samples) / statistics.median(results["all-dram"].samples)
        print(f"(all-dram ignores the budget: the floor; the optimum takes {ratio:.2f}x its time on {PM}, where "
              "timed figures are the cost model's prediction plus noise)")


if __name__ == "__main__":
    main()
