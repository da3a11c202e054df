"""capture(): a model's placement graph, from one traced and a few timed inferences.

One forward runs with every module hooked and the allocator tracing: who
allocated each buffer and when it was freed, who read whose output. Then a
few forwards run metered by the emulated tier with every tensor in DRAM,
for each node's own time. See torch_tier.graph for what the graph holds.

With ``generate=N`` the traced and timed run is a whole greedy
``model.generate`` of N tokens (torch_tier.timing.generate_options): the
prefill and N - 1 decode steps, each node's calls in both, split by phase in
the graph's ``generation``. The KV cache is each attention node's own
activations: transformers' DynamicCache grows by ``torch.cat`` inside the
attention module's forward, so every step's cache is a new buffer its
attention node allocates (in its activation tier), live until the next
step's replaces it; those buffers are marked ``kv``.

A model larger than DRAM (its weights already in the tiers, as
torch_tier.from_pretrained loads them) is captured with `dram_limit`: the
weights stay where they are and each node's all-DRAM time is its own time with
its own weights copied into DRAM, the nodes timed in groups whose weights fit
in the limit beside the run's activations. Timing is what makes such a time
sound on any slow tier; the cost model's prediction would assume the model it
is meant to inform. A node whose weights alone do not fit is timed with them
where they are: exact on `sim:` (the arena is DRAM), on real slow memory an
overstatement by the slow reads; the graph's metadata["timing"]["in_place"]
lists such nodes.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator

import torch

from . import _C, clocks, tiers
from .cost_model import weight_stream
from .graph import EXTERNAL, Buffer, Edge, Generation, Node, Stream, TierGraph
from .lifetimes import peak_live_bytes
from .policy import Placement, Policy, fingerprint
from .runtime import Session, _by_storage, _repoint, _storage_in_tier
from .tensors import input_tensors, owned_tensors
from .timing import Measurement, check_generates, generate_options


@dataclass
class _Call:
    path: str
    start: int  # trace position at entry
    inputs: list[tuple[int, int]]  # (storage address, bytes read)
    weight_read: Stream
    outputs: int = 0
    end: int = 0
    cache: tuple[int, ...] = ()  # addresses of the KV cache's tensors it was handed, at its exit


def _cache_tensors(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """The key and value tensors of a transformers Cache among a call's arguments (its `layers`)."""
    out = []
    for value in (*args, *kwargs.values()):
        for layer in getattr(value, "layers", None) or ():
            out += [t for t in (getattr(layer, "keys", None), getattr(layer, "values", None)) if torch.is_tensor(t)]
    return out


def _trace(model: torch.nn.Module, run: Callable[[], Any]) -> tuple[list[tuple], list[_Call]]:
    """Run `run` (one forward, or one generate call) with every module hooked and the allocator tracing."""
    owned = {path: sum(t.untyped_storage().nbytes() for t in ts) for path, ts in owned_tensors(model).items()}
    calls: list[_Call] = []
    open_calls: dict[int, list[_Call]] = defaultdict(list)
    hooks = []

    def pre(module, args, kwargs, path):
        reads = [(t.untyped_storage().data_ptr(), t.nbytes) for t in input_tensors(args, kwargs)]
        call = _Call(path, _C.trace_position(), reads, weight_stream(module, owned[path], args, kwargs))
        calls.append(call)
        open_calls[id(module)].append(call)

    def post(module, args, kwargs, output):
        call = open_calls[id(module)].pop()
        call.end = _C.trace_position()
        call.outputs = sum(t.nbytes for t in input_tensors((output,), {}))
        call.cache = tuple(t.untyped_storage().data_ptr() for t in _cache_tensors(args, kwargs))

    try:
        for path, module in model.named_modules():
            hooks.append(module.register_forward_pre_hook(lambda m, a, k, p=path: pre(m, a, k, p), with_kwargs=True))
            hooks.append(module.register_forward_hook(post, with_kwargs=True, always_call=True))
        tiers.activate(tiers.parse_pm("sim"), "fallback")
        _C.start_trace()
        with torch.no_grad():
            output = run()
        events = _C.stop_trace()
        del output
    finally:
        tiers.deactivate()
        for hook in hooks:
            hook.remove()
    return events, calls


