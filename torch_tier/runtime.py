"""enable(): run an unchanged model with its tensors in the tiers a policy names.

Weights are moved once, when the session starts. Activations follow forward
hooks: a module's pre-hook sets the calling thread's tier for new
allocations, its post-hook restores the previous one, so the innermost placed
module on the call stack wins. Threads that never run a placed module's
forward (e.g. intra-op pool threads, which on CPU allocate nothing in the
models measured) allocate in DRAM.

On a simulated tier every node is metered by the emulated tier
(torch_tier.emulated), which spins out the extra time each call's slow-tier
traffic costs, so wall-clock time reflects the placement.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

import torch

from . import _C, arenas, cost_model, devices, tiers
from .emulated import CallRecorder, Meter, Weights
from .graph import TierGraph
from .policy import Placement, Policy
from .tensors import owned_tensors

# Makes the data of a tensor that has none (on the meta device): a CPU tensor of its shape and
# dtype, allocated by the current allocator (the session has set the tier it goes to).
Loader = Callable[[torch.Tensor], torch.Tensor]

_active: "Session | None" = None
_active_lock = threading.RLock()  # close() runs under it when enable() fails
_local = threading.local()


def _push_tier(tier: int, owner: object = None) -> None:
    stack = _local.__dict__.setdefault("stack", [])
    stack.append((owner, _C.get_tier()))
    _C.set_tier(tier)


def _pop_tier(owner: object = None) -> None:
    """Restore the tier saved by `owner`'s push (none if its pre-hook never ran)."""
    stack = _local.__dict__.get("stack")
    if stack and stack[-1][0] is owner:
        _C.set_tier(stack.pop()[1])


def _storage_in_tier(storage: torch.UntypedStorage, tier: int | None) -> torch.UntypedStorage:
    """A copy of `storage` allocated in `tier` (index), or by the current CPU allocator (None)."""
    if tier is not None:
        _push_tier(tier)
    try:
        copy = torch.empty(storage.nbytes(), dtype=torch.uint8).untyped_storage()  # UntypedStorage(n) bypasses it
    finally:
        if tier is not None:
            _pop_tier()
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


def _load(model: torch.nn.Module, tensors: list[torch.Tensor], tier: int, loader: Loader) -> None:
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
        self._hooks: list[Any] = []
        self._closed = False
        placements = policy.resolve(model)
        tiers.activate(pm, on_full)
        try:
            self._place_weights(placements, loader)
            if arena_plans:
                arenas.install(arena_plans)
                self._hooks.append(model.register_forward_pre_hook(lambda _m, _a: _C.begin_planned_pass()))
            if self._meter is not None:
                self._hook_nodes(placements)
            else:
                self._hook_activations(placements)
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
        owned = [(tensor, tiers.TIER_NAMES.index(placements[path].weight))
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

    def _hook_activations(self, placements: dict[str, Placement]) -> None:
        """Hook the root and every module whose activation tier differs from its parent's.

        A module registered under several parents is always hooked, since it
        may run inside a parent of another tier.
        """
        paths_of: dict[int, int] = {}
        for _, module in self.model.named_modules(remove_duplicate=False):
            paths_of[id(module)] = paths_of.get(id(module), 0) + 1
        for path, module in self.model.named_modules():
            parent = path.rpartition(".")[0] if path else None
            tier = placements[path].activation
            if parent is None or paths_of[id(module)] > 1 or placements[parent].activation != tier:
                self._hook(module, tiers.TIER_NAMES.index(tier))

    def _hook_nodes(self, placements: dict[str, Placement]) -> None:
        """Meter the root and every node the policy lists (each charged for its own code)."""
        meter = self._meter
        owned = owned_tensors(self.model)
        meter.weight_storages = {t.untyped_storage().data_ptr() for ts in owned.values() for t in ts}
        for path, module in self.model.named_modules():
            if path and path not in self.policy.nodes:
                continue
            tier = tiers.TIER_NAMES.index(placements[path].activation)
            weights = Weights.of(module, owned[path])

            def pre(m, args, kwargs, tier=tier, leaf=next(module.children(), None) is None):
                meter.enter(m, tier, leaf, args, kwargs)

            def post(m, args, kwargs, _out, path=path, weights=weights):
                meter.exit(path, m, weights, args, kwargs)

            self._hooks.append(module.register_forward_pre_hook(pre, with_kwargs=True))
            self._hooks.append(module.register_forward_hook(post, with_kwargs=True, always_call=True))

    def _hook(self, module: torch.nn.Module, tier: int) -> None:
        self._hooks.append(module.register_forward_pre_hook(lambda m, _a: _push_tier(tier, m)))
        self._hooks.append(module.register_forward_hook(lambda m, _a, _o: _pop_tier(m), always_call=True))

    @property
    def closed(self) -> bool:
        return self._closed

    def stats(self) -> dict[str, dict[str, int]]:
        """Per-tier allocator statistics (see torch_tier.stats)."""
        return tiers.stats()

    def close(self) -> None:
        """Remove the hooks, restore PyTorch's allocator and move the weights that came from plain
        memory back there; weights in tier memory before the session (from_pretrained's) stay there."""
        global _active
        if self._closed:
            return
        self._closed = True
        for handle in self._hooks:
            handle.remove()
        tiers.deactivate()
        _C.set_tier(tiers.DRAM)
        for _, tensors in _by_storage([(t, None) for t in self._moved.values()]).values():
            if _C.tier_of(tensors[0]) >= 0:  # each storage once, back to ordinary memory
                _repoint(tensors, _storage_in_tier(tensors[0].untyped_storage(), None))
        self._moved.clear()
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
        backend's own limit.
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
