"""enable(): run an unchanged model with its tensors in the tiers a policy names.

Weights are moved once, when the session starts. Activations follow forward
hooks: while any module of the model runs, the calling thread allocates in
that module's activation tier (the policy's placement of it, or of its
innermost listed ancestor), so the innermost module on the call stack wins,
whether it was called by its parent or directly (`model[0](x)`), on every
backend. Outside the model's forwards a thread allocates in DRAM, as do
threads that never run one (e.g. intra-op pool threads, which on CPU
allocate nothing in the models measured).

The hooks are PyTorch's global module hooks, so nothing is stored on the
model: it pickles, saves and deep-copies as it would without torch-tier, and
a copy runs unplaced. A call that ends by an exception PyTorch does not see
through (KeyboardInterrupt: its always_call hooks run for Exception only)
leaves its thread's entries behind; the next hook on that thread drops every
entry whose call is no longer on the thread's Python stack and restores the
tier, and close() drops them all. close() waits for the forwards other
threads are running before it moves weights back and frees the pm tier.

On a simulated tier every node is metered by the emulated tier
(torch_tier.emulated), which spins out the extra time each call's slow-tier
traffic costs, so wall-clock time reflects the placement.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, Callable, NamedTuple

import torch

from . import _C, arenas, cost_model, devices, tiers
from .emulated import CallRecorder, Frame, Meter, Weights
from .graph import TierGraph
from .policy import Placement, Policy
from .tensors import owned_tensors

# Makes the data of a tensor that has none (on the meta device): a CPU tensor of its shape and
# dtype, allocated by the current allocator (the session has set the tier it goes to).
Loader = Callable[[torch.Tensor], torch.Tensor]

_active: "Session | None" = None
_active_lock = threading.RLock()  # close() runs under it when enable() fails

CLOSE_TIMEOUT = 60.0  # seconds close() waits for other threads' forwards by default


def _storage_in_tier(storage: torch.UntypedStorage, tier: int | float | None) -> torch.UntypedStorage:
    """A copy of `storage` allocated in `tier` (index, or a split's pm share), or by the current CPU
    allocator (None)."""
    previous = _C.get_tier()
    if tier is not None:
        _C.set_tier(tier)
    try:
        copy = torch.empty(storage.nbytes(), dtype=torch.uint8).untyped_storage()  # UntypedStorage(n) bypasses it
    finally:
        _C.set_tier(previous)
    return copy.copy_(storage)


def _repoint(tensors: list[torch.Tensor], storage: torch.UntypedStorage) -> None:
    """Point each tensor (same offset, sizes and strides) into `storage`.

    set_ under no_grad: the tensors stay the same objects (Parameters too), views of one buffer
    keep sharing it and their version counter, and the counter is bumped, so autograd notices
    the change instead of silently reading new memory.
    """
    with torch.no_grad():
        for tensor in tensors:
            tensor.set_(storage, tensor.storage_offset(), tensor.size(), tensor.stride())


def _by_storage(tensors: list[tuple[torch.Tensor, int | None]]) -> dict[int, tuple[int | None, list[torch.Tensor]]]:
    """Tensors grouped by the storage they view (StorageImpl identity), each group with the
    tier of its first tensor: a storage shared by several owners goes where its first owner's goes.
    Tensors on the meta device (storage yet to be made) are grouped too."""
    groups: dict[int, tuple[int | None, list[torch.Tensor]]] = {}
    for tensor, tier in tensors:
        if tensor.device.type not in ("cpu", "meta") or tensor.untyped_storage().nbytes() == 0:
            continue
        key = tensor.untyped_storage()._cdata
        groups.setdefault(key, (tier, []))[1].append(tensor)
    return groups


class _Placed(NamedTuple):
    """A module of the session's model: the tier its calls allocate in; what the meter needs of it."""

    module: torch.nn.Module
    tier: int | float  # a tier index, or a split's pm share: what _C.set_tier takes
    path: str
    weights: Weights | None  # None: not metered
    leaf: bool


class _Call(NamedTuple):
    """A call of a placed module in progress on a thread."""

    placed: _Placed
    frame: FrameType  # PyTorch's frame that runs the call's hooks: on the thread's stack while the call runs
    previous_tier: int | float
    meter: Frame | None


def _current_frames() -> dict[int, Any]:
    """sys._current_frames() with the garbage collector off: CPython 3.11 may collect inside it while
    holding the interpreter's head lock, and freeing a threading.local there deadlocks (seen with gdb)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return sys._current_frames()
    finally:
        if enabled:
            gc.enable()


def _runs_within(frame: FrameType | None, caller: FrameType) -> bool:
    """Whether `caller` is `frame` or one of its callers, i.e. the call it runs has not ended."""
    while frame is not None:
        if frame is caller:
            return True
        frame = frame.f_back
    return False


def _unwind(calls: list[_Call], frame: FrameType) -> None:
    """Drop the calls that ended unseen, those `frame` does not run within (an interrupt left
    them), and restore the tier the outermost of them found."""
    previous = None
    while calls and not _runs_within(frame, calls[-1].frame):
        previous = calls.pop().previous_tier
    if previous is not None:
        _C.set_tier(previous)


def _load(model: torch.nn.Module, tensors: list[torch.Tensor], tier: int | float, loader: Loader) -> None:
    """Make each meta tensor's data in `tier` with `loader` and put it in the meta tensor's place
    in every module that holds it (a tied Parameter stays one Parameter, shared as before)."""
    slots = [(module, kind, name) for module in model.modules() for kind in ("_parameters", "_buffers")
             for name, held in getattr(module, kind).items() if any(held is t for t in tensors)]
    for tensor in tensors:
        previous = _C.get_tier()
        _C.set_tier(tier)
        try:
            data = loader(tensor)
        finally:
            _C.set_tier(previous)
        if isinstance(tensor, torch.nn.Parameter):
            data = torch.nn.Parameter(data, requires_grad=tensor.requires_grad)
        for module, kind, name in slots:
            if getattr(module, kind)[name] is tensor:
                getattr(module, kind)[name] = data


class Session:
    """One model running under a policy; `close()` (or leaving `with`) undoes it all."""

    def __init__(
        self,
        policy: Policy,
        model: torch.nn.Module,
        pm: tiers.PmSpec,
        on_full: str,
        recorder: CallRecorder | None = None,
        arena_plans: "dict[str, Any] | None" = None,
        loader: Loader | None = None,
    ):
        self.policy = policy
        self.model = model
        self.pm = pm
        self.on_full = on_full
        device = None
        if pm.kind == "sim":
            device = devices.device_model(pm.profile) or cost_model.cost_model(pm.profile).call_extra
        self._meter = Meter(device, recorder) if device is not None or recorder is not None else None
        self._moved: dict[int, torch.Tensor] = {}  # id -> each parameter and buffer moved out of plain memory
        self._placed: dict[int, _Placed] = {}  # id(module) -> every module of the model
        # Thread ident -> its calls in progress, outermost first. A dict, not a threading.local: the
        # calls hold frames, and CPython 3.11 can deadlock freeing a threading.local whose values
        # lead to freeing another one (the Session's, through a frame's reference to its hook).
        self._threads: dict[int, list[_Call]] = {}
        self._planned = bool(arena_plans)
        self._hooks: list[Any] = []
        self._closing = False  # close() is waiting for other threads' forwards
        self._wake = threading.Condition()  # forwards held while close() waits are woken when it ends
        self._closed = False
        placements = policy.resolve(model)
        tiers.activate(pm, on_full)
        try:
            self._place_weights(placements, loader)
            if arena_plans:
                arenas.install(arena_plans)
            self._place_modules(placements)
            self._hooks = [torch.nn.modules.module.register_module_forward_pre_hook(self._enter),
                           torch.nn.modules.module.register_module_forward_hook(self._exit, with_kwargs=True,
                                                                                always_call=True)]
        except BaseException:
            self.close()
            raise

    def _place_weights(self, placements: dict[str, Placement], loader: Loader | None = None) -> None:
        """Move each storage under the model's parameters and buffers into its weight tier, once.

        Tensors sharing a storage (tied weights, Parameters that are views of one buffer, as
        fused-QKV layouts make) are re-pointed into the one copy, so they stay one storage. A
        storage already in its tier stays where it is: placing again moves only what changed.
        Moves to pm come first, so DRAM never holds a weight leaving it beside one arriving.
        Tensors without storage (meta device, as from_pretrained builds a model) are made in
        their tier by `loader`. Only storages moved out of plain memory go back there at close();
        the others (made here, or in tier memory before the session) stay in tier memory.
        """
        owned = [(tensor, placements[path].allocator_tier("weight"))
                 for path, tensors in owned_tensors(self.model).items() for tensor in tensors]
        for tier, tensors in sorted(_by_storage(owned).values(), key=lambda group: group[0] != tiers.PM):
            if tensors[0].is_meta:
                if loader is None:
                    raise ValueError(f"{type(self.model).__name__}: tensors on the meta device and nothing to "
                                     "load them from (torch_tier.from_pretrained loads a checkpoint into the tiers)")
                _load(self.model, tensors, tier, loader)
                continue
            if _C.tier_of(tensors[0]) < 0:
                self._moved.update((id(tensor), tensor) for tensor in tensors)
            if _C.tier_of(tensors[0]) != tier:
                _repoint(tensors, _storage_in_tier(tensors[0].untyped_storage(), tier))

    def _place_modules(self, placements: dict[str, Placement]) -> None:
        """Every module of the model allocates in its activation tier while it runs; on a
        simulated tier the root and every node the policy lists are metered too, each charged
        for its own code. A module registered under several parents takes its first path's."""
        owned = owned_tensors(self.model)
        if self._meter is not None:
            self._meter.weight_storages = {t.untyped_storage().data_ptr() for ts in owned.values() for t in ts}
        for path, module in self.model.named_modules():
            metered = self._meter is not None and (not path or path in self.policy.nodes)
            self._placed[id(module)] = _Placed(module, placements[path].allocator_tier("activation"), path,
                                               Weights.of(module, owned[path]) if metered else None,
                                               next(module.children(), None) is None)

    def _calls(self) -> list[_Call]:
        """The calling thread's calls in progress (a thread whose ident an exited one had takes
        over its list, and its next hook drops what that one left)."""
        return self._threads.setdefault(threading.get_ident(), [])

    def _enter(self, module: torch.nn.Module, _args: tuple) -> None:
        """Global pre-hook: a module of the model starts; its thread allocates in its tier."""
        placed = self._placed.get(id(module))
        if placed is None or placed.module is not module:
            return
        frame = sys._getframe(1)
        calls = self._calls()
        if calls and not _runs_within(frame, calls[-1].frame):
            _unwind(calls, frame)
        call = _Call(placed, frame, _C.get_tier() if calls else tiers.DRAM, None)
        calls.append(call)
        if len(calls) == 1:
            while self._closing:  # close() waits for the forwards it has seen: this one waits for close()
                calls.pop()
                with self._wake:
                    self._wake.wait_for(lambda: not self._closing)
                calls.append(call)
            if self._closed:  # (its hooks were removed as PyTorch was about to call them)
                calls.pop()
                return  # it runs unplaced, on weights back in plain memory
            if self._planned and module is self.model:
                _C.begin_planned_pass()
        if placed.weights is not None:
            calls[-1] = call._replace(meter=self._meter.enter(fresh=not any(c.meter for c in calls)))
        _C.set_tier(placed.tier)

    def _exit(self, module: torch.nn.Module, args: tuple, *rest: Any) -> None:
        """Global post-hook, also run when the call raised an Exception: restore the tier its
        pre-hook found, and meter the call.

        `rest` is (kwargs, output), or (output,) when PyTorch runs it for a call that raised,
        from its outer frame, the one that called the pre-hook's.
        """
        placed = self._placed.get(id(module))
        calls = self._threads.get(threading.get_ident())
        if placed is None or placed.module is not module or not calls:
            return
        frame = sys._getframe(1)
        if not any(c.frame is frame or c.frame.f_back is frame for c in calls):
            return  # its pre-hook did not place it (the call began before the session or as it closed)
        while calls[-1].frame is not frame and calls[-1].frame.f_back is not frame:
            calls.pop()  # calls within it that ended unseen (an interrupt it caught)
        kwargs = rest[0] if len(rest) == 2 else {}
        call = calls.pop()
        _C.set_tier(call.previous_tier)
        if call.meter is not None:
            parent = next((c.meter for c in reversed(calls) if c.meter is not None), None)
            self._meter.exit(call.meter, parent, placed.path, module, placed.weights, placed.leaf, args, kwargs)

    def _threads_in_forward(self) -> int:
        """Other threads inside a call of the model now (those whose calls ended unseen not counted)."""
        frames = _current_frames()
        me = threading.get_ident()
        busy = 0
        for ident, calls in list(self._threads.items()):
            outermost = calls[:1]
            if ident != me and outermost and _runs_within(frames.get(ident), outermost[0].frame):
                busy += 1
        return busy

    def _wait_for_forwards(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        delay = 1e-4
        while busy := self._threads_in_forward():
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"torch-tier: close() waited {timeout:g} s for {busy} other thread(s) still running a forward "
                    f"of {self.policy.model_name!r}; the session stays open: close() again once they finish")
            time.sleep(delay)
            delay = min(2 * delay, 0.01)

    def _resume_forwards(self) -> None:
        with self._wake:
            self._closing = False
            self._wake.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> dict[str, dict[str, int]]:
        """Per-tier allocator statistics (see torch_tier.stats)."""
        return tiers.stats()

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """Remove the hooks, restore PyTorch's allocator and move the weights that came from plain
        memory back there; weights in tier memory before the session (from_pretrained's) stay there.

        Forwards of the model other threads are running are waited for first, at most `timeout`
        seconds (then RuntimeError, the session still open), so that no kernel reads memory
        freed under it; forwards starting meanwhile wait for close() and then run unplaced.
        """
        global _active
        if self._closed:
            return
        self._closing = True
        try:
            self._wait_for_forwards(timeout)
            self._closed = True
            for handle in self._hooks:
                handle.remove()
            for calls in list(self._threads.values()):
                calls.clear()
            tiers.deactivate()
            _C.set_tier(tiers.DRAM)
            for _, tensors in _by_storage([(t, None) for t in self._moved.values()]).values():
                if _C.tier_of(tensors[0]) >= 0:  # each storage once, back to ordinary memory
                    _repoint(tensors, _storage_in_tier(tensors[0].untyped_storage(), None))
            self._moved.clear()
        finally:
            self._resume_forwards()
        with _active_lock:
            if _active is self:
                _active = None

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<torch_tier.Session {state} model={self.policy.model_name!r} pm={self.pm}>"


def _arena_plans(arena: str, graph: TierGraph | None, policy: Policy) -> "dict[str, Any] | None":
    if arena == "dynamic":
        return None
    if arena != "planned":
        raise ValueError(f"arena: expected 'dynamic' or 'planned', got {arena!r}")
    if graph is None:
        raise ValueError("arena='planned' needs graph=torch_tier.capture(model, inputs)")
    if policy.split:
        raise ValueError("arena='planned' lays out whole tensors, and this policy splits some between the tiers "
                         "(format 2): use arena='dynamic'")
    if graph.fingerprint != policy.fingerprint:
        raise ValueError(f"graph of {graph.model_name!r} ({graph.fingerprint}) is not of the policy's model "
                         f"({policy.fingerprint})")
    return arenas.plan_arenas(graph, policy)


def enable(
    policy: Policy | str | Path,
    model: torch.nn.Module,
    pm: str | None = None,
    on_full: str = "fallback",
    pm_capacity: int | str | None = None,
    fit: str = "first",
    arena: str = "dynamic",
    graph: TierGraph | None = None,
) -> Session:
    """Place `model`'s tensors as `policy` says until the returned session is closed.

    pm: what backs the slow tier ('sim[:PROFILE]', 'memkind:DIR', 'kmem');
        default $TORCH_TIER_PM, else 'sim'.
    on_full: when pm is full, 'fallback' serves from DRAM and counts it,
        'error' raises torch.OutOfMemoryError (what PyTorch's own code catches).
    pm_capacity: bytes (or '4GiB') the pm tier may hold; default the
        backend's own limit ('kmem' takes none: ValueError).
    fit: the sim arena's placement rule (first, best, worst, next).
    arena: "dynamic" allocates each block as it comes; "planned" serves each
        forward's activations from one arena per tier laid out ahead of time
        from `graph` (torch_tier.capture of this model; see torch_tier.arenas).
    """
    if not isinstance(policy, Policy):
        policy = Policy.load(policy)
    policy.check(model)
    spec = tiers.parse_pm(pm, pm_capacity, fit)
    return start(policy, model, spec, on_full, arena_plans=_arena_plans(arena, graph, policy))


def start(policy: Policy, model: torch.nn.Module, pm: tiers.PmSpec, on_full: str = "fallback",
          arena_plans: "dict[str, Any] | None" = None, loader: Loader | None = None) -> Session:
    """Open the process's one session: `model` under `policy` (already checked against it) on `pm`.
    What enable() and from_pretrained() do once they have read their arguments."""
    global _active
    with _active_lock:
        if _active is not None:
            raise RuntimeError(f"torch-tier is already enabled ({_active!r}); close() it before enabling again")
        session = Session(policy, model, pm, on_full, arena_plans=arena_plans, loader=loader)
        _active = session
    return session
