"""DQN over the high-level actions (first / best / worst fit), on the raw bitmap.

The paper's agent: an MLP with hidden layers [32, 32] and ReLU reading the
page bitmap, the requested size and the recent request sizes, trained with
DQN (experience replay, a target network, epsilon-greedy exploration,
Huber loss). Plain torch, one file, in the style of CleanRL.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .env import FitEnv

if TYPE_CHECKING:
    from .linear_q import LinearQConfig


@dataclass
class DQNConfig:
    """Hyperparameters; the defaults are the ones the benchmark uses."""

    steps: int = 50_000
    hidden: tuple[int, ...] = (32, 32)
    lr: float = 1e-3
    gamma: float = 0.99
    buffer_size: int = 50_000
    batch_size: int = 64
    learning_starts: int = 1_000
    train_every: int = 2
    target_every: int = 500
    eps_start: float = 1.0
    eps_end: float = 0.02
    eps_fraction: float = 0.4


def mlp(inputs: int, hidden: tuple[int, ...], outputs: int, activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """A fully connected network with `activation` between its layers."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(inputs, width), activation()]
        inputs = width
    return nn.Sequential(*layers, nn.Linear(inputs, outputs))


class ReplayBuffer:
    """A ring buffer of transitions (obs, action, reward, next obs, terminated)."""

    def __init__(self, capacity: int, obs_size: int) -> None:
        self.obs = np.zeros((capacity, obs_size), np.float32)
        self.next_obs = np.zeros((capacity, obs_size), np.float32)
        self.actions = np.zeros(capacity, np.int64)
        self.rewards = np.zeros(capacity, np.float32)
        self.terminated = np.zeros(capacity, np.float32)
        self.capacity, self.size, self.cursor = capacity, 0, 0

    def add(self, obs: np.ndarray, action: int, reward: float, next_obs: np.ndarray, terminated: bool) -> None:
        i = self.cursor
        self.obs[i], self.actions[i], self.rewards[i] = obs, action, reward
        self.next_obs[i], self.terminated[i] = next_obs, terminated
        self.cursor = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch: int, rng: np.random.Generator) -> tuple[torch.Tensor, ...]:
        i = rng.integers(self.size, size=batch)
        arrays = (self.obs[i], self.actions[i], self.rewards[i], self.next_obs[i], self.terminated[i])
        return tuple(torch.from_numpy(a) for a in arrays)


class DQNPolicy:
    """The greedy policy of a trained Q-network (high-level actions)."""

    actions = "high"

    def __init__(self, q: nn.Module, scale: np.ndarray) -> None:
        self.q, self.scale = q, scale

    def reset(self) -> None:
        pass

    @torch.no_grad()
    def act(self, obs: np.ndarray, info: dict) -> int:
        return int(self.q(torch.from_numpy(obs * self.scale)).argmax())


def seed_everything(seed: int) -> np.random.Generator:
    """Seed python, numpy and torch; return a numpy generator for the agent's own draws."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def epsilon(step: int, config: DQNConfig | LinearQConfig) -> float:
    """Exploration rate: linear from `eps_start` to `eps_end` over the first
    `eps_fraction` of the training steps, then constant."""
    progress = min(1.0, step / (config.eps_fraction * config.steps))
    return config.eps_start + progress * (config.eps_end - config.eps_start)


def td_update(
    q: nn.Module, target: nn.Module, optimizer: torch.optim.Optimizer, batch: tuple[torch.Tensor, ...], gamma: float
) -> None:
    """One gradient step of the Huber loss between Q(s, a) and r + gamma * max Q_target(s')."""
    s, a, r, s2, terminated = batch
    with torch.no_grad():
        y = r + gamma * (1 - terminated) * target(s2).max(dim=1).values
    loss = nn.functional.smooth_l1_loss(q(s).gather(1, a[:, None]).squeeze(1), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def train(env: FitEnv, config: DQNConfig | None = None, seed: int = 0) -> DQNPolicy:
    """Train a DQN agent on `env` (high-level actions) for `config.steps` steps."""
    config = config or DQNConfig()
    rng = seed_everything(seed)
    q = mlp(env.observation_space.shape[0], config.hidden, env.action_space.n)
    target = mlp(env.observation_space.shape[0], config.hidden, env.action_space.n)
    target.load_state_dict(q.state_dict())
    optimizer = torch.optim.Adam(q.parameters(), lr=config.lr)
    buffer = ReplayBuffer(config.buffer_size, env.observation_space.shape[0])
    policy = DQNPolicy(q, env.scale)
    obs, info = env.reset(seed=seed)
    for step in range(config.steps):
        explore = rng.random() < epsilon(step, config)
        action = int(rng.integers(env.action_space.n)) if explore else policy.act(obs, info)
        next_obs, reward, terminated, truncated, info = env.step(action)
        buffer.add(obs * env.scale, action, reward, next_obs * env.scale, terminated)
        obs = next_obs
        if terminated or truncated:
            obs, info = env.reset()
        if step >= config.learning_starts and step % config.train_every == 0:
            td_update(q, target, optimizer, buffer.sample(config.batch_size, rng), config.gamma)
        if step % config.target_every == 0:
            target.load_state_dict(q.state_dict())
    return policy
