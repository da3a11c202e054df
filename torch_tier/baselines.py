"""Baseline placements under a DRAM budget, to compare learned policies against.

Each baseline takes a captured TierGraph and a DRAM budget (a ``BudgetSpec``:
bytes, a byte string such as '512MiB', a fraction such as 0.25, or a share of
the all-DRAM footprint such as '25%'; ``dram_budget`` is the one place that
reads a spec into bytes) and returns a Policy over the graph's nodes whose
DRAM footprint (``graph.footprint``) is within the budget:

- ``all_dram`` / ``all_pm``: everything in one tier (all-DRAM only when it fits);
- ``first_touch``: what the OS does by default: tensors take DRAM in the order
  they are first touched (weights as the model is loaded, then activations in
  trace order) while it has room, and PM after;
- ``interleave``: the OS's "PM + DRAM" interleave mode: each tensor on either
  tier by a seeded coin flip, falling back to PM when DRAM is full;
- ``weighted_interleave`` / ``page_interleave``: Linux's page interleave
  across the two tiers (MPOL_WEIGHTED_INTERLEAVE in the tiers' bandwidth
  ratio, as ``numactl -w`` with bandwidth weights; MPOL_INTERLEAVE 1:1):
  every tensor split, in first-touch order while DRAM has room (split
  placements, policy format 2);
- ``memory_mode``: Optane memory mode (2LM), DRAM as a hardware cache in front
  of PM. It is not a placement: the policy is all-PM, and the latency is a
  model (``memory_mode_latency``), never a measurement;
- ``greedy``: hot/cold: the slow-tier cost each tensor saves per byte of DRAM,
  highest first, while it fits;
- ``optimal``: the exact best placement under the cost model (the device's,
  or given cost terms), as a MILP (HiGHS through scipy.optimize.milp); with
  ``split=True`` the best split placement, a linear program.
- ``greedy(split=True)``: greedy whose last item to reach DRAM takes the share
  that fits (the fractional knapsack).

A placement decision is an *item* (torch_tier.placement): one node's weights
or one node's activations (everything its own code allocates). Under the cost model (see
torch_tier.cost_model) an item's extra can hide behind its node's computation
alone but not beside another item, so a placement's cost is not the sum of
its items' costs alone in PM (``item_costs``), which is all greedy knows;
the optimum models the overlap exactly.
"""

from __future__ import annotations

import math
import random
from typing import Callable, Iterable

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, OptimizeResult, milp

from .cost_model import OVERLAP, GraphCosts, cost_model, graph_costs, predict
from .graph import TierGraph
from .placement import Item, PlacementSpace, from_vector, items, live_activations, of_items, to_vector
from .policy import Policy
from .tiers import DRAM, PM, parse_bytes

BudgetSpec = int | float | str  # bytes, '512MiB', a fraction (0.25) or a share of the all-DRAM footprint ('25%')
DEFAULT_DEVICE = "optane-100"
MILP_TIME_LIMIT = 60.0  # seconds
# Relative gap on the slow-tier extra at which HiGHS stops: proving the last
# 1e-6 takes HiGHS minutes on ResNet-50's near-tied items, and 1e-5 of the
# extra is tens of nanoseconds per forward.
MILP_GAP = 1e-5
WHOLE = 1e-7  # a split share within this of 0 or 1 is that whole tier (the LP's tolerance, not a placement)


class BudgetError(ValueError):
    """A DRAM budget that cannot be read, or that no placement fits."""


def parse_budget(budget: BudgetSpec) -> int | float:
    """Read a DRAM budget: bytes (an int, or a string such as '512MiB') as an int,
    or a share of the all-DRAM footprint (a float such as 0.25, or '25%') as a float.

    Raises BudgetError naming the value if it cannot be read. Whether it is
    large enough is for ``dram_budget`` to say, which knows the graph.
    """
    try:
        if isinstance(budget, int) and not isinstance(budget, bool):
            return budget
        if isinstance(budget, str) and budget.strip().endswith("%"):
            share = float(budget.strip()[:-1]) / 100
        elif isinstance(budget, float):
            share = budget
        else:
            return parse_bytes(budget, "DRAM budget")
        if not math.isfinite(share):
            raise ValueError
        return share
    except ValueError:
        raise BudgetError(f"DRAM budget {budget!r}: expected bytes (e.g. 67108864, '64MiB'), a fraction "
                          f"(0.25) or a percentage of the all-DRAM footprint ('25%')") from None


