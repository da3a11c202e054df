"""The worker protocol's wire format: authenticated, size- and depth-bounded JSON messages.

Every message is two frames: a JSON object (the body) and its tag,
HMAC-SHA256(secret, direction + body), where the direction names the sender
(TO_WORKER or TO_TRAINER), so that a message cannot be reflected back at its
sender. Only holders of the shared secret can make a message the other side
acts on: `unseal` checks the tag before it parses anything.

The secret is a file of at least MIN_SECRET characters readable by its owner
only (mode 0600). The trainer creates it on first use at `key_path()`
($TORCH_TIER_CACHE/worker.key, default ~/.cache/torch-tier/worker.key); a
worker on the same machine and account finds it there, one elsewhere is given
a copy with `--secret FILE`.

Parsing is bounded before it starts: the socket drops frames over its
MAXMSGSIZE, `receive` keeps at most a few frames of a message, and `parse`
measures the nesting depth with a linear scan (no recursion), then lets
json read only integers of at most MAX_INT_DIGITS digits and finite floats.
Every failure is a WireError whose text is the reason to log; a RejectionLog
logs the first few of a flood of them one by one and counts the rest.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zmq

TO_WORKER = b"torch-tier trainer->worker\n"
TO_TRAINER = b"torch-tier worker->trainer\n"
TAG_BYTES = hashlib.sha256().digest_size
MIN_SECRET = 32  # characters of a key file; the trainer writes 64 hex digits (256 bits)
MAX_DEPTH = 8  # nesting of arrays and objects; the protocol's deepest value is 4 levels down
MAX_INT_DIGITS = 19  # an int64
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)


class WireError(ValueError):
    """A message this side will not act on; the text is the reason to log."""


class SecretError(ValueError):
    """A key file that is missing, unreadable, too short or readable by others."""


# --- the shared secret ---------------------------------------------------------

def key_path() -> Path:
    """The default key file: $TORCH_TIER_CACHE/worker.key, else ~/.cache/torch-tier/worker.key."""
    root = os.environ.get("TORCH_TIER_CACHE") or Path.home() / ".cache" / "torch-tier"
    return Path(root) / "worker.key"


def trainer_secret(path: Path | None = None) -> bytes:
    """The secret at `path` (default `key_path()`), created there first if there is none."""
    path = Path(path) if path is not None else key_path()
    try:
        create_secret(path)
    except FileExistsError:
        pass
    return read_secret(path)


def create_secret(path: Path) -> None:
    """Write a fresh random secret to `path`, readable by this user only; FileExistsError if
    there is one (O_EXCL: never over another file, never through a planted link)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")


def read_secret(path: Path) -> bytes:
    """The secret in `path`: refused unless it is a regular file of this user's that no one else
    can read or write, at least MIN_SECRET characters long (surrounding whitespace ignored)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise SecretError(f"{path}: no key file (the trainer creates it on first use; copy it to a "
                          f"worker's machine and pass --secret FILE)") from None
    except OSError as err:
        raise SecretError(f"{path}: cannot open the key file ({err.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise SecretError(f"{path}: the key file is not a regular file")
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            raise SecretError(f"{path}: the key file belongs to another user")
        if info.st_mode & 0o077:
            raise SecretError(f"{path}: the key file is open to others (mode {stat.S_IMODE(info.st_mode):o}); "
                              f"chmod 600 {path}")
        secret = f.read(4096).strip()
    if len(secret) < MIN_SECRET:
        raise SecretError(f"{path}: the key file holds {len(secret)} characters, at least {MIN_SECRET} needed")
    return secret


# --- messages ------------------------------------------------------------------

class RejectionLog:
    """Warnings for rejected messages, at most `burst` per `window` seconds: the rest of a
    flood is counted, and the count logged with the next warning after the window."""

    def __init__(self, log: logging.Logger, burst: int = 20, window: float = 10.0):
        self.log, self.burst, self.window = log, burst, window
        self.suppressed = 0  # rejections counted, not logged one by one, so far in all
        self._start, self._logged, self._unreported = -math.inf, 0, 0

    def warning(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._start >= self.window:
            if self._unreported:
                self.log.warning("%d more rejected messages in %.0f s were not logged one by one",
                                 self._unreported, now - self._start)
            self._start, self._logged, self._unreported = now, 0, 0
        if self._logged < self.burst:
            self._logged += 1
            self.log.warning(message, *args, stacklevel=2)
        else:
            self._unreported += 1
            self.suppressed += 1


def seal(secret: bytes, direction: bytes, body: dict[str, Any]) -> list[bytes]:
    """The frames of `body` sent in `direction`: its JSON and its tag."""
    data = json.dumps(body, separators=(",", ":")).encode()
    return [data, hmac.new(secret, direction + data, hashlib.sha256).digest()]


def unseal(secret: bytes, direction: bytes, frames: list[bytes]) -> Any:
    """The parsed body of a message sent in `direction`, if its tag is right (checked first)."""
    if len(frames) != 2:
        raise WireError(f"expected 2 frames (body, tag), got {'more than 2' if len(frames) > 2 else len(frames)}")
    data, tag = frames
    expected = hmac.new(secret, direction + data, hashlib.sha256).digest()
    if len(tag) != TAG_BYTES or not hmac.compare_digest(tag, expected):
        raise WireError("bad authentication tag (a peer without the shared secret, or a corrupted message)")
    return parse(data)


def receive(sock: zmq.Socket, keep: int) -> list[bytes]:
    """One multipart message from `sock`, at most `keep` + 1 of its frames kept: the rest are read
    and dropped, so a message of a thousand frames costs nothing here and still reads as too many."""
    frames = [sock.recv()]
    while sock.getsockopt(zmq.RCVMORE):
        frame = sock.recv()
        if len(frames) <= keep:
            frames.append(frame)
    return frames


def bound(sock: zmq.Socket, max_bytes: int) -> None:
    """Make `sock` drop (and disconnect) a peer that sends a frame over `max_bytes`, queue at
    most a few hundred messages per peer, and close at once."""
    sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)
    sock.setsockopt(zmq.RCVHWM, 256)
    sock.setsockopt(zmq.LINGER, 0)


def parse(data: bytes) -> Any:
    """JSON `data`, refused before parsing if nested deeper than MAX_DEPTH, and refused if it holds
    an integer of more than MAX_INT_DIGITS digits, a non-finite number, or is not UTF-8 JSON."""
    depth = nesting(data)
    if depth > MAX_DEPTH:
        raise WireError(f"body nested {depth} deep, at most {MAX_DEPTH} allowed")
    try:
        return json.loads(data, parse_int=_integer, parse_float=_float, parse_constant=_constant)
    except WireError:
        raise
    except (ValueError, RecursionError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise WireError(f"body is not JSON ({str(err)[:200]})") from None


def nesting(data: bytes) -> int:
    """The deepest nesting of arrays and objects in JSON `data`, by a linear scan (strings blanked
    out first). Exact on the prefix a JSON parser accepts, so it bounds the parser's recursion."""
    codes = np.frombuffer(_STRING.sub(b'""', data), dtype=np.uint8)
    steps = np.isin(codes, (ord("["), ord("{"))).astype(np.int64) - np.isin(codes, (ord("]"), ord("}")))
    return int(np.cumsum(steps).max(initial=0))


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise WireError(f"integer of {len(text.lstrip('-'))} digits, at most {MAX_INT_DIGITS} allowed")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise WireError(f"number {text[:40]} is out of range")
    return value