def _attribute(events: list[tuple], calls: list[_Call], decode_start: int):
    """Replay the trace against the calls: who allocated each buffer, who read whose output
    (keyed by reader, producer and whether the read is in a decode step)."""
    marks = sorted([(c.start, 1, i, "enter") for i, c in enumerate(calls)] +
                   [(c.end, 0, -i, "exit") for i, c in enumerate(calls)], key=lambda m: (m[0], -m[1], m[2]))
    owner_of: dict[int, str] = {}  # live address -> path whose code allocated it
    event_of: dict[int, int] = {}  # live address -> its allocation's event id
    allocs: dict[int, list] = {}  # event id -> [path, size, alloc seq, free seq, call index, kv]
    reads: dict[tuple[str, str | None, bool], int] = defaultdict(int)
    stack: list[int] = []
    transient = defaultdict(int)
    live_in_call: dict[int, int] = defaultdict(int)
    e = 0

    def replay_until(position: int) -> None:
        nonlocal e
        while e < len(events) and events[e][0] <= position:
            seq, ident, address, size, _tier, is_free = events[e]
            if is_free:
                if ident in allocs:
                    record = allocs[ident]
                    record[3] = seq
                    owner_of.pop(address, None)
                    event_of.pop(address, None)
                    if record[4] in stack:  # freed inside the call that made it
                        live_in_call[record[4]] -= size
            elif stack:
                call = stack[-1]
                allocs[ident] = [calls[call].path, size, seq, None, call, False]
                owner_of[address] = calls[call].path
                event_of[address] = ident
                live_in_call[call] += size
                transient[call] = max(transient[call], live_in_call[call])
            e += 1

    for position, _, index, kind in marks:
        replay_until(position)
        if kind == "enter":
            call = calls[index]
            stack.append(index)
            for address, nbytes in call.inputs:
                reads[(call.path, owner_of.get(address), call.start >= decode_start)] += nbytes
        else:
            stack.remove(-index)
            for address in calls[-index].cache:  # the cache tensors this call made are the KV cache
                if address in event_of and allocs[event_of[address]][4] == -index:
                    allocs[event_of[address]][5] = True
    replay_until(events[-1][0] if events else 0)
    return allocs, reads, transient


WARMUP_MIN, WARMUP_MAX = 3, 20  # forwards before timing: page faults, lazy initialisation, caches
WARMUP_SETTLED = 0.05  # warm-up ends once a forward is within this of the one before it
MAX_SECONDS = 10.0  # timing stops here even short of the precision asked for


@dataclass(frozen=True)
class Timing:
    """How capture timed the all-DRAM forward: what it reached, and at what cost."""

    repeats: int
    warmup: int
    median: float
    interval: tuple[float, float]  # 95% distribution-free interval of the median (timing.Measurement)
    precision: float  # half the interval's width over the median
    reached: bool  # whether `precision` reached the precision asked for
    in_place: tuple[str, ...] = ()  # nodes timed with their weights in pm (capture's dram_limit too small)


@dataclass
class _OwnTimes:
    """What _own_times measured: per node, median own seconds of a run and of its decode steps."""

    total: dict[str, float]
    decode: dict[str, float]
    first_token: float  # median seconds from a run's start to the end of its first forward
    timing: Timing


@contextmanager
def _in_dram(tensors: list[torch.Tensor]) -> Iterator[None]:
    """The storages of `tensors` copied into DRAM (the allocator enabled) for the block, then
    copied back into their own storages (a forward may update buffers in place) and re-pointed there."""
    groups = [group for _, group in _by_storage([(t, None) for t in tensors]).values()]
    originals = [group[0].untyped_storage() for group in groups]
    for group in groups:
        _repoint(group, _storage_in_tier(group[0].untyped_storage(), tiers.DRAM))
    try:
        yield
    finally:
        for group, original in zip(groups, originals):
            original.copy_(group[0].untyped_storage())
            _repoint(group, original)


