"""Building, rolling out and comparing policies in a `FitEnv`, with 95% intervals.

Every policy (fixed rule, oracle or trained agent) has the same small
interface: `actions` ("high" or "low", the action space it needs), `reset()`
at the start of an episode and `act(obs, info)`. Episode i of an evaluation
resets the environment with seed `seed + i`, and request streams do not
depend on placements, so policies evaluated with the same seed face the same
requests.

A comparison makes independent runs: run r trains each agent from seed
`seed + r` and evaluates every policy, baselines included, on the same
episodes (seeds `EVAL_SEED + 1000 * r + i`); the interval is over the run
means, so it shows the spread between training runs.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from . import dqn, linear_q, ppo
from .env import FitEnv, Policy, run_episode
from .rules import OraclePolicy, RulePolicy

BASELINES = ("first", "best", "worst", "next")
AGENTS = ("dqn", "linear-q", "ppo")
EVAL_SEED = 10_000


def evaluate(policy: Policy, env_options: dict, episodes: int, seed: int) -> np.ndarray:
    """Returns of `episodes` episodes (seeds `seed`, `seed + 1`, ...) in `FitEnv(**env_options)`."""
    env = FitEnv(actions=policy.actions, **env_options)
    return np.array([run_episode(env, policy, seed + i) for i in range(episodes)])


def make_policy(name: str, env_options: dict, seed: int = 0, steps: int | None = None) -> Policy:
    """Policy `name`: a baseline (`BASELINES`), "oracle", or an agent (`AGENTS`)
    trained on `FitEnv(**env_options)` from `seed` for `steps` steps (None:
    the agent's default)."""
    if name in BASELINES:
        return RulePolicy(name)
    if name == "oracle":
        return OraclePolicy()
    budget = {} if steps is None else {"steps": steps}
    if name == "dqn":
        return dqn.train(FitEnv(actions="high", **env_options), dqn.DQNConfig(**budget), seed)
    if name == "linear-q":
        return linear_q.train(FitEnv(actions="high", **env_options), linear_q.LinearQConfig(**budget), seed)
    if name == "ppo":
        return ppo.train(lambda: FitEnv(actions="low", **env_options), ppo.PPOConfig(**budget), seed)
    raise ValueError(f"unknown policy {name!r}; choose from {BASELINES + ('oracle',) + AGENTS}")


def run_mean(name: str, env_options: dict, run: int, episodes: int, seed: int = 0, steps: int | None = None) -> float:
    """Mean return of policy `name` in run `run` of a comparison (see the module doc)."""
    policy = make_policy(name, env_options, seed + run, steps)
    return float(evaluate(policy, env_options, episodes, EVAL_SEED + 1000 * run).mean())


def interval(values: np.ndarray) -> tuple[float, float]:
    """Mean and half-width of the 95% Student-t confidence interval of the mean."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float(values.mean()), float("nan")
    half = stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean()), float(half)


def format_interval(values: np.ndarray) -> str:
    """`mean ± half-width` of `values`, for a table cell."""
    mean, half = interval(values)
    return f"{mean:.2f} ± {half:.2f}"


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