def _constant(text: str) -> float:
    raise WireError(f"{text} is not a number this protocol accepts")


# --- checking fields -----------------------------------------------------------

Check = Callable[[Any, str], None]  # raises WireError naming the field (its second argument)


def fields(body: Any, schema: dict[str, Check], where: str) -> dict[str, Any]:
    """`body`, if it is an object with exactly the fields of `schema`, each passing its check."""
    if not isinstance(body, dict):
        raise WireError(f"{where} is {_kind(body)}, not an object")
    unknown = sorted(set(body) - set(schema))
    if unknown:
        raise WireError(f"{where}: unknown field(s) {', '.join(repr(name[:40]) for name in unknown[:5])}")
    for name, check in schema.items():
        if name not in body:
            raise WireError(f"{where}: field {name!r} missing")
        check(body[name], f"{where}.{name}")
    return body


def integer(low: int, high: int) -> Check:
    """An integer (not a boolean) in [low, high]."""
    def check(value: Any, where: str) -> None:
        if type(value) is not int:
            raise WireError(f"{where} is {_kind(value)}, not an integer")
        if not low <= value <= high:
            raise WireError(f"{where} = {value} is outside [{low}, {high}]")
    return check


def number(low: float, high: float) -> Check:
    """A finite number (an integer or a float, not a boolean) in [low, high]."""
    def check(value: Any, where: str) -> None:
        if type(value) not in (int, float):
            raise WireError(f"{where} is {_kind(value)}, not a number")
        if not low <= value <= high:
            raise WireError(f"{where} = {value!r} is outside [{low:g}, {high:g}]")
    return check


def text(max_length: int, pattern: str | None = None) -> Check:
    """A string of at most `max_length` characters, matching `pattern` in full if given."""
    compiled = re.compile(pattern) if pattern else None

    def check(value: Any, where: str) -> None:
        if not isinstance(value, str):
            raise WireError(f"{where} is {_kind(value)}, not a string")
        if len(value) > max_length:
            raise WireError(f"{where} is {len(value)} characters long, at most {max_length} allowed")
        if compiled is not None and not compiled.fullmatch(value):
            raise WireError(f"{where} = {value[:80]!r} is not of the form {pattern}")
    return check


def items(check: Check, max_length: int, length: int | None = None) -> Check:
    """An array of at most `max_length` values (exactly `length` if given), each passing `check`."""
    def check_all(value: Any, where: str) -> None:
        if not isinstance(value, list):
            raise WireError(f"{where} is {_kind(value)}, not an array")
        if length is not None and len(value) != length:
            raise WireError(f"{where} has {len(value)} items, expected {length}")
        if len(value) > max_length:
            raise WireError(f"{where} has {len(value)} items, at most {max_length} allowed")
        for i, item in enumerate(value):
            check(item, f"{where}[{i}]")
    return check_all


def optional(check: Check) -> Check:
    """null, or a value passing `check`."""
    def check_or_null(value: Any, where: str) -> None:
        if value is not None:
            check(value, where)
    return check_or_null


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(value), type(value).__name__)