def dram_budget(graph: TierGraph, budget: BudgetSpec) -> int:
    """`budget` in bytes for `graph`, checked against the least DRAM any placement needs
    (BudgetError if below it): the one reading of a spec into bytes."""
    limit = parse_budget(budget)
    if isinstance(limit, float):
        limit = int(limit * graph.footprint(graph.policy())["dram"])
    least = graph.footprint(_policy(graph, set(items(graph))))["dram"]
    if limit < least:
        raise BudgetError(f"DRAM budget {budget!r} ({limit} bytes) is below the {least} bytes "
                          f"that every placement of {graph.model_name} needs in DRAM")
    return limit


def _policy(graph: TierGraph, pm: Iterable[Item], **metadata: object) -> Policy:
    """The policy putting the items in `pm` on the slow tier; items of no bytes stay in DRAM."""
    return PlacementSpace(graph).policy(of_items(graph, pm), **metadata)


def _metadata(found_by: str, limit: int, device: str, **extra: object) -> dict[str, object]:
    return {"found_by": found_by, "dram_budget": limit, "device": device, **extra}


def item_costs(graph: TierGraph, device: str = DEFAULT_DEVICE) -> dict[Item, float]:
    """Extra seconds per forward that each item costs on `device` when it alone is in PM.

    A lower bound of what it adds to a placement: beside other PM items of its
    node, less of it may hide behind the node's computation.
    """
    costs = graph_costs(graph, device)
    terms = costs.terms()  # columns in the order of items(graph)
    alone = (terms - np.minimum(OVERLAP * terms, costs.compute[:, None])).sum(axis=0)
    return dict(zip(items(graph), alone.tolist()))


def _fill(graph: TierGraph, order: Iterable[Item], limit: int) -> set[Item]:
    """Start with everything in PM and move the items of `order` to DRAM, in turn, each if it still fits."""
    pm = set(items(graph))
    for item in order:
        pm.discard(item)
        if graph.footprint(_policy(graph, pm))["dram"] > limit:
            pm.add(item)
    return pm


def _dram_rows(graph: TierGraph) -> np.ndarray:
    """(peaks, 2 * nodes): the bytes each decision holds in DRAM at each peak of the live activations
    when it is wholly there, so that rows @ (DRAM shares, decision-vector order) is each peak's DRAM
    and its max is the DRAM footprint of any placement, whole or split (placement.live_activations)."""
    live = live_activations(graph)
    n = len(graph.nodes)
    rows = np.zeros((len(live), 2 * n))
    rows[:, :n] = [node.weight_bytes for node in graph.nodes]
    rows[:, n:] = live
    return rows


def _fill_shares(graph: TierGraph, order: Iterable[Item], limit: int, share: float = 1.0) -> np.ndarray:
    """Start with everything in PM and give the items of `order`, in turn, `share` of their bytes in
    DRAM, or what still fits: the placement array (PM shares) a fill with splits ends with."""
    rows = _dram_rows(graph)
    index = {item: k for k, item in enumerate(items(graph))}
    dram = np.zeros(rows.shape[1])
    for item in order:
        k = index[item]
        held, room = rows[:, k], limit - rows @ dram
        fits = np.min(room[held > 0] / held[held > 0], initial=share)
        dram[k] = max(0.0, min(share, fits))
    pm = np.where(dram < WHOLE, PM, np.where(dram > 1 - WHOLE, DRAM, 1.0 - dram))
    return PlacementSpace(graph).clean(from_vector(pm.astype(float)))


def _touch_order(graph: TierGraph) -> list[Item]:
    """Items in the order the OS first touches their memory: weights as the model is
    loaded (node order), then activations by their node's first allocation in the trace."""
    first_alloc: dict[int, int] = {}
    for buffer in graph.buffers:
        first_alloc.setdefault(buffer.node, buffer.alloc)
    nodes = sorted(range(len(graph.nodes)), key=lambda i: first_alloc.get(i, graph.events))
    return [(i, "weight") for i in range(len(graph.nodes))] + [(i, "activation") for i in nodes]