def _own_times(model: torch.nn.Module, run: Callable[[], Any], policy: Policy, repeats: int, precision: float,
               max_repeats: int, borrow: list[torch.Tensor] | None = None) -> _OwnTimes:
    """Median own seconds per node and per run (one forward, or one generate call), with the
    weights where `policy` puts them (all DRAM for capture) and those of `borrow` copied into
    DRAM, metered as a sim session meters; of a generate call, also its decode steps' share.

    Warm-up runs until two forwards in a row agree (first forwards pay for page
    faults and lazy initialisation); then forwards are timed until the median
    forward time is known to `precision` (the 95% interval's half-width over
    the median), at least `repeats` and at most `max_repeats` of them, or
    MAX_SECONDS have passed.
    """
    per_forward: list[dict[tuple[str, bool], float]] = []
    totals: list[float] = []
    first_token: list[float] = []
    current: dict[tuple[str, bool], float] = defaultdict(float)  # (path, in a decode step) -> own seconds
    ends: list[float] = []  # when each forward of the run ended

    def record(path: str, own: float, _extra: float) -> None:
        current[(path, bool(ends))] += own

    def forward() -> float:
        current.clear()
        ends.clear()
        start = clocks.now()
        run()
        first_token.append(ends[0] - start)
        return clocks.now() - start

    with Session(policy, model, tiers.parse_pm("sim"), "fallback", recorder=record), torch.no_grad(), \
            _in_dram(borrow or []):
        # after the session's hooks, so the root's own time of the first forward counts as the prefill's
        root_end = model.register_forward_hook(lambda *_: ends.append(clocks.now()))
        try:
            warmup, last = 0, float("inf")
            while warmup < WARMUP_MAX:
                seconds, warmup = forward(), warmup + 1
                if warmup >= WARMUP_MIN and abs(seconds - last) <= WARMUP_SETTLED * last:
                    break
                last = seconds
            deadline = time.perf_counter() + MAX_SECONDS
            while True:
                totals.append(forward())
                per_forward.append(dict(current))
                if len(totals) >= max_repeats or (len(totals) >= repeats and (
                        _precision(totals) <= precision or time.perf_counter() > deadline)):
                    break
        finally:
            root_end.remove()
    phases = {decode: {path: statistics.median(f.get((path, decode), 0.0) for f in per_forward)
                       for path in policy.nodes} for decode in (False, True)}
    measured = Measurement(tuple(totals))
    reached = _precision(totals)
    timing = Timing(len(totals), warmup, measured.median, measured.interval(), reached, reached <= precision)
    return _OwnTimes({path: phases[False][path] + phases[True][path] for path in policy.nodes}, phases[True],
                     statistics.median(first_token[-len(totals):]), timing)


def _own_times_in_groups(model: torch.nn.Module, run: Callable[[], Any], policy: Policy, buffers: list[Buffer],
                         limit: int, repeats: int, precision: float, max_repeats: int) -> _OwnTimes:
    """Each node's own seconds with its weights in DRAM, never holding more than `limit` bytes
    of DRAM: weights stay in their tiers (those in plain memory go to pm), and the nodes whose
    weights are in pm are timed in groups, each group's weights copied into DRAM beside the
    run's activations (`buffers`, all in DRAM) and the weights already there. A node whose
    weights alone exceed that room is timed with them in pm; a node with no weights in pm takes
    the median of its times over the groups. No run goes all in DRAM, so
    the Timing's median and the first token's time are sums of the nodes' own times; the
    interval is the widest group's, relatively.
    """
    owned = owned_tensors(model)
    in_dram = {p for p in policy.nodes if owned[p] and all(tiers.tier_of(t) == "dram" for t in owned[p])}
    placed = Policy(policy.fingerprint, policy.model_name,
                    nodes={p: Placement(weight="dram" if p in in_dram else "pm") for p in policy.nodes})
    sizes = {p: sum(t.untyped_storage().nbytes() for t in owned[p]) for p in policy.nodes}
    activations = peak_live_bytes((b.alloc, b.free, b.size) for b in buffers)
    room = limit - activations - sum(sizes[p] for p in in_dram)
    if room < 0:
        raise ValueError(f"a DRAM limit of {limit} bytes cannot hold the run's {activations} bytes of activations "
                         f"and {limit - activations - room} bytes of weights in DRAM, which capture times in DRAM")
    in_place = tuple(p for p in policy.nodes if sizes[p] > room and p not in in_dram)
    groups: list[list[str]] = [[]]
    for path in (p for p in policy.nodes if owned[p] and p not in in_dram and p not in in_place):
        if sum(sizes[p] for p in groups[-1]) + sizes[path] > room:
            groups.append([])
        groups[-1].append(path)
    rounds = [(group, _own_times(model, run, placed, repeats, precision, max_repeats,
                                 borrow=[t for p in group for t in owned[p]])) for group in groups]
    total = {p: statistics.median(own.total[p] for _, own in rounds) for p in policy.nodes}
    decode = {p: statistics.median(own.decode[p] for _, own in rounds) for p in policy.nodes}
    for group, own in rounds:
        total.update((p, own.total[p]) for p in group)
        decode.update((p, own.decode[p]) for p in group)
    timings = [own.timing for _, own in rounds]
    median, widest = sum(total.values()), max(t.precision for t in timings)
    timing = Timing(sum(t.repeats for t in timings), sum(t.warmup for t in timings), median,
                    (median * (1 - widest), median * (1 + widest)), widest, all(t.reached for t in timings),
                    in_place)
    return _OwnTimes(total, decode, median - sum(decode.values()), timing)


