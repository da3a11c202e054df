"""The policy-gradient learner: discrete soft actor-critic over the GNN.

An episode is one step: the state is the graph (fixed for a run), the action
a whole placement, the reward how much faster it ran than the reference
latency (percent). With no next state the Bellman target is the reward
itself, so there are no target networks; the twin critics are kept, and the
actor trusts the smaller of their values, so it does not chase one critic's
errors. (MARL's noisy-action smoothing belongs to continuous actions and is
left out.)

The action space is 2^(items), too large to enumerate, so the critic is
factored: Q(a) = b + sum over items of q_i(a_i | the other items' tiers).
Each item's table q_i comes from a GNN over the node features and the tiers
of its neighbours and of the rest of the graph (never its own), so the
actor's soft policy improvement can take the exact expectation over each
item's two tiers, batch by batch.

The DRAM budget enters the actor as a Lagrangian: its loss adds
lambda * (footprint of its expected placement / budget), lambda following
dual ascent towards an expected footprint of exactly the budget (DRAM left
unused is speed given away, so it is an equality), just as SAC tunes its
entropy temperature alpha towards a target entropy.

Every evaluated placement (after repair, i.e. what actually ran) goes into
the replay buffer with its latency; updates sample real mini-batches from it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .budget import Budget
from .config import TrainConfig
from .gnn import Actor, GraphEncoder, Neighbours, mlp


class ReplayBuffer:
    """Every evaluated placement (nodes, 2) and its latency in seconds."""

    def __init__(self, nodes: int):
        self.placements = np.zeros((1024, nodes, 2), dtype=np.int8)
        self.latencies = np.zeros(1024)
        self.size = 0

    def add(self, placement: np.ndarray, latency: float) -> None:
        if self.size == len(self.latencies):
            self.placements = np.concatenate([self.placements, np.zeros_like(self.placements)])
            self.latencies = np.concatenate([self.latencies, np.zeros_like(self.latencies)])
        self.placements[self.size] = placement
        self.latencies[self.size] = latency
        self.size += 1

    def sample(self, batch: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        index = rng.integers(0, self.size, min(batch, self.size))
        return self.placements[index], self.latencies[index]

    def state_dict(self) -> dict:
        return {"placements": self.placements[:self.size].copy(), "latencies": self.latencies[:self.size].copy()}

    def load_state_dict(self, state: dict) -> None:
        self.size = 0
        for placement, latency in zip(state["placements"], state["latencies"]):
            self.add(placement, latency)


class Critic(nn.Module):
    """Per-item value tables (batch, nodes, 2 heads, 2 tiers) given the other items' tiers."""

    def __init__(self, features: int, hidden: int = 32):
        super().__init__()
        self.encoder = GraphEncoder(features, hidden, layers=2)
        self.tiers = mlp(hidden + 2, hidden, hidden)
        self.q = mlp(5 * hidden, hidden, 4)
        self.bias = nn.Parameter(torch.zeros(()))

    def tables(self, x: torch.Tensor, neighbours: Neighbours, placements: torch.Tensor) -> torch.Tensor:
        batch, nodes = placements.shape[:2]
        e = self.encoder(x, neighbours).expand(batch, -1, -1)
        u = self.tiers(torch.cat([e, placements], dim=-1))  # what each node's own tiers tell the others
        others = (u.sum(dim=-2, keepdim=True) - u) / max(nodes - 1, 1)
        return self.q(torch.cat([e, *neighbours.mean(u), others], dim=-1)).view(batch, nodes, 2, 2)

    def value(self, tables: torch.Tensor, placements: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Q of each placement: the bias plus every real item's entry for its tier."""
        chosen = tables.gather(-1, placements.long().unsqueeze(-1)).squeeze(-1)
        return self.bias + (chosen * mask).sum(dim=(-2, -1))


class Learner:
    """Discrete SAC: an Actor, twin Critics, entropy temperature alpha and budget multiplier lambda
    (widths, rates, batch size and entropy target from `config`)."""

    def __init__(self, features: torch.Tensor, neighbours: Neighbours, mask: np.ndarray, budget: Budget,
                 config: TrainConfig):
        self.x = features
        self.neighbours = neighbours
        self.mask = torch.as_tensor(mask, dtype=torch.float32)
        self.budget = budget
        self.config = config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.actor = Actor(features.shape[1], config.hidden)
            self.critics = nn.ModuleList(Critic(features.shape[1], config.hidden) for _ in range(2))
        self.log_alpha = torch.tensor(float(np.log(config.initial_alpha)), requires_grad=True)
        self.lam = torch.zeros((), requires_grad=True)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=config.learning_rate)
        self.critic_opt = torch.optim.Adam(self.critics.parameters(), lr=config.learning_rate)
        self.dual_opt = torch.optim.Adam([self.log_alpha, self.lam], lr=config.learning_rate * 10)

    def logits_of(self, actor: Actor) -> np.ndarray:
        """An actor's logits (nodes, 2 heads, 2 tiers) on this graph."""
        with torch.no_grad():
            return actor(self.x, self.neighbours).numpy().astype(np.float64)

    def new_actor(self) -> Actor:
        """An untrained actor of the learner's shape (to load a saved one into)."""
        return Actor(self.x.shape[1], self.config.hidden)

    def update(self, replay: ReplayBuffer, reference: float, rng: np.random.Generator) -> None:
        """`config.learner_updates` gradient steps on mini-batches of the replay, rewards in percent
        faster than `reference`."""
        for _ in range(self.config.learner_updates):
            placements, latencies = replay.sample(self.config.batch_size, rng)
            placements = torch.as_tensor(placements, dtype=torch.float32)
            rewards = torch.as_tensor(100.0 * (reference - latencies) / reference, dtype=torch.float32)
            self._step(placements, rewards)

    def _step(self, placements: torch.Tensor, rewards: torch.Tensor) -> None:
        tables = [critic.tables(self.x, self.neighbours, placements) for critic in self.critics]
        critic_loss = sum(F.mse_loss(critic.value(t, placements, self.mask), rewards)
                          for critic, t in zip(self.critics, tables))
        self.critic_opt.zero_grad()
        critic_loss.backward()
        self.critic_opt.step()

        q = torch.minimum(*tables).detach()  # (batch, nodes, 2, 2)
        log_p = F.log_softmax(self.actor(self.x, self.neighbours), dim=-1)
        p = log_p.exp()
        alpha, lam = self.log_alpha.exp().detach(), self.lam.detach()  # constants to the actor
        per_item = (p * (alpha * log_p - q)).sum(dim=-1)  # (batch, nodes, 2)
        usage = self.budget.relaxed_usage(p[..., 0])
        actor_loss = (per_item * self.mask).sum(dim=(-2, -1)).mean() + lam * usage
        self.actor_opt.zero_grad()
        actor_loss.backward()
        self.actor_opt.step()

        entropy = (-(p * log_p).sum(dim=-1) * self.mask).sum() / self.mask.sum()
        dual_loss = (self.log_alpha.exp() * (entropy.detach() - self.config.entropy_target)
                     - self.lam * (usage.detach() - 1.0))
        self.dual_opt.zero_grad()
        dual_loss.backward()
        self.dual_opt.step()

    def state_dict(self) -> dict:
        return {"actor": self.actor.state_dict(), "critics": self.critics.state_dict(),
                "log_alpha": self.log_alpha.detach().clone(), "lambda": self.lam.detach().clone(),
                "actor_opt": self.actor_opt.state_dict(), "critic_opt": self.critic_opt.state_dict(),
                "dual_opt": self.dual_opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.critics.load_state_dict(state["critics"])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
            self.lam.copy_(state["lambda"])
        self.actor_opt.load_state_dict(state["actor_opt"])
        self.critic_opt.load_state_dict(state["critic_opt"])
        self.dual_opt.load_state_dict(state["dual_opt"])