def all_dram(graph: TierGraph, budget: BudgetSpec | None = None, device: str = DEFAULT_DEVICE) -> Policy:
    """Everything in DRAM: the reference every slowdown is measured against.

    With a budget it must fit (BudgetError otherwise); without one it is unconstrained.
    """
    policy = _policy(graph, set())
    need = graph.footprint(policy)["dram"]
    limit = need if budget is None else dram_budget(graph, budget)
    if need > limit:
        raise BudgetError(f"all-DRAM needs {need} bytes of DRAM, over the budget {budget!r} ({limit} bytes)")
    policy.metadata = _metadata("all-dram", limit, device)
    return policy


def all_pm(graph: TierGraph, budget: BudgetSpec, device: str = DEFAULT_DEVICE) -> Policy:
    """Everything in PM."""
    limit = dram_budget(graph, budget)
    return _policy(graph, set(items(graph)), **_metadata("all-pm", limit, device))


def first_touch(graph: TierGraph, budget: BudgetSpec, device: str = DEFAULT_DEVICE) -> Policy:
    """The OS default: DRAM in first-touch order while it has room, then PM."""
    limit = dram_budget(graph, budget)
    return _policy(graph, _fill(graph, _touch_order(graph), limit), **_metadata("first-touch", limit, device))


def interleave(graph: TierGraph, budget: BudgetSpec, device: str = DEFAULT_DEVICE, seed: int = 0) -> Policy:
    """OS interleave ("PM + DRAM"): each tensor to DRAM or PM by a coin flip (seeded);
    a tensor drawn for DRAM falls back to PM when DRAM is full at its first touch."""
    limit = dram_budget(graph, budget)
    rng = random.Random(seed)
    drawn = [item for item in _touch_order(graph) if rng.random() < 0.5]
    return _policy(graph, _fill(graph, drawn, limit), **_metadata("interleave", limit, device, seed=seed))


def weighted_interleave(graph: TierGraph, budget: BudgetSpec, device: str = DEFAULT_DEVICE,
                        dram_share: float | None = None) -> Policy:
    """Linux's weighted interleave (MPOL_WEIGHTED_INTERLEAVE, kernel 6.9+): every tensor's pages
    spread over DRAM and the slow tier, `dram_share` of them in DRAM (default the DRAM's share of
    the two tiers' read bandwidth, as bandwidth-derived weights give), in first-touch order while
    DRAM has room; the tensor that fills DRAM takes what is left, later ones go to the slow tier.
    The kernel's integer weights approximate the ratio; the exact ratio is used here."""
    limit = dram_budget(graph, budget)
    if dram_share is None:
        model = cost_model(device)
        dram_share = model.dram.read_bw_gbs / (model.dram.read_bw_gbs + model.pm.read_bw_gbs)
    placement = _fill_shares(graph, _touch_order(graph), limit, dram_share)
    return PlacementSpace(graph).policy(placement, **_metadata("weighted-interleave", limit, device,
                                                               dram_share=dram_share))


def page_interleave(graph: TierGraph, budget: BudgetSpec, device: str = DEFAULT_DEVICE) -> Policy:
    """Linux's plain interleave (MPOL_INTERLEAVE, numactl -i): pages alternate between the tiers
    1:1, every tensor half in DRAM while DRAM has room (weighted interleave with equal weights)."""
    policy = weighted_interleave(graph, budget, device, dram_share=0.5)
    policy.metadata["found_by"] = "page-interleave"
    return policy


def memory_mode(graph: TierGraph, budget: BudgetSpec, device: str = DEFAULT_DEVICE) -> Policy:
    """Optane memory mode (2LM): every tensor in PM behind a DRAM cache of the budget's size.

    A hardware cache is no placement, so this is the all-PM policy labelled as
    memory mode; its latency comes from ``memory_mode_latency`` (a model).
    """
    limit = dram_budget(graph, budget)
    metadata = _metadata("memory-mode (model)", limit, device, hit_ratio=memory_mode_hit_ratio(graph, limit))
    return _policy(graph, set(items(graph)), **metadata)


def memory_mode_hit_ratio(graph: TierGraph, limit: int) -> float:
    """The modelled DRAM-cache hit ratio: the share of the working set (the all-DRAM
    footprint: every byte one forward holds) that a cache of `limit` bytes holds."""
    working_set = graph.footprint(graph.policy())["dram"]
    return min(1.0, limit / working_set) if working_set else 1.0