def _precision(samples: list[float]) -> float:
    low, high = Measurement(tuple(samples)).interval()
    return (high - low) / 2 / statistics.median(samples)


def capture(model: torch.nn.Module, example_inputs: Any, name: str = "", repeats: int = 5,
            precision: float = 0.02, max_repeats: int = 200, clock: str | None = None,
            generate: int | None = None, dram_limit: int | None = None,
            **generate_kwargs: Any) -> TierGraph:
    """Profile `model` on `example_inputs` (a tensor or a tuple of them) into a TierGraph.

    Own times are medians over at least `repeats` timed forwards, more until the
    median forward is known to `precision` (see _own_times), read from `clock`
    (torch_tier.clocks: 'wall' or 'cpu'; None: this thread's current one); the
    graph's metadata["timing"] says what was reached and on which clock.

    generate: profile a whole greedy ``model.generate(*example_inputs, max_new_tokens=generate)``
    instead (a transformers causal LM; exactly that many tokens, `generate_kwargs` passed
    through): the graph's figures are per generate call, and its ``generation`` holds the
    decode steps' share and which buffers are the KV cache (see the module doc). A graph
    for N tokens stands for that N and that prompt length: per decode step, weight reads
    and compute stay the same while the KV cache and the attention over it grow by one
    token, so the decode share scales with (longer - 1) / (N - 1) only where the cache is
    small beside the weights; capture at the length you will run to price the cache.

    dram_limit: bytes of DRAM the timing may hold; the weights stay in their tiers and
    each node is timed with its own weights copied into DRAM (see _own_times_in_groups).
    Without it the timing moves every weight into DRAM.
    """
    if _C.enabled():
        raise RuntimeError("torch-tier: capture() cannot run inside a torch-tier session (it traces the model "
                           "with an allocator of its own); close() the session first")
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    if generate is not None:
        check_generates(model)
        options = generate_options(generate, generate_kwargs)
        run = lambda: model.generate(*inputs, **options)  # noqa: E731
    elif generate_kwargs:
        raise TypeError(f"capture: unexpected keyword arguments {sorted(generate_kwargs)} (generate options "
                        f"need generate=N)")
    else:
        run = lambda: model(*inputs)  # noqa: E731
    modules = dict(model.named_modules())
    owned = owned_tensors(model)
    events, calls = _trace(model, run)
    end = events[-1][0] + 1 if events else 1
    root_starts = [call.start for call in calls if not call.path]
    if generate is not None and len(root_starts) != options["max_new_tokens"]:
        raise RuntimeError(f"capture: generate ran {len(root_starts)} forwards for {options['max_new_tokens']} new tokens (the "
                           f"options {sorted(generate_kwargs)} must leave one forward per token)")
    decode_start = root_starts[1] if len(root_starts) > 1 else end  # the second forward of a generate call
    allocs, reads, transient = _attribute(events, calls, decode_start)

    allocating = {record[0] for record in allocs.values()}
    order: list[str] = []
    for call in calls:
        module = modules[call.path]
        leaf = next(module.children(), None) is None
        if call.path not in order and (leaf or call.path in allocating or owned[call.path] or not call.path):
            order.append(call.path)
    index = {path: i for i, path in enumerate(order)}

    per_node: dict[str, dict[str, int]] = {p: defaultdict(int) for p in order}  # "name" or "decode name"
    first_call: dict[str, _Call] = {}
    for i, call in enumerate(calls):
        if call.path in index:
            stats, decode = per_node[call.path], "decode " if call.start >= decode_start else ""
            for prefix in {"", decode}:
                stats[prefix + "calls"] += 1
                stats[prefix + "outputs"] += call.outputs
            stats["transient"] = max(stats["transient"], transient.get(i, 0))
            first_call.setdefault(call.path, call)
    buffers = []
    for path, size, alloc, free, call, kv in allocs.values():
        free = free if free is not None else end
        outlives = free > calls[call].end
        for prefix in {"", "decode " if alloc >= decode_start else ""}:
            per_node[path][prefix + "alloc"] += size
            per_node[path][prefix + "activation"] += size if outlives else 0
        buffers.append(Buffer(index[path], size, alloc, free, kv))

    edges: dict[tuple[int, int], list[int]] = defaultdict(lambda: [0, 0])  # bytes in all, in decode steps
    input_bytes: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (reader, producer, decode), nbytes in reads.items():
        if reader in index and next(modules[reader].children(), None) is None:
            edge = edges[(index[producer] if producer in index else EXTERNAL, index[reader])]
            for totals in (edge, input_bytes[reader]):
                totals[0] += nbytes
                totals[1] += nbytes if decode else 0

    policy = Policy(fingerprint(model), name or type(model).__name__, nodes={p: Placement() for p in order})
    with clocks.use(clock):
        if dram_limit is None:
            own = _own_times(model, run, policy, repeats, precision, max(repeats, max_repeats))
        else:
            own = _own_times_in_groups(model, run, policy, buffers, dram_limit, repeats, precision,
                                       max(repeats, max_repeats))
        timed_on = clocks.current()
    timing = own.timing
    nodes = [
        Node(path=p, type=type(modules[p]).__name__, calls=per_node[p]["calls"],
             leaf=next(modules[p].children(), None) is None,
             weight_bytes=sum(t.untyped_storage().nbytes() for t in owned[p]),
             weight_read=first_call[p].weight_read, alloc_bytes=per_node[p]["alloc"],
             activation_bytes=per_node[p]["activation"], transient_peak_bytes=per_node[p]["transient"],
             input_bytes=input_bytes[p][0], output_bytes=per_node[p]["outputs"], dram_time=own.total[p])
        for p in order
    ]
    ordered_edges = sorted(edges.items(), key=lambda kv: (kv[0][1], kv[0][0]))
    generation = None
    if generate is not None:
        generation = Generation(
            prompt_tokens=int(inputs[0].shape[-1]), new_tokens=options["max_new_tokens"], step_starts=root_starts,
            prefill_time=own.first_token, decode_calls=[per_node[p]["decode calls"] for p in order],
            decode_alloc_bytes=[per_node[p]["decode alloc"] for p in order],
            decode_activation_bytes=[per_node[p]["decode activation"] for p in order],
            decode_input_bytes=[input_bytes[p][1] for p in order],
            decode_output_bytes=[per_node[p]["decode outputs"] for p in order],
            decode_dram_time=[own.decode[p] for p in order], decode_edge_bytes=[b[1] for _, b in ordered_edges])
    return TierGraph(
        model_name=policy.model_name,
        fingerprint=policy.fingerprint,
        nodes=nodes,
        edges=[Edge(s, d, b[0]) for (s, d), b in ordered_edges],
        buffers=sorted(buffers, key=lambda b: b.alloc),
        events=end,
        base_time=timing.median,
        metadata={"inputs": [list(t.shape) for t in inputs if torch.is_tensor(t)], "repeats": timing.repeats,
                  "timing": {**asdict(timing), "interval": list(timing.interval), "in_place": list(timing.in_place),
                             "clock": timed_on}},
        generation=generation,
    )
