"""Checkpoints: a training run's whole state in one file, written atomically every generation.

The file holds the settings (TrainConfig among them), the captured graph (so a resumed run predicts
with exactly the same numbers instead of re-timing the model) and the
search: population, learner networks and optimisers, replay buffer, scores,
random generator state, history. Written with torch.save to a temporary file
and renamed over the old one, so a crash or Ctrl-C mid-write leaves the
previous checkpoint intact. It is a pickle: load only checkpoints you wrote.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

FORMAT = "torch-tier-train-checkpoint"
VERSION = 2


def save(path: str | Path, state: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, "version": VERSION, **state}, temporary)
    os.replace(temporary, path)


def load(path: str | Path) -> dict[str, Any]:
    """The state saved at `path`; ValueError if it is not a checkpoint of this version."""
    try:
        state = torch.load(path, weights_only=False)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError) as err:
        raise ValueError(f"{path}: cannot read a training checkpoint ({err})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("version") != VERSION:
        raise ValueError(f"{path}: not a {FORMAT} version {VERSION} file")
    return state
