"""Learned fit policies for a fixed-capacity arena (the seed paper "RL for
dynamic memory allocation", rebuilt): which hole an online allocator picks
for each request, so a slow tier's fixed-size arena fragments less.

- `env`: the paper's MDP as a gymnasium environment (`FitEnv`).
- `generators`: request streams (random, bf-good, wf-good, mixed, trace:PATH).
- `trace`: the allocation trace file format and its scaling to cells.
- `rules`: first / best / worst / next fit and the segment-aware oracle.
- `dqn`, `linear_q`, `ppo`: the agents, one file per algorithm; none imports another.
- `agent_kit`: what the agents share (seeding, epsilon schedule, MLPs).
- `evaluate`: rollouts, comparisons over independent runs, 95% intervals.
- `cli`: the `torch-tier fit` subcommand.

Of the rest of torch_tier, `trace` imports `lifetimes` (peak live bytes; it
imports nothing itself) and `real` imports the recorder's replay lazily.
"""

from .env import FitEnv
from .generators import GENERATORS, Request, make_generator
from .rules import RULES, NextFit, OraclePolicy, RulePolicy, best_fit, first_fit, free_blocks, worst_fit
from .trace import TraceEvent, load_trace, save_trace, trace_to_cells

__all__ = [
    "FitEnv",
    "GENERATORS",
    "Request",
    "make_generator",
    "RULES",
    "NextFit",
    "OraclePolicy",
    "RulePolicy",
    "best_fit",
    "first_fit",
    "free_blocks",
    "worst_fit",
    "TraceEvent",
    "load_trace",
    "save_trace",
    "trace_to_cells",
]
