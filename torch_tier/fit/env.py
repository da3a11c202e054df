"""The fit environment: online allocation inside one fixed-size page, as an MDP.

The seed paper's MDP (RL for dynamic memory allocation), so results compare:

- A page of `page_size` cells. Observation (float32): the page bitmap
  (1 = allocated), the requested size in cells, and with `history` > 0 the
  sizes of the last `history` served allocations, oldest first, -1 before
  there were any.
- Actions: `actions="high"` picks a rule (0 = first, 1 = best, 2 = worst
  fit); `actions="low"` picks the start address in [0, page_size).
- Reward 0.1 per served allocation. A low-level address that does not hold
  the request (overlap or past the page end) gets -10, leaves the state
  unchanged and asks the same request again.
- Free requests are applied inside `step()`, between one allocation and the
  next, so every observation is an allocation request.
- The episode terminates when an allocation cannot be served by any free
  block, and is truncated after `2 * page_size` served allocations (the
  horizon of the original code), when a finite stream (a trace) ends, or
  after `max_invalid` invalid addresses in a row (the issue leaves this open;
  without it a deterministic policy that repeats an invalid address never
  ends; the paper ended such episodes near -40).

`info` carries what baselines and feature-based agents read besides the
observation: `page_size`, `size` (the request), `segment` (the generator
segment that issued it, for the oracle only) and `blocks` (start and size of
every live block, for the hand features of linear Q-learning).
"""

from __future__ import annotations

from collections import deque
from typing import Protocol

import gymnasium as gym
import numpy as np

from .generators import Request, StreamFactory, make_generator
from .rules import HIGH_LEVEL_RULES, free_blocks

SERVED_REWARD = 0.1
INVALID_REWARD = -10.0


class FitEnv(gym.Env):
    """Allocation requests from a generator, served in a page of `page_size` cells."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        generator: str | StreamFactory = "random",
        page_size: int = 256,
        history: int = 0,
        actions: str = "high",
        max_invalid: int = 5,
        **generator_options: object,
    ) -> None:
        if actions not in ("high", "low"):
            raise ValueError(f"actions must be 'high' or 'low', got {actions!r}")
        self.page_size = page_size
        self.history = history
        self.actions = actions
        self.max_invalid = max_invalid
        self.horizon = 2 * page_size
        self.streams = (
            make_generator(generator, page_size, **generator_options) if isinstance(generator, str) else generator
        )
        self.action_space = gym.spaces.Discrete(len(HIGH_LEVEL_RULES) if actions == "high" else page_size)
        self.observation_space = gym.spaces.Box(-1.0, float(page_size), (page_size + 1 + history,), np.float32)
        self.scale = np.concatenate([np.ones(page_size), np.full(1 + history, 1.0 / page_size)]).astype(np.float32)
        """Multiplies an observation into [-1, 1], for agents' inputs."""

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.bitmap = np.zeros(self.page_size, dtype=np.int8)
        self.blocks: dict[int, tuple[int, int]] = {}
        self.sizes = deque([-1] * self.history, maxlen=self.history)
        self.served = 0
        self.invalid_streak = 0
        self.stream = self.streams(self.np_random)
        self.request = self._next_allocation()
        if self.request is None or not self._servable(self.request.size):
            raise ValueError("the stream's first allocation cannot be served on an empty page")
        return self._obs(), self._info()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        size = self.request.size
        start = HIGH_LEVEL_RULES[action](self.bitmap, size) if self.actions == "high" else int(action)
        if not self._holds(start, size):
            self.invalid_streak += 1
            return self._obs(), INVALID_REWARD, False, self.invalid_streak >= self.max_invalid, self._info()
        self.invalid_streak = 0
        self.bitmap[start : start + size] = 1
        self.blocks[self.request.id] = (start, size)
        self.sizes.append(size)
        self.served += 1
        following = self._next_allocation()
        terminated = following is not None and not self._servable(following.size)
        truncated = not terminated and (following is None or self.served >= self.horizon)
        self.request = following or self.request
        return self._obs(), SERVED_REWARD, terminated, truncated, self._info()

    def _next_allocation(self) -> Request | None:
        """Apply free requests until the next allocation; None when the stream ends."""
        for request in self.stream:
            if request.op == "alloc":
                return request
            if request.id in self.blocks:
                start, size = self.blocks.pop(request.id)
                self.bitmap[start : start + size] = 0
        return None

    def _holds(self, start: int | None, size: int) -> bool:
        return start is not None and 0 <= start <= self.page_size - size and not self.bitmap[start : start + size].any()

    def _servable(self, size: int) -> bool:
        _, lengths = free_blocks(self.bitmap)
        return bool(len(lengths)) and int(lengths.max()) >= size

    def _obs(self) -> np.ndarray:
        return np.concatenate([self.bitmap, [self.request.size], self.sizes]).astype(np.float32)

    def _info(self) -> dict:
        return {
            "page_size": self.page_size,
            "size": self.request.size,
            "segment": self.request.segment,
            "blocks": dict(self.blocks),
        }


class Policy(Protocol):
    """What every fixed rule, oracle and trained agent offers: the action space it
    needs ("high" or "low"), a reset at each episode's start, and an action per step."""

    actions: str

    def reset(self) -> None: ...

    def act(self, obs: np.ndarray, info: dict) -> int: ...


def run_episode(env: FitEnv, policy: Policy, seed: int) -> float:
    """The return of one episode of `policy`, from `env.reset(seed=seed)`."""
    obs, info = env.reset(seed=seed)
    policy.reset()
    total, done = 0.0, False
    while not done:
        obs, reward, terminated, truncated, info = env.step(policy.act(obs, info))
        total += reward
        done = terminated or truncated
    return total
