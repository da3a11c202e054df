"""Calibration: fit the cost model to timed runs (system identification).

The cost model (torch_tier.cost_model) prices each placement decision from a
device profile: a per-byte extra for sequential reads, one for writes, and a
per-access extra for random reads (embedding rows). A real slow tier differs
from any datasheet, and from the model's structure (caches, prefetchers,
write combining, contention). `fit` takes placements that were timed and
finds the model that explains them best:

- three device scale factors, on the per-byte read extra, the per-byte
  write extra and the random-access latency extra of the assumed profile
  (read back as a device profile: bandwidths and a random latency, in the
  schema of data/devices.json), fitted first, alone: the profile is the
  best that one device's figures can explain, whatever else the data holds;
- then, with those fixed, a multiplicative correction per decision (each
  node's weights; each node's activations: its writes and every read of
  them), log-normal around 1 (maximum a posteriori: ridge on the log
  factors), so a few samples leave the nodes alone and many samples let a
  node deviate where the data says it does (a cache serving its small
  tensor, contention in its call);
- the all-DRAM time (the measured one includes what timing adds);
- the tiers' structure: by default a node's streams take the time of both
  tiers added; with `tiers="parallel"` (or chosen by the data, the default:
  the device-only fit of each, the parallel one charged one parameter more
  by the Bayesian information criterion with the noise's scale unknown, so
  that timings a model misses by more than their spread say do not reward
  flexibility alone) the tiers serve them at once and the job gets a fitted
  share of this host's DRAM bandwidth (torch_tier.cost_model, parallel
  tiers): co-runners loading DRAM, which no device figure can express,
  since it makes the slow tier relieve DRAM.

The fitted model is again a GraphCosts (every term a positive multiple of
the assumed one; the overlap with computation unchanged), so it stays convex
and piecewise linear in the placement (with parallel tiers too), and
baselines.optimal(graph, budget, costs=calibration.costs) still finds its
exact optimum.

`calibrate_device` times probe placements of a model on a slow tier, fits,
and reports the error on held-out placements before (the assumed profile)
and after (the fitted model); `torch-tier calibrate` is its command. On
`pm="sim:PROFILE"` with a built-in profile the emulated tier spins out the
cost model's own extra, so the "measured" runs are that profile's cost model
plus timing noise: calibrating against it recovers that profile, which is
what the tests check. Against a device model (torch_tier.device_models, or
torch_tier.register_device) or real slow memory the model is wrong in
structure too, and the per-node corrections absorb what the data shows.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from . import baselines, clocks, devices
from .cost_model import OVERLAP, CostModel, GraphCosts, cost_model, graph_costs
from .graph import Stream, TierGraph
from .placement import PlacementSpace
from .tiers import DRAM, PM

SCALES = ("read", "write", "random")  # the device scale factors, in parameter order
NOISE = 0.02  # relative standard deviation of one timed latency, when the caller does not say
NODE_SPREAD = 0.3  # prior standard deviation of a decision's log correction (about x/÷ 1.35)
NODE_SPREADS = (0.0, 0.1, 0.3, 1.0)  # what choose_node_spread picks from (0: the device alone)
DEVICE_SPREAD = 3.0  # prior standard deviation of a device scale's log: the datasheet is a weak guess
BASE_SPREAD = 0.3  # prior standard deviation of the all-DRAM time, relative to the capture's (timing adds to it)
SHARE_SPREAD = 3.0  # prior standard deviation of the DRAM share's log, around 1 (unloaded)
SHARE_STARTS = (1.0, 0.5, 0.25)  # the DRAM share's starting points (the fit's max() has kinks: the best of a few)
TIERS = ("serial", "parallel")
CITATION = "calibration"

Progress = Callable[[str], None]

# ---------------------------------------------------------------------------------------------------------------
# The fit


@dataclass(frozen=True)
class Calibration:
    """A cost model fitted to timed placements of one graph.

    `costs` is the fitted model; `assumed` the model of the profile it started
    from. `scales` multiply the assumed profile's per-byte read extra, per-byte
    write extra and per-access random latency extra (the device);
    `weight_factors` and `activation_factors` are the per-node corrections on
    top (1 where the data did not move them). `profile` is the fitted device
    as a profile entry of data/devices.json (without the per-node corrections,
    which belong to this graph, not to the device).
    """

    costs: GraphCosts
    assumed: GraphCosts
    device: str
    scales: dict[str, float]
    weight_factors: np.ndarray
    activation_factors: np.ndarray
    profile: dict[str, Any]
    samples: int
    train_error: dict[str, float]
    node_spread: float  # the per-node corrections' prior spread; 0 when they were not fitted
    dram_share: float | None = None  # with parallel tiers, the job's fitted share of DRAM bandwidth; None: serial

    def predict(self, placement: np.ndarray) -> float:
        """Seconds per forward under `placement` ((nodes, 2) 0/1 = DRAM/PM), by the fitted model."""
        return self.costs.latency(np.asarray(placement))

    def errors(self, placements: np.ndarray, seconds: np.ndarray) -> dict[str, float]:
        """How far the fitted model is from `seconds`, timed under `placements` (see `relative_errors`)."""
        return relative_errors(self.costs, placements, seconds)

    def profile_file(self, name: str = "calibrated") -> dict[str, Any]:
        """The fitted device as a profile file (data/devices.json's schema, one profile): `sim:PATH.json` runs it."""
        return {
            "reference": devices.reference().name,
            "citations": {CITATION: "torch_tier.calibrate: fitted to timed runs on the host that ran them"},
            "profiles": {name: self.profile},
        }

    def save_profile(self, path: str | Path, name: str | None = None) -> None:
        """Write `profile_file(name)` to `path` (name: the file's stem)."""
        path = Path(path)
        path.write_text(json.dumps(self.profile_file(name or path.stem), indent=2) + "\n")


def relative_errors(costs: GraphCosts, placements: np.ndarray, seconds: np.ndarray) -> dict[str, float]:
    """Mean and largest |predicted / measured - 1| over timed placements, and the mean signed error (bias)."""
    predicted = np.array([costs.latency(p) for p in np.asarray(placements)])
    relative = predicted / np.asarray(seconds, dtype=float) - 1
    return {"mean": float(np.abs(relative).mean()), "max": float(np.abs(relative).max()),
            "bias": float(relative.mean())}


def fit(graph: TierGraph, placements: np.ndarray, seconds: np.ndarray, device: str = baselines.DEFAULT_DEVICE,
        noise: float | np.ndarray = NOISE, node_spread: float = NODE_SPREAD, device_spread: float = DEVICE_SPREAD,
        per_node: bool = True, assumed: GraphCosts | None = None, tiers: str | None = None) -> Calibration:
    """Fit the cost model of `graph` to `seconds`, the measured latencies of `placements` ((k, nodes, 2) 0/1).

    Starts from `device`'s profile (its GraphCosts, or `assumed` when given,
    so a caller fitting repeatedly computes it once). Each timing's relative
    error is taken as ~ N(0, noise) (a float, or one per sample). First the
    device alone: the maximum a posteriori all-DRAM time and three device
    scales (each scale's log ~ N(0, device_spread): the datasheet is a weak
    guess). Then, if `per_node`, with the scales fixed: the all-DRAM time and
    each decision's correction (its log ~ N(0, node_spread)), which moves
    only where the samples say more about it than the prior does. Splitting
    the two keeps the per-node corrections from trading against the device
    figures (which the noise would otherwise decide). `tiers`: "serial" (the
    default cost model), "parallel" (tiers serving at once, a DRAM share
    fitted with the device scales), or None: the device-only fit of each,
    and the parallel one if it explains the samples better by more than its
    extra parameter's Bayesian information penalty (n log RSS + k log n).
    Levenberg-Marquardt on the exact Jacobian, each step solved in the space
    of the samples (Woodbury): a 300-node graph with 50 samples takes under
    0.1 s a fit, four fits to choose the structure.
    """
    placements = np.asarray(placements, dtype=float).reshape(-1, len(graph.nodes), 2)
    seconds = np.asarray(seconds, dtype=float)
    if len(placements) != len(seconds) or len(seconds) == 0:
        raise ValueError(f"fit: {len(placements)} placements and {len(seconds)} latencies; need as many, >= 1")
    if not np.all(seconds > 0):
        raise ValueError("fit: every latency must be > 0 seconds")
    if tiers is not None and tiers not in TIERS:
        raise ValueError(f"fit: tiers {tiers!r}; expected one of {', '.join(TIERS)} or None (chosen by the data)")
    terms = device_terms(graph, device, assumed)
    sigma = np.broadcast_to(np.asarray(noise, dtype=float), seconds.shape) * seconds
    fitted, solution = _device_fit(terms, placements, seconds, sigma, device_spread, tiers)
    scales, weight_factors, activation_factors, base, share = fitted.unpack(solution)
    per_node = per_node and node_spread > 0
    if per_node:
        nodes = _Problem(terms, placements, seconds, sigma, scales, True, node_spread, device_spread,
                         fitted.parallel, share)
        scales, weight_factors, activation_factors, base, share = nodes.unpack(
            _maximum_a_posteriori(nodes, nodes.start()))
    costs = terms.costs(scales, weight_factors, activation_factors, base, share)
    return Calibration(costs=costs, assumed=terms.prior, device=device, scales=dict(zip(SCALES, scales.tolist())),
                       weight_factors=weight_factors, activation_factors=activation_factors,
                       profile=fitted_profile(device, scales, len(seconds), graph.model_name, terms.random, share),
                       samples=len(seconds), train_error=relative_errors(costs, placements, seconds),
                       node_spread=node_spread if per_node else 0.0, dram_share=share)


def _device_fit(terms: DeviceTerms, placements: np.ndarray, seconds: np.ndarray, sigma: np.ndarray,
                device_spread: float, tiers: str | None) -> tuple[_Problem, np.ndarray]:
    """The device-only fit (all-DRAM time, device scales and, with parallel tiers, the DRAM share) of
    the structure `tiers`, or of the one the samples favour (None: see fit), and its solution."""
    can_parallel = terms.prior.node_dram is not None and terms.prior.weight_dram is not None
    structures = [tiers == "parallel"] if tiers else [False] + ([True] if can_parallel else [])
    best: dict[bool, tuple[float, _Problem, np.ndarray]] = {}  # per structure: (objective, problem, solution)
    for parallel in structures:
        for share in SHARE_STARTS if parallel else (None,):
            problem = _Problem(terms, placements, seconds, sigma, None, False, 0.0, device_spread, parallel)
            solution = _maximum_a_posteriori(problem, problem.start(share))
            cost = problem.objective(solution)[0]
            if parallel not in best or cost < best[parallel][0]:
                best[parallel] = cost, problem, solution
    n = len(seconds)

    def information(fitted: tuple[float, _Problem, np.ndarray]) -> float:
        """BIC with the noise's scale unknown (the runs' spreads are often not it)."""
        _, problem, solution = fitted
        residual = problem.objective(solution)[1]
        return n * np.log(max(float(residual @ residual), 1e-300)) + (np.log(n) if problem.parallel else 0.0)

    _, problem, solution = min(best.values(), key=information)
    return problem, solution


def choose_node_spread(graph: TierGraph, placements: np.ndarray, seconds: np.ndarray,
                       device: str = baselines.DEFAULT_DEVICE, noise: float | np.ndarray = NOISE,
                       spreads: Sequence[float] = NODE_SPREADS, folds: int = 12, seed: int = 0) -> float:
    """The prior spread of the per-node corrections that the samples support, by cross-validation.

    Each spread (0: the device scales alone) is fitted on all but one fold
    of the samples and predicts the left-out fold; the result is the smallest
    spread whose mean squared relative error is within one standard error of
    the least (the one-standard-error rule: the simpler model unless the data
    clearly asks for more). Why: a correction per decision fitted to a dozen
    noisy runs mostly fits the noise, and the optimiser then seeks out the
    decisions the noise made look cheap; with many runs, or with nodes that
    truly deviate, the corrections pay. Fewer than 4 samples: 0. Costs
    folds x spreads fits (12 probes: about a second).
    """
    seconds = np.asarray(seconds, dtype=float)
    placements = np.asarray(placements).reshape(len(seconds), len(graph.nodes), 2)
    if len(seconds) < 4:
        return 0.0
    noise = np.broadcast_to(np.asarray(noise, dtype=float), seconds.shape)
    fold = np.random.default_rng(seed).permutation(len(seconds)) % min(folds, len(seconds))
    assumed = graph_costs(graph, device)
    errors = np.zeros((len(spreads), len(seconds)))
    for f in np.unique(fold):
        train, test = fold != f, fold == f
        for i, spread in enumerate(spreads):
            fitted = fit(graph, placements[train], seconds[train], device, noise=noise[train], node_spread=spread,
                         per_node=spread > 0, assumed=assumed)
            predicted = np.array([fitted.costs.latency(p) for p in placements[test]])
            errors[i, test] = (predicted / seconds[test] - 1) ** 2
    mean, error = errors.mean(axis=1), errors.std(axis=1, ddof=1) / np.sqrt(len(seconds))
    best = int(np.argmin(mean))
    return float(min(s for s, m in zip(spreads, mean) if m <= mean[best] + error[best]))


@dataclass(frozen=True)
class DeviceTerms:
    """The assumed model's terms split by the device figure each depends on.

    A node's weight term is `weight_read` (bytes times the per-byte read
    extra), plus for an embedding lookup `weight_latency` (accesses times the
    random latency extra) and `weight_fixed` (the bytes its rows' rounding to
    the device's granularity adds, at DRAM speed: no device figure scales
    it). Write and read terms are bytes times the per-byte write and read
    extras. So a device with other figures has the terms
    scale_read * weight_read + scale_random * weight_latency + weight_fixed,
    scale_write * write and scale_read * read.
    """

    prior: GraphCosts
    weight_read: np.ndarray
    weight_latency: np.ndarray
    weight_fixed: np.ndarray

    @property
    def random(self) -> bool:
        """Whether the graph has random accesses (embedding lookups) whose latency the data can speak to."""
        return bool(np.any(self.weight_latency > 0))

    def costs(self, scales: Sequence[float], weight_factors: np.ndarray, activation_factors: np.ndarray,
              base_time: float, dram_share: float | None = None) -> GraphCosts:
        """The model with device `scales` (read, write, random), per-node factors, all-DRAM time and,
        for parallel tiers, the job's share of DRAM bandwidth (None: tiers add)."""
        read, write, random = scales
        prior = self.prior
        return dataclasses.replace(
            prior,
            weight=weight_factors * (read * self.weight_read + random * self.weight_latency + self.weight_fixed),
            write=activation_factors * write * prior.write,
            read=activation_factors[prior.read_src] * read * prior.read,
            base_time=base_time,
            dram_share=dram_share,
        )


def device_terms(graph: TierGraph, device: str = baselines.DEFAULT_DEVICE,
                 assumed: GraphCosts | None = None) -> DeviceTerms:
    """`assumed` (default: `device`'s GraphCosts) split by device figure (see DeviceTerms).

    An embedding lookup's term is split in the proportions `device`'s cost
    model gives its random stream: the stream's extra is linear in the
    device's inverse read bandwidth and its random latency, so evaluating it
    with each of them set to DRAM's separates the parts.
    """
    prior = assumed if assumed is not None else graph_costs(graph, device)
    weight_read = prior.weight.astype(float).copy()
    weight_latency, weight_fixed = np.zeros_like(weight_read), np.zeros_like(weight_read)
    cost = cost_model(device)
    as_dram = dataclasses.replace(cost.pm, read_bw_gbs=cost.dram.read_bw_gbs, rand_latency_ns=cost.dram.rand_latency_ns)
    for i, node in enumerate(graph.nodes):
        stream = node.weight_read
        if not stream.random or prior.weight[i] <= 0:
            continue
        full = _extra(cost, cost.pm, stream)
        fixed = _extra(cost, as_dram, stream)  # granularity alone
        latency = full - _extra(cost, dataclasses.replace(cost.pm, rand_latency_ns=cost.dram.rand_latency_ns), stream)
        if full <= 0:
            continue
        share = prior.weight[i] / full  # the assumed term may be another model's: keep its total
        weight_read[i] = share * (full - fixed - latency)
        weight_latency[i] = share * latency
        weight_fixed[i] = share * fixed
    return DeviceTerms(prior, weight_read, weight_latency, weight_fixed)


def _extra(cost: CostModel, pm: devices.ScaledProfile, stream: Stream) -> float:
    """Seconds `stream` takes on `pm` beyond this host's DRAM (not clipped at 0, unlike CostModel.extra)."""
    return cost.seconds(stream, pm) - cost.seconds(stream, cost.dram)


class _Problem:
    """The MAP fit as least squares: parameters, the samples' residuals and their exact Jacobian.

    Parameters: the all-DRAM time (from the prior's, in units of the median
    latency; within about BASE_SPREAD of the capture's: without it, a low DRAM
    share and a low all-DRAM time trade against each other); the logs of the
    three device scales unless `scales` fixes them; with `parallel` tiers the log of the job's DRAM share unless `share`
    fixes it; then, if `per_node`, the log correction of every decision whose
    term is not zero and that some sample put in pm (the others cannot be
    seen). Each has a zero-mean normal prior (the share's: around 1, an
    unloaded DRAM); the data residuals are (predicted - measured) / sigma.
    """

    def __init__(self, terms: DeviceTerms, placements: np.ndarray, seconds: np.ndarray, sigma: np.ndarray,
                 scales: np.ndarray | None, per_node: bool, node_spread: float, device_spread: float,
                 parallel: bool = False, share: float | None = None):
        from scipy.sparse import csr_matrix

        self.terms, self.seconds, self.sigma, self.scales = terms, seconds, sigma, scales
        self.parallel, self.share = parallel, share
        prior = terms.prior
        self.xw, self.xa = placements[:, :, 0], placements[:, :, 1]
        n, edges = len(prior.weight), len(prior.read)
        self.n = n
        self.unit = float(np.median(seconds))
        read_of = np.bincount(prior.read_src, weights=prior.read, minlength=n) if edges else np.zeros(n)
        self.free_w = np.flatnonzero(per_node & (prior.weight > 0) & self.xw.any(axis=0))
        self.free_a = np.flatnonzero(per_node & ((prior.write > 0) | (read_of > 0)) & self.xa.any(axis=0))
        self.share_at = 1 if scales is not None else 4  # where the DRAM share's parameter is, if fitted
        self.fits_share = parallel and share is None
        self.nodes_at = self.share_at + int(self.fits_share)  # where the per-node parameters start
        base_spread = BASE_SPREAD * prior.base_time / self.unit if prior.base_time > 0 else 1e3
        self.spread = np.concatenate([[base_spread], np.full(self.share_at - 1, device_spread),
                                      np.full(self.nodes_at - self.share_at, SHARE_SPREAD),
                                      np.full(len(self.free_w) + len(self.free_a), node_spread)])
        ones = (np.ones(edges), np.arange(edges))
        self.to_reader = csr_matrix((ones[0], (prior.read_dst, ones[1])), shape=(n, edges))  # sums edges per reader
        self.to_producer = csr_matrix((ones[0], (prior.read_src, ones[1])), shape=(n, edges))
        if parallel:  # per sample and node: the DRAM seconds its placement moved to pm (fixed by the placement)
            reads = (self.to_reader @ (self.xa[:, prior.read_src] * prior.read_dram).T).T
            self.moved = self.xw * prior.weight_dram + self.xa * prior.write_dram + reads

    def start(self, share: float | None = None) -> np.ndarray:
        """The prior's mean (a fitted DRAM share at `share`, default 1), except the all-DRAM time:
        the prior's plus its mean error on the samples."""
        x = np.zeros(len(self.spread))
        if self.fits_share and share is not None:
            x[self.share_at] = np.log(share)
        residual, _ = self.data(x)
        x[0] = -float(np.mean(residual * self.sigma)) / self.unit
        return x

    def unpack(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float | None]:
        """(device scales, weight factors, activation factors, all-DRAM seconds, DRAM share or None) of `x`."""
        scales = self.scales if self.scales is not None else np.exp(x[1:4])
        share = float(np.exp(x[self.share_at])) if self.fits_share else self.share
        weight_factors, activation_factors = np.ones(self.n), np.ones(self.n)
        at, k = self.nodes_at, len(self.free_w)
        weight_factors[self.free_w] = np.exp(x[at:at + k])
        activation_factors[self.free_a] = np.exp(x[at + k:])
        return scales, weight_factors, activation_factors, self.terms.prior.base_time + x[0] * self.unit, share

    def objective(self, x: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        """What the fit minimises at `x` (the data's squared residuals plus the prior's), the residuals
        and their Jacobian."""
        residual, jacobian = self.data(x)
        return float(residual @ residual + ((x / self.spread) ** 2).sum()), residual, jacobian

    def data(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The samples' residuals at `x`, and their Jacobian (samples, parameters)."""
        (read, write, random), weight_factors, activation_factors, base, share = self.unpack(x)
        terms, prior = self.terms, self.terms.prior
        by_read = self.xw * (weight_factors * read * terms.weight_read)  # (samples, nodes)
        by_latency = self.xw * (weight_factors * random * terms.weight_latency)
        weight = by_read + by_latency + self.xw * (weight_factors * terms.weight_fixed)
        writes = self.xa * (activation_factors * write * prior.write)
        edge = self.xa[:, prior.read_src] * (activation_factors[prior.read_src] * read * prior.read)  # (samples, edges)
        reads = (self.to_reader @ edge.T).T
        linear = weight + writes + reads
        if self.parallel:  # the slower tier's time (cost_model, parallel tiers)
            slow, loaded = linear + self.moved, (prior.node_dram - self.moved) / share
            linear = np.maximum(slow, loaded) - prior.node_dram
        latency = base + (linear - np.minimum(OVERLAP * linear, prior.compute)).sum(axis=1)
        slope = np.where(OVERLAP * linear > prior.compute, 1.0, 1.0 - OVERLAP)  # d extra / d linear
        columns = [np.full((len(self.seconds), 1), self.unit)]
        if self.parallel:
            by_share = (slope * np.where(slow >= loaded, 0.0, -loaded)).sum(axis=1)  # d latency / d log share
            slope = slope * (slow >= loaded)  # the slow tier's terms move a node's time only where it is slower
        if self.scales is None:
            columns.append(np.column_stack([(slope * (by_read + reads)).sum(axis=1), (slope * writes).sum(axis=1),
                                            (slope * by_latency).sum(axis=1)]))
        if self.fits_share:
            columns.append(by_share[:, None])
        if len(self.free_w) + len(self.free_a):
            through_reads = (self.to_producer @ (slope[:, prior.read_dst] * edge).T).T  # per producer
            columns += [(slope * weight)[:, self.free_w], (slope * writes + through_reads)[:, self.free_a]]
        return (latency - self.seconds) / self.sigma, np.hstack(columns) / self.sigma[:, None]


def _maximum_a_posteriori(problem: _Problem, x: np.ndarray, iterations: int = 200,
                          tolerance: float = 1e-10) -> np.ndarray:
    """Minimise |data residuals|^2 + sum((x / spread)^2) by Levenberg-Marquardt.

    The normal matrix is J'J + diag(prior precision + damping): a diagonal
    plus a rank of at most the number of samples, so each step solves a
    samples-by-samples system (Woodbury) instead of a parameters-by-parameters one.
    """
    from scipy.linalg import cho_factor, cho_solve  # the inner matrix is symmetric positive definite;
    # numpy's general solve took 13 ms for 120 samples on a loaded host (threaded LU), Cholesky 0.3 ms

    precision = problem.spread ** -2.0
    cost, residual, jacobian = problem.objective(x)
    damping = 1e-3
    for _ in range(iterations):
        gradient = jacobian.T @ residual + precision * x
        diagonal = precision + damping * (precision + (jacobian * jacobian).sum(axis=0))
        scaled = jacobian / diagonal  # J D^-1
        # einsum, not `scaled @ jacobian.T`: threaded BLAS on a small product took 50 ms on a loaded
        # 2-core host, einsum's own loop 2.6 ms
        inner = np.eye(len(residual)) + np.einsum("ip,jp->ij", scaled, jacobian)
        step = -(gradient / diagonal - scaled.T @ cho_solve(cho_factor(inner), scaled @ gradient))
        new_cost, new_residual, new_jacobian = problem.objective(x + step)
        if new_cost < cost:
            converged = cost - new_cost <= tolerance * cost
            x, cost, residual, jacobian = x + step, new_cost, new_residual, new_jacobian
            damping = max(damping / 3, 1e-12)
            if converged:
                break
        else:
            damping *= 4
            if damping > 1e12:
                break
    return x


# ---------------------------------------------------------------------------------------------------------------
# The fitted device as a profile


def fitted_profile(device: str, scales: Sequence[float], samples: int, model_name: str = "",
                   random: bool = True, dram_share: float | None = None) -> dict[str, Any]:
    """`device` with its read, write and random-latency extras times `scales`, as a profile entry of
    data/devices.json (on this host, devices.scaled of it gives back exactly the fitted figures).

    Like every profile it holds ratios to the reference DRAM: the fitted
    per-byte read (write) extra plus this host's DRAM time per byte gives the
    device's bandwidth on this host, and the host-to-reference ratio turns
    that into the profile's figure; the random latency likewise. The
    sequential latency (which the cost model does not use) and the
    granularity stay the assumed profile's. `random`: whether the data had
    random accesses to fit the random latency to (else it stays assumed).
    A fitted DRAM share (parallel tiers) is the host's load, not the device's:
    the notes say it, and a profile run by `sim:PATH.json` leaves it out.
    """
    cost = cost_model(device)
    profile, ref, host = devices.load(device), devices.reference(), cost.dram.host
    read, write, random_scale = (float(s) for s in scales)
    gib = 1 << 30
    read_bw = gib / (read * cost.read_extra(gib) + cost.dram_read(gib)) / 1e9  # GB/s on this host
    write_bw = gib / (write * cost.write_extra(gib) + cost.dram_write(gib)) / 1e9
    latency = cost.dram.rand_latency_ns + random_scale * (cost.pm.rand_latency_ns - cost.dram.rand_latency_ns)
    what = f"fitted to {samples} timed placements of {model_name or 'a model'}, starting from {profile.name}"

    def figure(value: float, detail: str) -> dict[str, Any]:
        return {"value": float(f"{value:.6g}"), "source": CITATION, "detail": detail}

    return {
        "description": f"{profile.name} calibrated: {what}",
        "seq_latency_ns": figure(profile.seq_latency_ns, "the assumed profile's (the cost model does not use it)"),
        "rand_latency_ns": figure(latency * ref.rand_latency_ns / host.latency_ns,
                                  f"random-access latency extra x{random_scale:.4g} the assumed profile's"
                                  if random else "the assumed profile's: the data had no random accesses"),
        "read_bw_gbs": figure(read_bw * ref.read_bw_gbs / host.read_bw_gbs,
                              f"per-byte read extra x{read:.4g} the assumed profile's"),
        "write_bw_gbs": figure(write_bw * ref.write_bw_gbs / host.write_bw_gbs,
                               f"per-byte write extra x{write:.4g} the assumed profile's"),
        "granularity_bytes": {"value": profile.granularity_bytes, "source": CITATION,
                              "detail": "the assumed profile's (not fitted)"},
        "notes": f"torch_tier.calibrate, {what}. Ratios to the reference DRAM like every profile, through this "
                 f"host's measured DRAM ({host.machine}: {host.read_bw_gbs:.1f}/{host.write_bw_gbs:.1f} GB/s "
                 f"read/write, {host.latency_ns:.0f} ns)." + (
                     "" if dram_share is None else
                     f" The fit found the tiers serving at once with this job getting {dram_share:.3g} of DRAM's "
                     "bandwidth (co-runners' load, not in this profile: sim:PATH.json runs the figures alone)."),
    }


# ---------------------------------------------------------------------------------------------------------------
# Calibrating a device: probe, time, fit, check on held-out placements


@dataclass(frozen=True)
class Timed:
    """One placement timed on the device: its name, its (nodes, 2) array, median seconds and relative spread."""

    name: str
    placement: np.ndarray
    seconds: float
    spread: float


@dataclass(frozen=True)
class CalibrationReport:
    """What calibrate_device did: the probes it fitted to, the held-out placements it checked on,
    the fit, and the errors on the held-out placements of the assumed profile and of the fit."""

    graph: TierGraph
    pm: str
    device: str
    probes: list[Timed]
    holdout: list[Timed]
    calibration: Calibration

    @property
    def assumed(self) -> GraphCosts:
        return self.calibration.assumed

    def errors(self) -> dict[str, dict[str, float]]:
        """Relative errors on the held-out placements: 'before' (the assumed profile), 'after' (the fit)."""
        if not self.holdout:
            return {}
        placements = np.array([t.placement for t in self.holdout])
        seconds = np.array([t.seconds for t in self.holdout])
        return {"before": relative_errors(self.assumed, placements, seconds),
                "after": relative_errors(self.calibration.costs, placements, seconds)}

    def table(self) -> str:
        """The held-out placements (then the probes): measured, both predictions and their errors, as text."""
        header = f"{'placement':<22}{'measured ms':>13}{'assumed ms':>12}{'error':>8}{'fitted ms':>11}{'error':>8}"
        lines = [header, "-" * len(header)]
        for title, rows in (("held out", self.holdout), ("probes (fitted to)", self.probes)):
            lines.append(f"{title}:")
            for t in rows:
                before, after = self.assumed.latency(t.placement), self.calibration.predict(t.placement)
                lines.append(f"  {t.name:<20}{t.seconds * 1e3:13.3f}{before * 1e3:12.3f}{before / t.seconds - 1:+8.1%}"
                             f"{after * 1e3:11.3f}{after / t.seconds - 1:+8.1%}")
        for when, e in self.errors().items():
            lines.append(f"held-out error {when:<6}: mean {e['mean']:.1%}, max {e['max']:.1%}, bias {e['bias']:+.1%}")
        scales = ", ".join(f"{k} x{v:.3f}" for k, v in self.calibration.scales.items())
        moved = int(np.sum(np.abs(np.log(np.concatenate([self.calibration.weight_factors,
                                                         self.calibration.activation_factors]))) > 0.1))
        spread = self.calibration.node_spread
        nodes = f"per-node corrections (spread {spread:g}): {moved} beyond 10%" if spread else "no per-node corrections"
        share = self.calibration.dram_share
        tiers = "tiers add" if share is None else f"tiers in parallel, this job's DRAM share {share:.3f}"
        lines.append(f"device scales on {self.device}: {scales}; {tiers}; {nodes}")
        return "\n".join(lines)


def probe_placements(graph: TierGraph, budget: int | float | str, count: int, device: str,
                     seed: int = 0) -> dict[str, np.ndarray]:
    """`count` placements that make the fit's parameters identifiable, most telling first.

    Everything in DRAM (the all-DRAM time), everything in PM, only the weights
    in PM (reads alone), only the activations (writes and the reads of
    them), then at the budget: the assumed profile's optimum and greedy
    placements (the region a search cares about), and coin-flip placements
    (baselines.interleave) that vary every decision independently.
    """
    space = PlacementSpace(graph)
    weights_only = space.clean(np.array([[PM, DRAM]] * len(graph.nodes)))
    structured: dict[str, Callable[[], np.ndarray]] = {
        "all-dram": lambda: space.all_in(DRAM),
        "all-pm": lambda: space.all_in(PM),
        "weights-pm": lambda: weights_only,
        "activations-pm": lambda: space.all_in(PM) - weights_only,
        "optimal": lambda: space.encode(baselines.optimal(graph, budget, device)),
        "greedy": lambda: space.encode(baselines.greedy(graph, budget, device)),
    }
    found = {name: make() for name, make in list(structured.items())[:count]}
    for i in range(count - len(found)):
        found[f"random-{i + 1}"] = random_placement(graph, budget, seed + i)
    return found


def random_placement(graph: TierGraph, budget: int | float | str, seed: int) -> np.ndarray:
    """A coin-flip placement within the budget (baselines.interleave with `seed`) as a (nodes, 2) array."""
    return PlacementSpace(graph).encode(baselines.interleave(graph, budget, seed=seed))


def time_placements(model: torch.nn.Module, inputs: Any, graph: TierGraph, placements: dict[str, np.ndarray],
                    pm: str, repeats: int = 10, rounds: int = 2, progress: Progress | None = None) -> list[Timed]:
    """Time each placement `repeats` times on `pm`, in `rounds` rounds that visit every placement in turn
    (so a shared machine's load drifting over time falls on all alike); median and spread of each."""
    from .timing import Measurement, measure

    samples: dict[str, list[float]] = {name: [] for name in placements}
    rounds = max(1, min(rounds, repeats))
    space = PlacementSpace(graph)
    policies = {name: space.policy(p) for name, p in placements.items()}
    for r in range(rounds):
        for name, policy in policies.items():
            runs = len(range(r, repeats, rounds))
            samples[name] += measure(model, inputs, policy, pm=pm, repeats=runs, warmup=1).samples
    timed = []
    for name, placement in placements.items():
        m = Measurement(tuple(samples[name]))
        timed.append(Timed(name, placement, m.median, m.spread))
        if progress:
            progress(f"  {name:<16} {m}")
    return timed


def calibrate_device(model: torch.nn.Module, inputs: Any, pm: str, device: str = baselines.DEFAULT_DEVICE,
                     budget: int | float | str = "25%", probes: int = 12, holdout: int = 6, repeats: int = 10,
                     graph: TierGraph | None = None, seed: int = 0, node_spread: float | None = None,
                     progress: Progress | None = None) -> CalibrationReport:
    """Fit `device`'s cost model to `model` timed on the slow tier `pm`, and check the fit on held-out placements.

    Captures the graph (unless given), times `probes` probe placements
    (probe_placements) and `holdout` further coin-flip placements at the
    budget `repeats` times each on `pm`, fits the probes (fit; each timing's
    noise is its measured spread over sqrt(repeats), at least 1%; the
    per-node corrections' spread `node_spread`, or by default the one
    choose_node_spread finds the probes support, often 0 at a dozen probes),
    and reports both models' errors on the held-out ones. `probes` +
    `holdout` placements are timed in all; the fit itself sees only the
    probes. On `sim:` with a built-in profile the timed runs are that
    profile's cost model plus noise.
    """
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    if graph is None:
        from .graph_capture import capture

        graph = capture(model, inputs)
    say = progress or (lambda line: None)
    probe = probe_placements(graph, budget, probes, device, seed)
    held = {f"held-out-{i + 1}": random_placement(graph, budget, seed + 1000 + i) for i in range(holdout)}
    say(f"timing {len(probe)} probes and {len(held)} held-out placements on {pm}, {repeats} runs each ...")
    timed = time_placements(model, inputs, graph, probe | held, pm, repeats, progress=progress)
    probe_runs, held_runs = timed[:len(probe)], timed[len(probe):]
    noise = np.array([max(t.spread / np.sqrt(repeats), 0.01) for t in probe_runs])
    placements, seconds = np.array([t.placement for t in probe_runs]), np.array([t.seconds for t in probe_runs])
    if node_spread is None:
        node_spread = choose_node_spread(graph, placements, seconds, device, noise, seed=seed)
    calibration = fit(graph, placements, seconds, device, noise=noise, node_spread=node_spread,
                      per_node=node_spread > 0)
    return CalibrationReport(graph, pm, device, probe_runs, held_runs, calibration)


# ---------------------------------------------------------------------------------------------------------------
# torch-tier calibrate


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register `torch-tier calibrate`; its handler is `args.func(args) -> int`."""
    from .report import _budget, add_model_arguments

    parser = subparsers.add_parser(
        "calibrate", help="fit a device profile (and per-node corrections) to timed runs of a model",
        description=run.__doc__)
    add_model_arguments(parser)
    parser.add_argument("--pm", required=True, metavar="SPEC",
                        help="the slow tier to time on: sim:NAME (a profile, PATH.json or a device model), "
                             "numa:NODE, memkind:DIR or kmem")
    parser.add_argument("--assume", default=baselines.DEFAULT_DEVICE, metavar="PROFILE",
                        help=f"the profile the fit starts from (default {baselines.DEFAULT_DEVICE})")
    parser.add_argument("--budget", type=_budget, default="25%",
                        help="DRAM budget of the probes and held-out placements (default 25%%)")
    parser.add_argument("--probes", type=int, default=12, metavar="N", help="placements to fit to (default 12)")
    parser.add_argument("--holdout", type=int, default=6, metavar="N",
                        help="held-out placements to check the fit on (default 6)")
    parser.add_argument("--repeats", type=int, default=10, metavar="N", help="timed forwards per placement (default 10)")
    parser.add_argument("--out", metavar="PROFILE.json", help="write the fitted profile here (sim:PROFILE.json runs it)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Time probe placements of MODEL on the slow tier --pm, fit the cost model of --assume to them
    (device scales and per-node corrections), and print the errors of both models on held-out
    placements; --out writes the fitted device profile."""
    from .report import build_workload, capture_workload, fail

    if args.probes < 1 or args.holdout < 0 or args.repeats < 1:
        return fail("calibrate", ValueError("--probes and --repeats must be >= 1, --holdout >= 0"))
    try:
        workload = build_workload(args)
        devices.load(args.assume)
    except (ValueError, TypeError) as err:
        return fail("calibrate", err)
    graph = capture_workload(workload, args)
    try:
        with clocks.use(args.clock):
            report = calibrate_device(workload.model, workload.inputs, args.pm, args.assume, args.budget,
                                      args.probes, args.holdout, args.repeats, graph=graph,
                                      progress=lambda line: print(line, file=sys.stderr, flush=True))
    except (ValueError, baselines.BudgetError) as err:
        return fail("calibrate", err)
    print(f"{workload.name} on {args.pm}, assuming {args.assume}, DRAM budget {args.budget}\n")
    print(report.table())
    if args.out:
        report.calibration.save_profile(args.out)
        print(f"fitted profile written to {args.out} (run it with --pm sim:{args.out})")
    return 0