def memory_mode_latency(graph: TierGraph, budget: BudgetSpec, device: str = DEFAULT_DEVICE) -> float:
    """Modelled seconds per forward in memory mode: the all-DRAM time plus the
    all-PM extra of the cost model for the missed share of the traffic.

    Idealised and optimistic: misses are spread evenly over all traffic, and
    neither conflict misses of the direct-mapped cache nor its fill and
    write-back traffic are charged.
    """
    limit = dram_budget(graph, budget)
    return memory_mode_between(graph, limit, graph.base_time, predict(graph, all_pm(graph, limit, device), device))


def memory_mode_between(graph: TierGraph, budget: BudgetSpec, all_dram: float, all_pm: float) -> float:
    """Memory mode's seconds from the all-DRAM and all-PM ones (predicted or measured):
    the missed share of the traffic pays the slow tier's extra."""
    miss = 1.0 - memory_mode_hit_ratio(graph, dram_budget(graph, budget))
    return all_dram + miss * (all_pm - all_dram)


def greedy(graph: TierGraph, budget: BudgetSpec, device: str = DEFAULT_DEVICE, split: bool = False) -> Policy:
    """Hot/cold: items by slow-tier cost saved per byte of DRAM, hottest first, each into DRAM if it fits;
    with `split`, an item that does not fit whole takes the share of DRAM that is left (the fractional
    knapsack: it fills the budget, but knows nothing of two tiers serving one stream at once).

    An item's bytes are what it alone occupies in PM (weights, or the peak of
    its node's live activations).
    """
    limit = dram_budget(graph, budget)
    costs = item_costs(graph, device)

    def heat(item: Item) -> float:
        size = graph.footprint(_policy(graph, {item}))["pm"]
        return costs[item] / size if size else float("inf")

    order = sorted(items(graph), key=heat, reverse=True)
    if split:
        return PlacementSpace(graph).policy(_fill_shares(graph, order, limit),
                                            **_metadata("greedy (split)", limit, device))
    return _policy(graph, _fill(graph, order, limit), **_metadata("greedy", limit, device))


def optimal(graph: TierGraph, budget: BudgetSpec, device: str = DEFAULT_DEVICE, costs: GraphCosts | None = None,
            time_limit: float = MILP_TIME_LIMIT, split: bool = False) -> Policy:
    """The placement of least predicted latency within the budget, as a MILP: on `device`'s
    cost model, or on the cost terms `costs` when given (e.g. terms fitted to measurements).

    Binary x_k = 1 puts item k in PM; continuous e_i is node i's extra. With
    L_i = sum_k a_ik x_k node i's slow-tier extra before overlap and c_i its
    computing time, the cost model's e_i = max((1 - OVERLAP) L_i, L_i - c_i)
    is convex, so minimising sum_i e_i subject to e_i >= (1 - OVERLAP) L_i
    and e_i >= L_i - c_i is exact. Subject also to, at every peak of the live
    activation set (placement.live_activations): DRAM weights + DRAM-resident
    live activations <= budget. Solved by HiGHS to a relative gap of MILP_GAP
    on the extra; metadata records whether that was proven within
    `time_limit`, and the gap. Cost terms with parallel tiers
    (GraphCosts.dram_share) make L_i the largest of two affine pieces
    (``_solve``).

    With `split`, the best split placement, a linear program: ``_optimal_split``
    when tiers add, ``_solve`` over shares when they serve at once.
    """
    limit = dram_budget(graph, budget)
    n = len(graph.nodes)
    if costs is not None and len(costs.weight) != n:
        raise ValueError(f"optimal: cost terms of {len(costs.weight)} nodes for a graph of {n}")
    rows = _dram_rows(graph)  # bytes each item holds in DRAM at each peak, if it is there
    given = {} if costs is None else {"cost_terms": "given"}  # metadata: not the device's terms
    costs = graph_costs(graph, device) if costs is None else costs
    if split and costs.dram_share is None:
        return _optimal_split(graph, limit, device, costs, rows, time_limit, given)
    space = PlacementSpace(graph)
    if split:
        pm, result = _solve(costs, rows, limit, space, integral=False, time_limit=time_limit)
        return _split_policy(graph, space, pm, limit, device, result.status == 0, "HiGHS LP (scipy.optimize.milp)",
                             given)
    excess = 0  # bytes the rounded solution went over: tighten by that much and solve again
    for _ in range(3):
        pm, result = _solve(costs, rows, limit - excess, space, integral=True, time_limit=time_limit)
        placement = from_vector((pm > 0.5).astype(np.int8))
        policy = space.policy(placement, **_metadata("optimal", limit, device, proven_optimal=result.status == 0,
                                                     mip_gap=result.mip_gap, solver="HiGHS (scipy.optimize.milp)",
                                                     **given))
        over = graph.footprint(policy)["dram"] - limit
        if over <= 0:
            return policy
        excess += over
    raise RuntimeError(f"optimal: the solver's placements stay {over} bytes over the budget of {limit} bytes")


