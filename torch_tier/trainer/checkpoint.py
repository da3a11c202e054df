"""Checkpoints: a training run's whole state in one file, written atomically every generation.

The file holds the settings (TrainConfig among them), the captured graph (so a resumed run predicts
with exactly the same numbers instead of re-timing the model) and the
search: population, learner networks and optimisers, replay buffer, scores,
random generator state, history. Written to a temporary file and renamed over
the old one, so a crash or Ctrl-C mid-write leaves the previous checkpoint intact.

Layout: a header line naming the format, its version, the payload's length and its SHA-256,
then the payload (torch.save of the state). A file cut short, changed in any byte, of another
format or version is refused with one line naming the file before anything is unpickled. The
payload is a pickle: load only checkpoints you wrote (the checksum finds damage, not forgery).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path
from typing import Any

import torch

FORMAT = "torch-tier-train-checkpoint"
VERSION = 3
_HEADER = re.compile(rb"(\S+) version (\d+) bytes (\d+) sha256 ([0-9a-f]{64})\n")
_MAX_HEADER = 256


def save(path: str | Path, state: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    header = f"{FORMAT} version {VERSION} bytes {len(payload)} sha256 {hashlib.sha256(payload).hexdigest()}\n"
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as out:
        out.write(header.encode() + payload)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temporary, path)


def load(path: str | Path) -> dict[str, Any]:
    """The state saved at `path`; ValueError (one line naming the file) if it cannot be read,
    is not a checkpoint of this version, or is damaged."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot read a training checkpoint ({err.strerror or err})") from None
    header, newline, payload = data[:_MAX_HEADER].partition(b"\n")
    match = _HEADER.fullmatch(header + newline)
    if not match or match.group(1) != FORMAT.encode():
        raise ValueError(f"{path}: not a {FORMAT} file")
    if int(match.group(2)) != VERSION:
        raise ValueError(f"{path}: {FORMAT} version {int(match.group(2))}; this torch-tier reads version {VERSION}")
    payload = data[len(header) + 1:]
    if len(payload) != int(match.group(3)):
        raise ValueError(f"{path}: damaged checkpoint: {len(payload)} bytes of state where the header says "
                         f"{int(match.group(3))} (cut short or appended to)")
    if hashlib.sha256(payload).hexdigest() != match.group(4).decode():
        raise ValueError(f"{path}: damaged checkpoint: its state does not match the SHA-256 in its header")
    try:
        state = torch.load(io.BytesIO(payload), weights_only=False)
    except Exception as err:  # intact bytes that still do not load: another torch-tier's classes
        reason = " ".join(str(err).split())
        raise ValueError(f"{path}: cannot load the training checkpoint ({type(err).__name__}: {reason})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path}: not a {FORMAT} file (its state is a {type(state).__name__})")
    return state
