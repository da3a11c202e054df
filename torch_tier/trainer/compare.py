"""The trained policy beside the baselines, predicted and timed side by side on the workers.

Timing runs on the evaluation workers, not in the trainer's process: with
remote workers the slow tier is theirs. Memory mode is a hardware cache, not
a placement, so it cannot be timed on a simulated tier: its predicted latency
is baselines.memory_mode_latency, and its "measured" one applies the same
model to the measured all-DRAM and all-PM latencies (all-DRAM + miss ratio x
(all-PM - all-DRAM)). All-DRAM is the unconstrained reference; it does not fit
the budget.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import baselines
from ..graph import TierGraph
from ..timing import Measurement
from ..policy import Policy
from ..report import MEMORY_MODE, markdown_table, placements
from ..cost_model import predict
from .fitness import MeasuredFitness
from .space import PlacementSpace


@dataclass
class Row:
    """One policy's figures (seconds, bytes); `measured` is None when not timed."""

    name: str
    predicted: float
    dram_bytes: int
    measured: float | None = None
    spread: float | None = None


def policies(graph: TierGraph, budget: int, device: str, trained: Policy) -> dict[str, Policy]:
    """All-DRAM, every baseline under `budget`, and the trained policy last."""
    return placements(graph, budget, device) | {"trained": trained}


def compare(graph: TierGraph, named: dict[str, Policy], budget: int, device: str,
            judge: MeasuredFitness | None = None, rounds: int = 5) -> list[Row]:
    """A row per policy of `named` (as `policies` gives them): predicted, and with a `judge`
    also timed in `rounds` rounds that each time every policy in turn."""
    space = PlacementSpace(graph)
    rows = {name: Row(name, predict(graph, p, device), graph.footprint(p)["dram"]) for name, p in named.items()}
    rows[MEMORY_MODE].predicted = baselines.memory_mode_latency(graph, budget, device)
    if judge is not None:
        timed = {name: space.encode(p) for name, p in named.items() if name != MEMORY_MODE}
        for name, samples in judge.compare(timed, rounds).items():
            measurement = Measurement(tuple(samples))
            rows[name].measured, rows[name].spread = measurement.median, measurement.spread
        rows[MEMORY_MODE].measured = baselines.memory_mode_between(
            graph, budget, rows["all-dram"].measured, rows["all-pm"].measured)
    return list(rows.values())


def table(rows: list[Row], against: str = "optimal") -> str:
    """A markdown table, each latency also as a ratio to row `against`."""
    base = next(r for r in rows if r.name == against)
    timed = base.measured is not None
    headers = ["policy", "DRAM MiB", "predicted ms", f"vs {against}"]
    headers += ["measured ms", "±", f"vs {against}"] if timed else []
    cells = []
    for r in rows:
        line = [r.name, f"{r.dram_bytes / 2**20:.1f}", f"{r.predicted * 1e3:.3f}", f"{r.predicted / base.predicted:.4f}"]
        if timed:
            spread = f"{r.spread:.1%}" if r.spread is not None else "(model)"
            line += [f"{r.measured * 1e3:.2f}", spread, f"{r.measured / base.measured:.3f}"]
        cells.append(line)
    return markdown_table(headers, cells)