def _solve(costs: GraphCosts, rows: np.ndarray, limit: int, space: PlacementSpace, integral: bool,
           time_limit: float) -> tuple[np.ndarray, OptimizeResult]:
    """The decision vector of least modelled latency with at most `limit` bytes of DRAM at every peak
    (`rows`: bytes per peak and decision), and HiGHS's result: x_k in {0, 1} if `integral`, else in [0, 1].

    L_i = max_p (A_p x + b_p)_i is node i's extra before overlap (GraphCosts.pieces); with one piece it
    is substituted, with more a variable m_i >= every piece stands for it. e_i >= (1 - OVERLAP) L_i and
    e_i >= L_i - c_i; the objective sum_i e_i is convex and increasing in each L_i, so the optimum is exact.
    """
    pieces = costs.pieces()
    n, decisions = len(costs.weight), 2 * len(costs.weight)
    unit = max(max(np.abs(a).max(initial=0.0) for a, _ in pieces), 1e-12)  # seconds -> shares of the largest term
    eye = sparse.identity(n, format="csr")
    if len(pieces) == 1:
        (a, b), auxiliary = pieces[0], 0
        in_x, in_m, offset = sparse.csr_matrix(a / unit), sparse.csr_matrix((n, 0)), b / unit
        constraints = []
    else:
        auxiliary = n
        in_x, in_m, offset = sparse.csr_matrix((n, decisions)), eye, np.zeros(n)
        constraints = [LinearConstraint(sparse.hstack([sparse.csr_matrix(-a / unit), eye, sparse.csr_matrix((n, n))]),
                                        b / unit, np.inf) for a, b in pieces]  # m_i >= every piece
    constraints += [
        LinearConstraint(sparse.hstack([-(1 - OVERLAP) * in_x, -(1 - OVERLAP) * in_m, eye]),
                         (1 - OVERLAP) * offset, np.inf),  # e_i >= (1 - OVERLAP) L_i
        LinearConstraint(sparse.hstack([-in_x, -in_m, eye]), offset - costs.compute / unit, np.inf),  # e_i >= L_i - c_i
    ]
    scale = max(rows.sum(axis=1).max(), 1.0)  # bytes -> shares of the largest total
    need = (rows.sum(axis=1) - limit) / scale  # bytes that must go to PM at each peak
    constraints.append(LinearConstraint(sparse.hstack([sparse.csr_matrix(rows / scale),
                                                       sparse.csr_matrix((len(rows), auxiliary + n))]), need, np.inf))
    upper = np.concatenate([to_vector(space.mask).astype(float), np.full(auxiliary + n, np.inf)])
    lower = np.concatenate([np.zeros(decisions), np.full(auxiliary + n, -np.inf)])
    objective = np.concatenate([np.zeros(decisions + auxiliary), np.ones(n)])
    integrality = np.concatenate([np.full(decisions, 1 if integral else 0), np.zeros(auxiliary + n)])
    options = {"time_limit": time_limit} | ({"mip_rel_gap": MILP_GAP} if integral else {})
    result = milp(objective, integrality=integrality, bounds=Bounds(lower, upper), constraints=constraints,
                  options=options)
    if result.x is None:
        raise RuntimeError(f"optimal: HiGHS found no placement within {limit} bytes: {result.message}")
    return np.clip(result.x[:decisions], 0.0, 1.0), result


def _split_policy(graph: TierGraph, space: PlacementSpace, pm: np.ndarray, limit: int, device: str, proven: bool,
                  solver: str, given: dict[str, str]) -> Policy:
    """The split placement of decision vector `pm` (shares within WHOLE of a tier made whole), checked
    against the budget."""
    pm = np.where(pm < WHOLE, 0.0, np.where(pm > 1 - WHOLE, 1.0, pm))
    policy = space.policy(from_vector(pm), **_metadata("optimal (split)", limit, device, proven_optimal=proven,
                                                       solver=solver, **given))
    over = graph.footprint(policy)["dram"] - limit
    if over > 0:
        raise RuntimeError(f"optimal (split): the LP's placement is {over} bytes over the budget of {limit} bytes")
    return policy


