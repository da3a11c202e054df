"""LLM generation under a DRAM budget: decode tokens/s and time to first token of every placement (issue 14).

For a Llama-style and a Qwen2-style decoder of about 0.5 B parameters (the
zoo's, random weights) and a short and a 1k-token prompt, a whole greedy
generate call of `--new-tokens` tokens is captured once
(``capture(..., generate=N)``), and at each DRAM budget (a share of the
generate call's all-DRAM footprint, which holds the KV cache at its largest)
on each simulated device these placements are made:

- all-DRAM (ignores the budget: the floor) and all-PM;
- first-touch and interleave (the OS), weighted interleave (Linux's
  MPOL_WEIGHTED_INTERLEAVE: a split placement, each tensor's pages in the
  tiers' bandwidth ratio while DRAM has room);
- memory mode (model): a DRAM cache of the budget's size, never a placement
  (its figures are all-DRAM's and all-PM's weighed by the miss ratio);
- the single-forward optimum: the exact optimum of the prefill alone (the
  graph's first forward, what capturing one forward over the prompt
  places), checked against the budget over the whole call;
- the decode-aware optimum: the exact optimum of the whole generate graph,
  whole tensors, and with splits (policy format 2: a share of a tensor's
  pages in each tier, a linear program); the split one is the target's;
- trained: the ERL trainer on the generate graph, cost-model fitness, a
  short run (`--evaluations`).

Each is predicted (cost_model.predict_generate) and timed side by side in
one run: `--rounds` rounds, each timing every distinct placement of a
(model, prompt, device) once per round, in an order reversed every other
round, one generate call each (measure(generate=N)).

On sim with a built-in profile the emulated device *is* the cost model: a
"measured" figure here is the prediction plus noise, never evidence that a
placement or a search is right. Results: benchmarks/results/generate.md and
generate.png.

    nice python benchmarks/generate.py            # the full run (about 40 min on 2 busy cores)
    nice python benchmarks/generate.py --quick    # small models, to results/tmp (a few minutes)
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from torch_tier import baselines, clocks, zoo
from torch_tier.cost_model import GenerateFigures, predict_generate
from torch_tier.graph import TierGraph
from torch_tier.graph_capture import capture
from torch_tier.policy import Policy
from torch_tier.report import markdown_table
from torch_tier.timing import Measurement, measure
from torch_tier.trainer.erl import train

RESULTS = Path(__file__).parent / "results"
MODELS = {"llama-0.55b": ("llama", {"width": 1.75, "depth": 2}), "qwen2-0.5b": ("qwen2", {})}
QUICK_MODELS = {"llama-small": ("llama", {"width": 0.25, "depth": 0.17}),
                "qwen2-small": ("qwen2", {"width": 0.25, "depth": 0.09})}
DEVICES = ("optane-100", "cxl")
BUDGETS = ("10%", "25%", "50%")
SINGLE, TRAINED, MEMORY = "single-forward optimum", "trained", "memory mode (model)"
WHOLE, DECODE = "decode-aware optimum (whole)", "decode-aware optimum (split)"
LONG_TIMED = ("all-dram", "first-touch", DECODE)  # what a long prompt's run times


@dataclass
class Entry:
    """One placement at one budget on one device: predicted phases, and timed ones."""

    policy: Policy | None
    dram_bytes: int
    predicted: GenerateFigures
    within: bool = True  # its DRAM footprint over the whole call is within the budget
    timed: Measurement | None = None
    note: str = ""

    def measured(self) -> tuple[float, float] | None:
        """Timed (time to first token, decode tokens/s), medians over rounds."""
        if self.timed is None:
            return None
        return self.timed.time_to_first_token, self.timed.decode_tokens_per_s


@dataclass
class Case:
    """One model, prompt and device: entries per budget and placement name."""

    model: str
    prompt: int
    device: str
    graph: TierGraph
    entries: dict[str, dict[str, Entry]] = field(default_factory=dict)  # budget -> name -> Entry


def _log(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", file=sys.stderr, flush=True)


_OS: dict[tuple[int, int], dict[str, Policy]] = {}


def os_placements(graph: TierGraph, limit: int) -> dict[str, Policy]:
    """First-touch and interleave: the same on every device (the OS knows none), made once per budget."""
    key = (id(graph), limit)
    if key not in _OS:
        _OS[key] = {"first-touch": baselines.first_touch(graph, limit), "interleave": baselines.interleave(graph, limit)}
    return _OS[key]


def optimal(graph: TierGraph, limit: int, device: str, split: bool = False) -> Policy:
    """baselines.optimal at `limit`, or, where HiGHS's placements stay a few bytes over it (its
    tolerances on a budget of hundreds of MiB), at 1 MiB less (said in the policy's metadata)."""
    try:
        return baselines.optimal(graph, limit, device, split=split)
    except RuntimeError as err:
        _log(f"  {err}: solved at 1 MiB less")
        policy = baselines.optimal(graph, limit - 2**20, device, split=split)
        policy.metadata["solved_below_budget"] = 2**20
        return policy


def placements(model: torch.nn.Module, inputs: tuple, graph: TierGraph, budget: str, device: str,
               evaluations: int) -> dict[str, Policy]:
    """Every placement at `budget` on `device`; trained only when `evaluations` (memory mode comes later)."""
    limit = baselines.dram_budget(graph, budget)
    prefill = graph.phase("prefill")
    found = {"all-dram": baselines.all_dram(graph, device=device), "all-pm": baselines.all_pm(graph, limit, device),
             **os_placements(graph, limit),
             "weighted interleave": baselines.weighted_interleave(graph, limit, device),
             SINGLE: optimal(prefill, limit, device), WHOLE: optimal(graph, limit, device),
             DECODE: optimal(graph, limit, device, split=True)}
    if evaluations:
        found[TRAINED] = train(model, inputs, dram_budget=limit, pm=f"sim:{device}", fitness="model",
                               evaluations=evaluations, population=10, seed=0, progress=False, graph=graph,
                               device=device).policy
    return found


def memory_mode(graph: TierGraph, limit: int, dram: Entry, pm: Entry) -> Entry:
    """Memory mode's entry: all-DRAM's and all-PM's phases (predicted, and timed where both were)
    weighed by the DRAM cache's miss ratio (baselines.memory_mode_between)."""
    def between(d: float, p: float) -> float:
        return baselines.memory_mode_between(graph, limit, d, p)

    tokens = graph.new_tokens - 1
    predicted = GenerateFigures(between(dram.predicted.first_token, pm.predicted.first_token),
                                between(dram.predicted.decode, pm.predicted.decode), graph.new_tokens)
    entry = Entry(None, min(limit, dram.dram_bytes), predicted)
    if dram.timed is not None and pm.timed is not None:
        first = between(dram.timed.time_to_first_token, pm.timed.time_to_first_token)
        decode = between(tokens / dram.timed.decode_tokens_per_s, tokens / pm.timed.decode_tokens_per_s)
        entry.note = f"{first * 1e3:.0f}|{tokens / decode:.2f}"  # modelled from the timed rows
    return entry


def time_side_by_side(model: torch.nn.Module, inputs: tuple, case: Case, rounds: int,
                      only: tuple[str, ...] | None = None, budgets: list[str] | None = None) -> None:
    """Time every distinct runnable placement of `case` (those named in `only`, at `budgets`, when
    given) once per round, one generate call each."""
    distinct: dict[bytes, list[Entry]] = {}
    policies: dict[bytes, Policy] = {}
    for budget, named in case.entries.items():
        if budgets is not None and budget not in budgets:
            continue
        for name, entry in named.items():
            if entry.policy is None or (only is not None and name not in only):
                continue
            key = repr(sorted(entry.policy.nodes.items())).encode()
            distinct.setdefault(key, []).append(entry)
            policies[key] = entry.policy
    keys = list(distinct)
    samples: dict[bytes, list[tuple[float, float]]] = {key: [] for key in keys}
    for r in range(rounds):
        for key in keys if r % 2 == 0 else keys[::-1]:
            m = measure(model, inputs, policies[key], pm=f"sim:{case.device}", repeats=1, warmup=0,
                        generate=case.graph.new_tokens)
            samples[key].append((m.samples[0], m.first_token[0]))
        _log(f"  {case.model} prompt {case.prompt} {case.device}: round {r + 1}/{rounds} of {len(keys)} placements")
    for key, entries in distinct.items():
        totals, firsts = zip(*samples[key])
        for entry in entries:
            entry.timed = Measurement(totals, first_token=firsts, new_tokens=case.graph.new_tokens)


def run_case(model: torch.nn.Module, inputs: tuple, graph: TierGraph, name: str, device: str, budgets: list[str],
             evaluations: dict[str, int], rounds: int, only: tuple[str, ...] | None = None,
             timed_budgets: list[str] | None = None) -> Case:
    """Place at every budget (trained where `evaluations` names the budget), then time side by side."""
    case = Case(name, int(inputs[0].shape[-1]), device, graph)
    for budget in budgets:
        start = time.perf_counter()
        limit = baselines.dram_budget(graph, budget)
        found = placements(model, inputs, graph, budget, device, evaluations.get(budget, 0))
        entries = {}
        for label, policy in found.items():
            dram = graph.footprint(policy)["dram"]
            entries[label] = Entry(policy, dram, predict_generate(graph, policy, device),
                                   within=label == "all-dram" or dram <= limit)
        case.entries[budget] = entries
        _log(f"  {name} prompt {case.prompt} {device} {budget}: placed in {time.perf_counter() - start:.0f} s")
    if rounds:
        time_side_by_side(model, inputs, case, rounds, only, timed_budgets)
    for budget, entries in case.entries.items():
        limit = baselines.dram_budget(graph, budget)
        entries[MEMORY] = memory_mode(graph, limit, entries["all-dram"], entries["all-pm"])
    return case


def phase_bound(case: Case, budget: str) -> tuple[float, float]:
    """What phase-dependent activations could gain over the decode-aware optimum at most, predicted:
    its activations all in DRAM in the decode steps (and, apart, in the prefill), budget ignored;
    as shares of the optimum's decode time and time to first token."""
    policy = case.entries[budget][DECODE].policy
    dram_acts = case.graph.policy([type(p)(weight=p.weight) for p in
                                   (policy.placement_of(n.path) for n in case.graph.nodes)])
    base = predict_generate(case.graph, policy, case.device)
    bound = predict_generate(case.graph, dram_acts, case.device)
    return 1 - bound.decode / base.decode, 1 - bound.first_token / base.first_token


def _cells(entry: Entry) -> list[str]:
    p = entry.predicted
    cells = [f"{entry.dram_bytes / 2**20:.0f}" + ("" if entry.within else " (over)"),
             f"{p.first_token * 1e3:.0f}", f"{p.decode_tokens_per_s:.2f}"]
    measured = entry.measured()
    if measured is not None:
        return cells + [f"{measured[0] * 1e3:.0f}", f"{measured[1]:.2f}"]
    if entry.note:
        first, tps = entry.note.split("|")
        return cells + [first + " (model)", tps + " (model)"]
    return cells + ["-", "-"]


def verdict(case: Case, budget: str) -> str:
    """Whether the decode-aware optimum meets the target at `budget`, timed (and predicted)."""
    entries = case.entries[budget]
    ours = entries[DECODE]
    lines = []
    for kind in ("timed", "predicted"):
        def tps(e: Entry) -> float | None:
            if kind == "predicted":
                return e.predicted.decode_tokens_per_s
            m = e.measured()
            return m[1] if m else None
        mine = tps(ours)
        if mine is None:
            continue
        rivals = {n: tps(e) for n, e in entries.items() if n not in (DECODE, "all-dram") and e.within
                  and tps(e) is not None}
        faster = [n for n, v in rivals.items() if v > mine]
        gains = {n: mine / rivals[n] - 1 for n in ("first-touch", "interleave") if n in rivals}
        lines.append(f"{kind}: decode-aware {mine:.2f} tokens/s; "
                     + (f"faster within the budget: {', '.join(faster)}; " if faster else
                        "no placement within the budget is faster; ")
                     + ", ".join(f"{g:+.1%} over {n}" for n, g in gains.items()))
    return "; ".join(lines) or "not timed"


def report(cases: list[Case], args: argparse.Namespace, seconds: float) -> str:
    lines = ["# Generation under a DRAM budget (benchmarks/generate.py)", "",
             f"Greedy generate calls of {args.new_tokens} new tokens, {args.threads} torch thread(s), random "
             f"weights, every capture and timed run on the {args.clock} clock; "
             f"{args.rounds} side-by-side rounds, one generate call per placement per round, in an order "
             f"reversed every other round; prompts over 100 tokens: {args.long_rounds} round on sim:"
             f"{args.long_device} only, of {', '.join(LONG_TIMED)} only (a 1k-token prefill of a 0.5 B model "
             f"takes half a minute of CPU here), for {args.long_models} only. Trained: {args.evaluations} evaluations (cost-model fitness), at "
             f"{args.trained_budgets} of the short prompt. Run took {seconds / 60:.0f} min on a 2-core machine "
             f"shared with other jobs.", "",
             "**On sim with a built-in profile (optane-100, cxl) the emulated device is the cost model: every "
             "'timed' figure below is the cost model's prediction plus noise, never evidence that a placement "
             "or a search is right.** It shows that the placements run, and their figures as the emulator "
             "spins them out.", "",
             "Budgets are shares of the whole call's all-DRAM footprint (weights, activations and the KV cache at "
             "its largest). '(over)': the placement's DRAM footprint over the whole call exceeds the budget "
             "(the single-forward optimum does not see the cache grow). Weighted interleave and the split "
             "decode-aware optimum place a share of some tensors' pages in each tier. The split decode-aware "
             "optimum is the cost model's exact optimum within the budget (a linear program), so no placement "
             "is predicted faster: its predicted gain over first-touch and interleave is the most any placement "
             "can gain on sim with these profiles. Memory mode is a model: all-DRAM's and "
             "all-PM's figures weighed by the miss ratio of a DRAM cache of the budget's size.", ""]
    for case in cases:
        graph = case.graph
        kv = graph.kv_bytes()
        lines += [f"## {case.model}, {case.prompt}-token prompt, sim:{case.device}", "",
                  f"{sum(n.weight_bytes for n in graph.nodes) / 2**20:.0f} MiB of weights; KV cache "
                  f"{kv[0] / 2**20:.1f} MiB after the prefill, {kv[-1] / 2**20:.1f} MiB at its largest; all-DRAM "
                  f"footprint {graph.footprint(graph.policy())['dram'] / 2**20:.0f} MiB.", ""]
        for budget, entries in case.entries.items():
            limit = baselines.dram_budget(graph, budget)
            headers = ["placement", "DRAM MiB", "predicted first token ms", "predicted tokens/s",
                       "timed first token ms", "timed tokens/s"]
            rows = [[name, *_cells(entry)] for name, entry in entries.items()]
            decode_gain, first_gain = phase_bound(case, budget)
            lines += [f"### {budget} DRAM ({limit / 2**20:.0f} MiB)", "", markdown_table(headers, rows), "",
                      f"Target: {verdict(case, budget)}.", "",
                      f"Phase-dependent activations could gain at most {decode_gain:.2%} of the decode-aware "
                      f"optimum's decode time and {first_gain:.2%} of its time to first token (predicted: its "
                      f"activations all in DRAM, budget ignored).", ""]
    return "\n".join(lines)


def plot(cases: list[Case], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(cases), 4.4))
    for i, case in enumerate(cases):
        ax = fig.add_subplot(1, len(cases), i + 1)
        budgets = list(case.entries)
        names = [n for n in case.entries[budgets[0]] if n not in ("all-pm",)]
        width = 0.8 / len(names)
        for k, name in enumerate(names):
            xs = [b + (k - len(names) / 2 + 0.5) * width for b in range(len(budgets))]
            values = []
            for budget in budgets:
                entry = case.entries[budget][name]
                measured = entry.measured()
                values.append(measured[1] if measured else entry.predicted.decode_tokens_per_s)
            ax.bar(xs, values, width, label=name)
        ax.set_xticks(range(len(budgets)), budgets)
        ax.set_title(f"{case.model}, {case.prompt}-tok prompt, {case.device}", fontsize=8)
        ax.set_ylabel("decode tokens/s (timed on sim = cost model + noise)", fontsize=7)
        if i == 0:
            ax.legend(fontsize=6)
    fig.tight_layout()
    FigureCanvasAgg(fig).print_png(str(path))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small models, one device, results/tmp")
    parser.add_argument("--out", type=Path, help="folder for generate.md and .png (default results, or results/tmp)")
    parser.add_argument("--new-tokens", type=int, default=6, help="tokens per generate call (default 6)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--clock", default="cpu", choices=clocks.CLOCKS,
                        help="what captures and timed runs read (default cpu: this thread's CPU time, steady on "
                             "a machine shared with other jobs; needs one thread)")
    parser.add_argument("--prompts", default="32,1024", help="prompt lengths (default 32,1024)")
    parser.add_argument("--long-budgets", default="25%", help="budgets for prompts over 100 tokens (default 25%%)")
    parser.add_argument("--evaluations", type=int, default=10,
                        help="trainer evaluations (default 20: a short run; a generate graph's baseline seeds "
                             "alone take a minute here)")
    parser.add_argument("--trained-budgets", default="25%", help="budgets with a trained placement (default 25%%)")
    parser.add_argument("--rounds", type=int, default=1, help="side-by-side rounds (default 1)")
    parser.add_argument("--long-rounds", type=int, default=1,
                        help="side-by-side rounds for prompts over 100 tokens (default 1: a 1k-token prefill of a "
                             "0.5 B model takes half a minute here), on --long-device only, of LONG_TIMED only")
    parser.add_argument("--long-device", default="cxl", help="the device long prompts are timed on (default cxl)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"default {','.join(MODELS)}")
    parser.add_argument("--devices", default=",".join(DEVICES), help=f"default {','.join(DEVICES)}")
    parser.add_argument("--budgets", default=",".join(BUDGETS), help=f"short prompts' budgets (default "
                                                                    f"{','.join(BUDGETS)})")
    parser.add_argument("--timed-budgets", help="time only the placements at these budgets (default all)")
    parser.add_argument("--long-models", default="llama-0.55b", help="models run with long prompts (default "
                                                                     "llama-0.55b)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with clocks.use(args.clock):
        return run(args)


def run(args: argparse.Namespace) -> int:
    """Every case of `args`, each written to generate.md as it ends."""
    models = QUICK_MODELS if args.quick else MODELS
    out = args.out or (RESULTS / "tmp" if args.quick else RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    cases = []
    prompts = sorted(int(p) for p in args.prompts.split(","))  # the short prompts' cases first
    for prompt in prompts:
        for name, (zoo_name, size) in models.items():
            if not args.quick and (name not in args.models.split(",") or
                                   prompt > 100 and name not in args.long_models.split(",")):
                continue
            work = zoo.build(zoo_name, seq_len=prompt, **size)
            params = sum(p.numel() for p in work.model.parameters())
            _log(f"{name} ({params / 1e9:.2f} B parameters), prompt {prompt}: capturing a generate call")
            long = prompt > 100
            graph = capture(work.model, work.inputs, name=name, repeats=1 if long else 2, max_repeats=3,
                            generate=args.new_tokens)
            budgets = args.long_budgets.split(",") if long else args.budgets.split(",")
            evaluations = {} if long else {b: args.evaluations for b in args.trained_budgets.split(",")}
            for device in DEVICES[:1] if args.quick else args.devices.split(","):
                rounds = (args.long_rounds if device == args.long_device else 0) if long else args.rounds
                cases.append(run_case(work.model, work.inputs, graph, name, device, budgets, evaluations, rounds,
                                      LONG_TIMED if long else None,
                                      args.timed_budgets.split(",") if args.timed_budgets else None))
                (out / "generate.md").write_text(report(cases, args, time.perf_counter() - start) + "\n")
                if not long:
                    plot([c for c in cases if c.prompt <= 100], out / "generate.png")
            del work, graph
    _log(f"wrote {out / 'generate.md'} and {out / 'generate.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
