"""Linear Q-learning over the high-level actions, on the paper's 9 hand features.

Q(s, a) = w_a . phi(s), where phi is: mean start address and mean size of the
free holes, largest and smallest hole, mean start address and mean size of
the live blocks, total allocated, largest and smallest live block (the
paper's 9), then the requested size, the recent request sizes of the
observation, and a constant 1. Everything is divided by the page size.
Learned online with one-step semi-gradient Q-learning and epsilon-greedy
exploration (no replay, no target network): the classic algorithm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .agent_kit import epsilon, seed_everything
from .env import FitEnv
from .rules import free_blocks

HAND_FEATURES = 9


@dataclass
class LinearQConfig:
    """Hyperparameters; the defaults are the ones the benchmark uses."""

    steps: int = 50_000
    lr: float = 0.01
    gamma: float = 0.99
    eps_start: float = 1.0
    eps_end: float = 0.02
    eps_fraction: float = 0.4


def _summary(starts: np.ndarray, sizes: np.ndarray, page_size: int) -> list[float]:
    """Mean start, mean size, largest and smallest size; an empty set reads as one at the page end."""
    if not len(sizes):
        return [page_size, 0, 0, 0]
    return [starts.mean(), sizes.mean(), sizes.max(), sizes.min()]


def features(obs: np.ndarray, info: dict) -> np.ndarray:
    """The feature vector phi of an observation (with its `info`)."""
    page_size = info["page_size"]
    hole_starts, hole_sizes = free_blocks(obs[:page_size])
    blocks = np.array(list(info["blocks"].values()), dtype=float).reshape(-1, 2)
    holes = _summary(hole_starts, hole_sizes, page_size)
    live = _summary(blocks[:, 0], blocks[:, 1], page_size)
    hand = [*holes, *live[:2], blocks[:, 1].sum(), *live[2:]]  # the paper's order
    return np.concatenate([np.array(hand) / page_size, obs[page_size:] / page_size, [1.0]]).astype(np.float32)


def feature_count(env: FitEnv) -> int:
    """The length of phi for observations of `env`."""
    return HAND_FEATURES + env.observation_space.shape[0] - env.page_size + 1


class LinearQPolicy:
    """The greedy policy of learned weights `w` (actions x features)."""

    actions = "high"

    def __init__(self, w: np.ndarray) -> None:
        self.w = w

    def reset(self) -> None:
        pass

    def act(self, obs: np.ndarray, info: dict) -> int:
        return int(np.argmax(self.w @ features(obs, info)))


def train(env: FitEnv, config: LinearQConfig | None = None, seed: int = 0) -> LinearQPolicy:
    """Train linear Q-learning on `env` (high-level actions) for `config.steps` steps."""
    config = config or LinearQConfig()
    rng = seed_everything(seed)
    w = np.zeros((env.action_space.n, feature_count(env)), np.float32)
    obs, info = env.reset(seed=seed)
    phi = features(obs, info)
    for step in range(config.steps):
        explore = rng.random() < epsilon(step, config)
        action = int(rng.integers(env.action_space.n)) if explore else int(np.argmax(w @ phi))
        obs, reward, terminated, truncated, info = env.step(action)
        next_phi = features(obs, info)
        target = reward + (0.0 if terminated else config.gamma * float(np.max(w @ next_phi)))
        w[action] += config.lr * (target - w[action] @ phi) * phi
        phi = next_phi
        if terminated or truncated:
            obs, info = env.reset()
            phi = features(obs, info)
    return LinearQPolicy(w)
