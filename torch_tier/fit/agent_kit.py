"""What the agents share: seeding, the epsilon-greedy schedule and the MLP builder.

One home for these so that every agent module (`dqn`, `linear_q`, `ppo`)
imports only this and the environment, never another agent.
"""

from __future__ import annotations

import random
from typing import Protocol

import numpy as np
import torch
from torch import nn


class Exploration(Protocol):
    """The fields of an agent's config that set its epsilon-greedy schedule."""

    steps: int
    eps_start: float
    eps_end: float
    eps_fraction: float


def seed_everything(seed: int) -> np.random.Generator:
    """Seed python, numpy and torch; return a numpy generator for the agent's own draws."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def epsilon(step: int, config: Exploration) -> float:
    """Exploration rate: linear from `eps_start` to `eps_end` over the first
    `eps_fraction` of the training steps, then constant."""
    progress = min(1.0, step / (config.eps_fraction * config.steps))
    return config.eps_start + progress * (config.eps_end - config.eps_start)


def mlp(inputs: int, hidden: tuple[int, ...], outputs: int, activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """A fully connected network with `activation` between its layers."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(inputs, width), activation()]
        inputs = width
    return nn.Sequential(*layers, nn.Linear(inputs, outputs))
