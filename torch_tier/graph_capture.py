"""capture(): a model's placement graph, from one traced and a few timed inferences.

One forward runs with every module hooked and the allocator tracing: who
allocated each buffer and when it was freed, who read whose output. Then a
few forwards run metered by the emulated tier with every tensor in DRAM,
for each node's own time. See torch_tier.graph for what the graph holds.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any

import torch

from . import _C, clocks, tiers
from .cost_model import weight_stream
from .graph import EXTERNAL, Buffer, Edge, Node, Stream, TierGraph
from .policy import Placement, Policy, fingerprint
from .runtime import Session
from .tensors import input_tensors, owned_tensors
from .timing import Measurement


@dataclass
class _Call:
    path: str
    start: int  # trace position at entry
    inputs: list[tuple[int, int]]  # (storage address, bytes read)
    weight_read: Stream
    outputs: int = 0
    end: int = 0


def _trace(model: torch.nn.Module, inputs: tuple) -> tuple[list[tuple], list[_Call]]:
    """Run one forward with every module hooked and the allocator tracing."""
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

    for path, module in model.named_modules():
        hooks.append(module.register_forward_pre_hook(lambda m, a, k, p=path: pre(m, a, k, p), with_kwargs=True))
        hooks.append(module.register_forward_hook(post, with_kwargs=True, always_call=True))
    tiers.activate(tiers.parse_pm("sim"), "fallback")
    try:
        _C.start_trace()
        with torch.no_grad():
            output = model(*inputs)
        events = _C.stop_trace()
        del output
    finally:
        tiers.deactivate()
        for hook in hooks:
            hook.remove()
    return events, calls


def _attribute(events: list[tuple], calls: list[_Call]):
    """Replay the trace against the calls: who allocated each buffer, who read whose output."""
    marks = sorted([(c.start, 1, i, "enter") for i, c in enumerate(calls)] +
                   [(c.end, 0, -i, "exit") for i, c in enumerate(calls)], key=lambda m: (m[0], -m[1], m[2]))
    owner_of: dict[int, str] = {}  # live address -> path whose code allocated it
    allocs: dict[int, list] = {}  # event id -> [path, size, alloc seq, free seq, call index]
    reads: dict[tuple[str, str | None], int] = defaultdict(int)
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
                    if record[4] in stack:  # freed inside the call that made it
                        live_in_call[record[4]] -= size
            elif stack:
                call = stack[-1]
                allocs[ident] = [calls[call].path, size, seq, None, call]
                owner_of[address] = calls[call].path
                live_in_call[call] += size
                transient[call] = max(transient[call], live_in_call[call])
            e += 1

    for position, _, index, kind in marks:
        replay_until(position)
        if kind == "enter":
            call = calls[index]
            stack.append(index)
            for address, nbytes in call.inputs:
                reads[(call.path, owner_of.get(address))] += nbytes
        else:
            stack.remove(-index)
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


def _own_times(model: torch.nn.Module, inputs: tuple, policy: Policy, repeats: int, precision: float,
               max_repeats: int) -> tuple[dict, Timing]:
    """Median own seconds per node and per forward, all DRAM, metered as a sim session meters.

    Warm-up runs until two forwards in a row agree (first forwards pay for page
    faults and lazy initialisation); then forwards are timed until the median
    forward time is known to `precision` (the 95% interval's half-width over
    the median), at least `repeats` and at most `max_repeats` of them, or
    MAX_SECONDS have passed.
    """
    per_forward: list[dict[str, float]] = []
    totals: list[float] = []
    current: dict[str, float] = defaultdict(float)

    def record(path: str, own: float, _extra: float) -> None:
        current[path] += own

    def forward() -> float:
        current.clear()
        start = clocks.now()
        model(*inputs)
        return clocks.now() - start

    with Session(policy, model, tiers.parse_pm("sim"), "fallback", recorder=record), torch.no_grad():
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
            if len(totals) >= max_repeats or (len(totals) >= repeats and
                                               (_precision(totals) <= precision or time.perf_counter() > deadline)):
                break
    medians = {path: statistics.median(f.get(path, 0.0) for f in per_forward) for path in policy.nodes}
    measured = Measurement(tuple(totals))
    reached = _precision(totals)
    return medians, Timing(len(totals), warmup, measured.median, measured.interval(), reached, reached <= precision)


def _precision(samples: list[float]) -> float:
    low, high = Measurement(tuple(samples)).interval()
    return (high - low) / 2 / statistics.median(samples)


def capture(model: torch.nn.Module, example_inputs: Any, name: str = "", repeats: int = 5,
            precision: float = 0.02, max_repeats: int = 200, clock: str | None = None) -> TierGraph:
    """Profile `model` on `example_inputs` (a tensor or a tuple of them) into a TierGraph.

    Own times are medians over at least `repeats` timed forwards, more until the
    median forward is known to `precision` (see _own_times), read from `clock`
    (torch_tier.clocks: 'wall' or 'cpu'; None: this thread's current one); the
    graph's metadata["timing"] says what was reached and on which clock.
    """
    inputs = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    modules = dict(model.named_modules())
    owned = owned_tensors(model)
    events, calls = _trace(model, inputs)
    allocs, reads, transient = _attribute(events, calls)
    end = events[-1][0] + 1 if events else 1

    allocating = {record[0] for record in allocs.values()}
    order: list[str] = []
    for call in calls:
        module = modules[call.path]
        leaf = next(module.children(), None) is None
        if call.path not in order and (leaf or call.path in allocating or owned[call.path] or not call.path):
            order.append(call.path)
    index = {path: i for i, path in enumerate(order)}

    per_node: dict[str, dict[str, int]] = {p: defaultdict(int) for p in order}
    first_call: dict[str, _Call] = {}
    for i, call in enumerate(calls):
        if call.path in index:
            stats = per_node[call.path]
            stats["calls"] += 1
            stats["outputs"] += call.outputs
            stats["transient"] = max(stats["transient"], transient.get(i, 0))
            first_call.setdefault(call.path, call)
    buffers = []
    for path, size, alloc, free, call in allocs.values():
        free = free if free is not None else end
        per_node[path]["alloc"] += size
        if free > calls[call].end:
            per_node[path]["activation"] += size
        buffers.append(Buffer(index[path], size, alloc, free))

    edges: dict[tuple[int, int], int] = defaultdict(int)
    input_bytes: dict[str, int] = defaultdict(int)
    for (reader, producer), nbytes in reads.items():
        if reader in index and next(modules[reader].children(), None) is None:
            edges[(index[producer] if producer in index else EXTERNAL, index[reader])] += nbytes
            input_bytes[reader] += nbytes

    policy = Policy(fingerprint(model), name or type(model).__name__, nodes={p: Placement() for p in order})
    with clocks.use(clock):
        own_time, timing = _own_times(model, inputs, policy, repeats, precision, max(repeats, max_repeats))
        timed_on = clocks.current()
    nodes = [
        Node(path=p, type=type(modules[p]).__name__, calls=per_node[p]["calls"],
             leaf=next(modules[p].children(), None) is None,
             weight_bytes=sum(t.untyped_storage().nbytes() for t in owned[p]),
             weight_read=first_call[p].weight_read, alloc_bytes=per_node[p]["alloc"],
             activation_bytes=per_node[p]["activation"], transient_peak_bytes=per_node[p]["transient"],
             input_bytes=input_bytes[p], output_bytes=per_node[p]["outputs"], dram_time=own_time[p])
        for p in order
    ]
    return TierGraph(
        model_name=policy.model_name,
        fingerprint=policy.fingerprint,
        nodes=nodes,
        edges=[Edge(s, d, b) for (s, d), b in sorted(edges.items(), key=lambda kv: (kv[0][1], kv[0][0]))],
        buffers=sorted(buffers, key=lambda b: b.alloc),
        events=end,
        base_time=timing.median,
        metadata={"inputs": [list(t.shape) for t in inputs if torch.is_tensor(t)], "repeats": timing.repeats,
                  "timing": {**asdict(timing), "interval": list(timing.interval), "clock": timed_on}},
    )