def _optimal_split(graph: TierGraph, limit: int, device: str, costs: GraphCosts, rows: np.ndarray,
                   time_limit: float, given: dict[str, str]) -> Policy:
    """The best split placement within `limit` bytes of DRAM, as a linear program.

    Continuous x_k in [0, 1] is decision k's share of bytes in PM (heads of no
    bytes fixed at 0). Each stream j of the model (GraphCosts.entries: node i_j,
    decision k_j, whole extra E_j, DRAM seconds D_j) adds z_j to its node's L,
    z_j >= (E_j + D_j) x_k - D_j and z_j >= -D_j x_k (the slower of its parts,
    cost_model.split_extra); e_i >= (1 - OVERLAP) L_i, e_i >= L_i - c_i as in
    the whole-tensor MILP; at every peak, DRAM shares of the bytes <= budget.
    Every piece is linear and the objective sum_i e_i is convex, so the LP's
    optimum is the model's exact optimum over all shares.
    """
    n = len(graph.nodes)
    node, decision, extra, dram = costs.entries()
    m = len(node)
    unit = max(extra.max(initial=0.0), dram.max(initial=0.0), 1e-12)  # seconds -> shares of the largest term
    extra, dram = extra / unit, dram / unit
    entry = np.arange(m)
    x_of = sparse.csr_matrix((np.ones(m), (entry, decision)), shape=(m, 2 * n))
    z = sparse.identity(m, format="csr")
    sums = sparse.csr_matrix((np.ones(m), (node, entry)), shape=(n, m))  # L_i = sum of its z_j
    eye_n = sparse.identity(n, format="csr")
    scale = max(rows.sum(axis=1).max(), 1.0)  # bytes -> shares of the largest total
    need = (rows.sum(axis=1) - limit) / scale  # bytes that must go to PM at each peak
    constraints = [
        LinearConstraint(sparse.hstack([-sparse.diags(extra + dram) @ x_of, z, sparse.csr_matrix((m, n))]), -dram, np.inf),
        LinearConstraint(sparse.hstack([sparse.diags(dram) @ x_of, z, sparse.csr_matrix((m, n))]), 0, np.inf),
        LinearConstraint(sparse.hstack([sparse.csr_matrix((n, 2 * n)), -(1 - OVERLAP) * sums, eye_n]), 0, np.inf),
        LinearConstraint(sparse.hstack([sparse.csr_matrix((n, 2 * n)), -sums, eye_n]), -costs.compute / unit, np.inf),
        LinearConstraint(sparse.hstack([sparse.csr_matrix(rows / scale), sparse.csr_matrix((len(rows), m + n))]),
                         need, np.inf),
    ]
    space = PlacementSpace(graph)
    upper = np.concatenate([to_vector(space.mask).astype(float), np.full(m + n, np.inf)])
    lower = np.concatenate([np.zeros(2 * n), np.full(m + n, -np.inf)])
    objective = np.concatenate([np.zeros(2 * n + m), np.ones(n)])
    result = milp(objective, bounds=Bounds(lower, upper), constraints=constraints,
                  options={"time_limit": time_limit})
    if result.x is None:
        raise RuntimeError(f"optimal (split): HiGHS found no placement within {limit} bytes: {result.message}")
    return _split_policy(graph, space, np.clip(result.x[:2 * n], 0.0, 1.0), limit, device, result.status == 0,
                         "HiGHS LP (scipy.optimize.milp)", given)


BASELINES: dict[str, Callable[..., Policy]] = {
    "all-pm": all_pm,
    "first-touch": first_touch,
    "interleave": interleave,
    "memory-mode": memory_mode,
    "greedy": greedy,
    "optimal": optimal,
}
"""Every budgeted baseline by name, each called as f(graph, budget, device)."""

SPLIT_BASELINES: dict[str, Callable[..., Policy]] = {
    "weighted-interleave": weighted_interleave,
    "page-interleave": page_interleave,
    "greedy (split)": lambda graph, budget, device=DEFAULT_DEVICE: greedy(graph, budget, device, split=True),
    "optimal (split)": lambda graph, budget, device=DEFAULT_DEVICE: optimal(graph, budget, device, split=True),
}
"""The baselines that split tensors between the tiers (policy format 2), called as BASELINES'."""
