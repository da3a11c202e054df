"""Evaluation workers over pyzmq: the trainer binds, workers connect, placements go out, timings come back.

MARL timed its candidates on a separate PM server over RPC; so does this.
`torch-tier worker --connect tcp://HOST:PORT` runs a worker: it receives the
job once (the model's spec, fingerprint and node paths, the pm spec, the
warm-up count, and the trainer's intra-op thread count, so every worker times
with the threads the user chose), builds the model itself from the spec
(zoo.resolve, as `torch-tier train MODEL --size ...` does) and checks its
fingerprint, and then times the placements it is sent with
torch_tier.measure(), the model built once and each placement reapplied. The
trainer (WorkerPool) binds a ROUTER socket and uses every worker that
connects. Local workers are the same program started by the trainer as
subprocesses; they are given the trainer's own model in a file only this user
can read (no spec needed), and exit when the trainer does (PR_SET_PDEATHSIG,
and a check of their parent every heartbeat).

A task is a group of placements timed side by side on one worker: a
measure() of each in turn (`repeats` timed forwards after the warm-up), so
drifts of the machine's speed fall on all of them alike. A group of one is a
plain timing (WorkerPool.run); a group of two is a pair of racing's paired
runs (racing.py), a group of all the compared placements one round of a
comparison (WorkerPool.side_by_side). Tasks are spread over the workers, so
many pairs or rounds are timed at once, each within one process, and no task
is longer than one round.

Nothing is unpickled from the network. Every message is authenticated with
the shared secret (wire.py: HMAC-SHA256 over every message; a message with a
wrong tag is dropped before it is parsed), bounded in size and nesting, and
checked field by field against PROTOCOL's schema below; every rejection is
logged with its reason. Protocol (version PROTOCOL), JSON bodies carrying
`protocol` and `type`:

  worker -> trainer   hello {pid, host, nonce} until it has a job;
                      ping {session} every HEARTBEAT_INTERVAL s, also while timing;
                      ready {session, fingerprint}; result {session, id, fingerprint, samples}
                      (samples: `repeats` seconds for each placement);
                      rejected {session, reason, id|null}
  trainer -> worker   job {session, nonce, fingerprint, model: {name, size}|null, model_name,
                      nodes, pm, warmup, threads, clock}; evaluate {session, id, fingerprint,
                      placements, repeats}; stop {session}; reset {}

A hello's random nonce comes back in its job with a fresh random session,
which every later message of either side carries: a recorded message replayed
on another connection or in another session is refused. A worker the trainer
does not know (one of a trainer that was restarted) is told `reset` and says
hello again.

The trainer drops a worker whose message it rejects (re-queueing its task and
telling it to stop), and one whose process exits, that sends no heartbeat for
HEARTBEAT_TIMEOUT s, or that holds a task past the task timeout (re-queueing
its task; if it speaks again, it is told to say hello and rejoins); training
goes on with the others. Results must have one sample per timed forward of each placement,
each within [MIN_RATIO, MAX_RATIO] times the trainer's own all-DRAM forward
time (and within [MIN_SECONDS, MAX_SECONDS]).
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import zmq

from .. import devices, zoo
from ..clocks import CLOCKS
from ..placement import placement_of
from ..policy import Policy, fingerprint
from ..timing import measure
from . import wire
from .wire import WireError

PROTOCOL = 3
HEARTBEAT_INTERVAL = 1.0  # seconds between a worker's pings (or hellos, until it has a job)
HEARTBEAT_TIMEOUT = 10.0  # seconds without a message after which the trainer drops a worker
MAX_ATTEMPTS = 3  # times one task may be rejected by workers before training stops
MAX_TO_TRAINER = 1 << 20  # bytes of a worker's message
MAX_TO_WORKER = 32 << 20  # bytes of the trainer's (a job lists every node path)
MAX_NODES = 100_000
MAX_GROUP = 64  # placements in one task
MAX_REPEATS = 1000
MIN_SECONDS, MAX_SECONDS = 1e-6, 3600.0  # of one timed forward
# A sample's bounds in the trainer's own all-DRAM forward time (graph.base_time, timed with every
# node metered: for a small model several times the plain forward, hence the wide lower bound).
MIN_RATIO, MAX_RATIO = 1e-3, 1e3
MAX_REASON = 1000  # characters of a rejection's reason
log = logging.getLogger(__name__)

# --- the protocol's schema -------------------------------------------------------

_TOKEN = wire.text(32, "[0-9a-f]{32}")
_FINGERPRINT = wire.text(23, "sha256:[0-9a-f]{16}")
_TASK = wire.integer(0, 2**53)
_PAIR = wire.items(wire.number(0.0, 1.0), 2, length=2)  # [weights, activations]: 0 DRAM, 1 pm, or a split's pm share
_MODEL_NAME = r"[A-Za-z0-9_.\-]+(:[A-Za-z_][A-Za-z0-9_]*)?"


def _size_arguments(value: Any, where: str) -> None:
    """A model spec's size: at most 64 keyword arguments, each an integer, a number or a short string."""
    if not isinstance(value, dict) or len(value) > 64:
        raise WireError(f"{where} must be an object of at most 64 keyword arguments")
    for key, argument in value.items():
        wire.text(64, "[A-Za-z_][A-Za-z0-9_]*")(key, f"{where} key")
        if type(argument) not in (int, float, str) or (isinstance(argument, str) and len(argument) > 256):
            raise WireError(f"{where}.{key[:64]} must be an integer, a number or a string of at most 256 characters")


def _model_spec(value: Any, where: str) -> None:
    wire.fields(value, {"name": wire.text(256, _MODEL_NAME), "size": _size_arguments}, where)


TO_TRAINER: dict[str, dict[str, wire.Check]] = {
    "hello": {"pid": wire.integer(0, 2**31), "host": wire.text(255), "nonce": _TOKEN},
    "ping": {"session": _TOKEN},
    "ready": {"session": _TOKEN, "fingerprint": _FINGERPRINT},
    "result": {"session": _TOKEN, "id": _TASK, "fingerprint": _FINGERPRINT,
               "samples": wire.items(wire.items(wire.number(0.0, MAX_SECONDS), MAX_REPEATS), MAX_GROUP)},
    "rejected": {"session": _TOKEN, "reason": wire.text(MAX_REASON), "id": wire.optional(_TASK)},
}
TO_WORKER: dict[str, dict[str, wire.Check]] = {
    "job": {"session": _TOKEN, "nonce": _TOKEN, "fingerprint": _FINGERPRINT, "model": wire.optional(_model_spec),
            "model_name": wire.text(256), "nodes": wire.items(wire.text(1024), MAX_NODES), "pm": wire.text(4096),
            "warmup": wire.integer(0, 1000), "threads": wire.integer(1, 4096),
            "clock": wire.text(8, "|".join(CLOCKS)), "generate": wire.optional(wire.integer(1, 2**20))},
    "evaluate": {"session": _TOKEN, "id": _TASK, "fingerprint": _FINGERPRINT,
                 "placements": wire.items(wire.items(_PAIR, MAX_NODES), MAX_GROUP),
                 "repeats": wire.integer(1, MAX_REPEATS)},
    "stop": {"session": _TOKEN},
    "reset": {},
}


def check_message(body: Any, schema: dict[str, dict[str, wire.Check]]) -> dict[str, Any]:
    """`body` if it is a message of this protocol version whose type and fields `schema` allows."""
    if not isinstance(body, dict):
        raise WireError("the message is not a JSON object")
    if body.get("protocol") != PROTOCOL or type(body.get("protocol")) is not int:
        raise WireError(f"protocol version {body.get('protocol')!r:.20}, this side speaks {PROTOCOL}")
    kind = body.get("type")
    if not isinstance(kind, str) or kind not in schema:
        raise WireError(f"unexpected message type {kind!r:.40} (expected one of {', '.join(schema)})")
    checks = {"protocol": wire.integer(PROTOCOL, PROTOCOL), "type": wire.text(16), **schema[kind]}
    return wire.fields(body, checks, kind)


# --- the job -----------------------------------------------------------------------

@dataclass(frozen=True)
class ModelSpec:
    """How a worker builds the model itself: a zoo name or 'package.module:function' and its
    keyword arguments, as `torch-tier train MODEL --size K=V ...` names it (zoo.resolve)."""

    name: str
    size: dict[str, int | float | str] = field(default_factory=dict)


@dataclass(frozen=True)
class RemoteWorkers:
    """Measured fitness on `torch-tier worker --connect` workers: the address the trainer binds,
    the spec each worker builds the model from, and the shared secret's key file (default
    wire.key_path(), created there on first use)."""

    address: str
    model: ModelSpec
    secret: Path | None = None


@dataclass
class Job:
    """Everything a worker needs to time placements of one model."""

    fingerprint: str
    model_name: str
    nodes: list[str]
    pm: str
    warmup: int
    threads: int
    clock: str = "wall"  # torch_tier.clocks: what the worker's measure() reads
    generate: int | None = None  # a timed run is a generate call of this many tokens (a generate graph's)
    spec: ModelSpec | None = None  # what remote workers build; local ones are given `workload`
    base_time: float | None = None  # seconds of the trainer's own all-DRAM forward: bounds the samples
    workload: tuple = field(default=(), repr=False)  # (model, inputs), for local workers

    @classmethod
    def of(cls, model: torch.nn.Module, inputs: tuple, model_name: str, nodes: list[str], pm: str, warmup: int,
           clock: str = "wall", spec: ModelSpec | None = None, base_time: float | None = None,
           generate: int | None = None) -> "Job":
        """The job for `model`, timed with this process's intra-op thread count on `clock`."""
        return cls(fingerprint(model), model_name, nodes, pm, warmup, torch.get_num_threads(), clock, generate,
                   spec, base_time, (model, inputs))

    def body(self, nonce: str, session: str) -> dict[str, Any]:
        """The job message for the worker whose hello carried `nonce`, opening `session`."""
        spec = None if self.spec is None else {"name": self.spec.name, "size": dict(self.spec.size)}
        return {"protocol": PROTOCOL, "type": "job", "session": session, "nonce": nonce,
                "fingerprint": self.fingerprint, "model": spec, "model_name": self.model_name, "nodes": self.nodes,
                "pm": self.pm, "warmup": self.warmup, "threads": self.threads, "clock": self.clock,
                "generate": self.generate}

    def bounds(self) -> tuple[float, float]:
        """The physically plausible seconds of one timed forward."""
        if self.base_time is None or not self.base_time > 0:
            return MIN_SECONDS, MAX_SECONDS
        return max(MIN_SECONDS, MIN_RATIO * self.base_time), min(MAX_SECONDS, MAX_RATIO * self.base_time)


# --- the trainer's side -----------------------------------------------------------

class Task(NamedTuple):
    """Placements to time in turn on one worker, `repeats` timed forwards each."""

    placements: list[np.ndarray]
    repeats: int


@dataclass
class _Worker:
    session: str
    nonce: str
    state: str  # "loading" (job sent) or "ready"
    since: float  # when the job or the current task was sent
    seen: float  # when its last message came
    pid: int = 0  # of a local worker, to notice its exit at once; 0 for remote ones
    task: int | None = None


class WorkerPool:
    """The trainer's side: binds `address`, hands the job to every worker that connects with the
    shared `secret` (local workers: a fresh one, given to them in a private file), spreads tasks
    over them and re-queues the tasks of workers that die, hang or misbehave."""

    def __init__(self, job: Job, address: str = "tcp://127.0.0.1:*", local: int = 0, secret: bytes | None = None,
                 timeout: float = 60.0, connect_timeout: float = 300.0,
                 heartbeat_timeout: float = HEARTBEAT_TIMEOUT):
        if not local and job.spec is None:
            raise ValueError("remote workers build the model themselves: they need its spec "
                             "(RemoteWorkers(address, ModelSpec(NAME, SIZE)); README, Remote workers)")
        self.job = job
        self.secret = secret or secrets.token_hex(32).encode()
        self.timeout = timeout  # seconds a task or a job load may take (raised to 10x the slowest task seen)
        self.connect_timeout = connect_timeout
        self.heartbeat_timeout = heartbeat_timeout
        self.rejections = wire.RejectionLog(log)  # a flood of bad messages must not flood the log
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        wire.bound(self.socket, MAX_TO_TRAINER)
        try:
            self.socket.bind(address)
        except zmq.ZMQError as err:
            self.socket.close()
            self.context.term()
            raise ValueError(f"cannot bind {address!r}: {err}") from None
        self.address = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.workers: dict[bytes, _Worker] = {}
        self._nonces: dict[str, bytes] = {}  # every hello's nonce, and who sent it
        self._folder = _private_folder(self.secret, job.workload) if local else None
        self.processes = [_spawn(self.address, self._folder) for _ in range(local)]
        self._unread = {p.pid for p in self.processes}  # local workers that may not have read the folder yet
        self._slowest = 0.0
        self._tasks: list[Task] = []
        self._pending: deque[int] = deque()
        self._results: dict[int, list[list[float]]] = {}
        self._failures: dict[int, int] = {}

    def run(self, tasks: list[tuple[np.ndarray, int]]) -> list[list[float]]:
        """Time each (placement, repeats), spread over the workers; each task's samples in seconds."""
        return [samples[0] for samples in self._run([Task([placement], repeats) for placement, repeats in tasks])]

    def side_by_side(self, groups: list[list[np.ndarray]], repeats: int) -> list[list[list[float]]]:
        """Time each group's placements in turn on one worker (the groups spread over the workers);
        for each group, each placement's `repeats` samples in seconds."""
        return self._run([Task(group, repeats) for group in groups])

    def _run(self, tasks: list[Task]) -> list[list[list[float]]]:
        self._tasks, self._pending, self._results, self._failures = tasks, deque(range(len(tasks))), {}, {}
        alone_since = time.monotonic()
        while len(self._results) < len(tasks):
            self._dispatch()
            self.poll(0.05)
            self._reap()
            if self.workers:
                alone_since = time.monotonic()
            elif self.processes and all(p.poll() is not None for p in self.processes):
                raise RuntimeError("every local evaluation worker has exited")
            elif time.monotonic() - alone_since > self.connect_timeout:
                raise RuntimeError(f"no evaluation worker connected to {self.address} "
                                   f"for {self.connect_timeout:.0f} s")
        return [self._results[i] for i in range(len(tasks))]

    def poll(self, timeout: float) -> None:
        """Handle the messages that arrive within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self.socket.poll(max(0, int((deadline - time.monotonic()) * 1000))):
            identity, *frames = wire.receive(self.socket, keep=3)
            self.receive(identity, frames)

    def receive(self, identity: bytes, frames: list[bytes]) -> bool:
        """Act on one message from peer `identity`: True if it was acted on; False if it was
        rejected, which is logged, and the peer, if it is one of the workers, dropped."""
        try:
            body = wire.unseal(self.secret, wire.TO_TRAINER, frames)
            self._handle(identity, check_message(body, TO_TRAINER))
        except WireError as err:
            if identity in self.workers:
                self._drop(identity, f"rejected its message: {err}", stop=True)
            else:
                self.rejections.warning("rejected a message from peer %s: %s", identity.hex()[:16], err)
            return False
        return True

    def _handle(self, identity: bytes, message: dict[str, Any]) -> None:
        kind, worker = message["type"], self.workers.get(identity)
        if kind == "hello":
            self._hello(identity, worker, message)
            return
        if worker is None:  # an authenticated worker this pool does not know, e.g. one of a restarted trainer
            log.info("worker %s is not one of this trainer's; told it to say hello", identity.hex()[:16])
            self._send(identity, "reset")
            return
        if message["session"] != worker.session:
            raise WireError(f"{kind} for another session")
        worker.seen = time.monotonic()
        if kind == "ready":
            self._ready(worker, message)
        elif kind == "result":
            self._accept(worker, message)
        elif kind == "rejected":
            self._rejected(identity, worker, message)

    def _hello(self, identity: bytes, worker: _Worker | None, message: dict[str, Any]) -> None:
        """Open a session for the worker and send it the job (once per hello nonce)."""
        nonce, now = message["nonce"], time.monotonic()
        sender = self._nonces.setdefault(nonce, identity)
        if sender != identity:
            raise WireError("hello replays another worker's nonce")
        if worker is not None and worker.nonce == nonce:  # said again before its job arrived
            worker.seen = now
            return
        if worker is not None and worker.task is not None:  # it reset mid-task
            self._pending.appendleft(worker.task)
        local = {p.pid for p in self.processes}
        pid = message["pid"] if message["host"] == socket.gethostname() and message["pid"] in local else 0
        session = secrets.token_hex(16)
        self.workers[identity] = _Worker(session, nonce, "loading", now, now, pid)
        self.socket.send_multipart([identity, *wire.seal(self.secret, wire.TO_WORKER, self.job.body(nonce, session))])

    def _ready(self, worker: _Worker, message: dict[str, Any]) -> None:
        if worker.state != "loading":
            raise WireError("ready, but it was not loading a job")
        if message["fingerprint"] != self.job.fingerprint:
            raise WireError(f"it built model {message['fingerprint']}, the job is {self.job.fingerprint}")
        worker.state = "ready"
        self._forget_folder({worker.pid})

    def _accept(self, worker: _Worker, message: dict[str, Any]) -> None:
        if worker.task != message["id"]:
            raise WireError(f"result for task {message['id']}, which this worker does not hold")
        if message["fingerprint"] != self.job.fingerprint:
            raise WireError(f"result for model {message['fingerprint']}, the job is {self.job.fingerprint}")
        task, samples = self._tasks[worker.task], message["samples"]
        if len(samples) != len(task.placements):
            raise WireError(f"samples for {len(samples)} placements, task {message['id']} has {len(task.placements)}")
        self._results[worker.task] = [self._samples(s, task.repeats) for s in samples]
        self._slowest = max(self._slowest, time.monotonic() - worker.since)
        worker.task = None

    def _samples(self, samples: list[float], repeats: int) -> list[float]:
        """`samples` as floats, if there is one per timed forward and each is physically plausible."""
        if len(samples) != repeats:
            raise WireError(f"{len(samples)} samples for {repeats} timed forwards")
        low, high = self.job.bounds()
        wrong = [s for s in samples if not low <= s <= high]
        if wrong:
            raise WireError(f"sample {wrong[0]!r} s is outside [{low:.3g}, {high:.3g}] s (from "
                            f"{MIN_RATIO:g} to {MAX_RATIO:g} times the trainer's all-DRAM forward)")
        return [float(s) for s in samples]

    def _rejected(self, identity: bytes, worker: _Worker, message: dict[str, Any]) -> None:
        log.warning("worker %s rejected a message: %r", identity.hex()[:16], message["reason"])
        if message["id"] is not None and message["id"] == worker.task:
            self._retry(worker, f"worker {identity.hex()[:16]} rejected it")
        elif worker.state == "loading":
            raise WireError("it could not load the job")

    def _send(self, identity: bytes, kind: str, **fields: Any) -> None:
        body = {"protocol": PROTOCOL, "type": kind, **fields}
        self.socket.send_multipart([identity, *wire.seal(self.secret, wire.TO_WORKER, body)])

    def _dispatch(self) -> None:
        for identity, worker in self.workers.items():
            if worker.state == "ready" and worker.task is None and self._pending:
                task = self._pending.popleft()
                placements, repeats = self._tasks[task]
                worker.task, worker.since = task, time.monotonic()
                self._send(identity, "evaluate", session=worker.session, id=task, fingerprint=self.job.fingerprint,
                           placements=[np.asarray(p).tolist() for p in placements], repeats=int(repeats))

    def _reap(self) -> None:
        """Drop workers whose process exited, that went quiet or that exceeded the timeout."""
        dead = {p.pid for p in self.processes if p.poll() is not None}
        self._forget_folder(dead)
        limit = max(self.timeout, 10 * self._slowest)
        now = time.monotonic()
        for identity, worker in list(self.workers.items()):
            if worker.pid in dead:
                self._drop(identity, "its process exited")
            elif now - worker.seen > self.heartbeat_timeout:
                self._drop(identity, f"no heartbeat in {self.heartbeat_timeout:g} s")
            elif now - worker.since > limit and (worker.task is not None or worker.state == "loading"):
                self._drop(identity, f"no answer in {limit:.0f} s")

    def _drop(self, identity: bytes, reason: str, stop: bool = False) -> None:
        """Forget a worker and re-queue its task; `stop`: tell it to stop too (one that sent a message
        rejected; one that was only slow or quiet is told to say hello again if it speaks again)."""
        worker = self.workers.pop(identity)
        if stop:
            self._send(identity, "stop", session=worker.session)
        if worker.task is not None:
            log.warning("worker %s lost (%s); task %d re-queued", identity.hex()[:16], reason, worker.task)
            self._pending.appendleft(worker.task)
        else:
            log.warning("worker %s lost (%s)", identity.hex()[:16], reason)

    def _forget_folder(self, done: set[int]) -> None:
        """Note local workers `done` with the private folder (ready: they read it; or exited), and
        delete it once every one is: its model and secret do not outlive the need, even if the
        trainer is then killed."""
        self._unread -= done
        if self._folder is not None and not self._unread:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def _retry(self, worker: _Worker, why: str) -> None:
        task, worker.task = worker.task, None
        self._failures[task] = self._failures.get(task, 0) + 1
        if self._failures[task] >= MAX_ATTEMPTS:
            raise RuntimeError(f"task {task} failed {MAX_ATTEMPTS} times (last: {why})")
        self._pending.appendleft(task)

    def close(self) -> None:
        """Stop every worker, local processes included, and release the socket and private files."""
        for identity, worker in self.workers.items():
            self._send(identity, "stop", session=worker.session)
        known = {worker.pid for worker in self.workers.values()}
        for process in self.processes:
            try:
                process.wait(5 if process.pid in known else 0)  # a dropped one may be hung
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.socket.close(linger=1000)  # time for the stops to leave
        self.context.term()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _private_folder(secret: bytes, workload: tuple) -> Path:
    """A new directory only this user can enter (mkdtemp: mode 0700), holding the local workers'
    secret and the trainer's (model, inputs), each created anew with mode 0600."""
    folder = Path(tempfile.mkdtemp(prefix="torch-tier-workers-"))
    with os.fdopen(os.open(folder / "worker.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
        f.write(secret)
    with os.fdopen(os.open(folder / "model.pt", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as f:
        torch.save(workload, f)
    return folder


def _spawn(address: str, folder: Path) -> subprocess.Popen:
    """A local worker process, given the secret and the model in `folder`; in its own session, so
    a Ctrl-C meant for the trainer spares it, and told the trainer's pid, so it dies with it. It
    registers the device models registered here, by reference (`--device NAME=MODULE:FUNCTION`)."""
    devices_args = [arg for name, ref in devices.registered_references().items() for arg in ("--device", f"{name}={ref}")]
    return subprocess.Popen([sys.executable, "-m", "torch_tier.cli", "worker", "--connect", address,
                             "--secret", str(folder / "worker.key"), "--model-file", str(folder / "model.pt"),
                             "--parent", str(os.getpid()), *devices_args],
                            stdout=subprocess.DEVNULL, start_new_session=True)


def load_given_model(path: Path) -> tuple[torch.nn.Module, tuple]:
    """The (model, inputs) a trainer saved for its local workers: unpickled only from a file of
    this user's that no one else can write, as the trainer's private folder holds."""
    with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb") as f:
        info = os.fstat(f.fileno())
        if info.st_uid != os.getuid() or info.st_mode & 0o022:
            raise ValueError(f"{path}: a model file must be this user's and writable by no one else")
        model, inputs = torch.load(f, weights_only=False)
    return model, inputs if isinstance(inputs, tuple) else (inputs,)


# --- the worker's side ------------------------------------------------------------

class Worker:
    """The worker's side: connects to a trainer, builds (or is given) the job's model and times the
    placements it is sent. It acts only on messages tagged with `secret`, builds only zoo models and
    the functions in `allowed_models`, and sends a heartbeat every HEARTBEAT_INTERVAL seconds, also
    while it builds or times (which happen on a thread of their own).

    model: the (model, inputs) to time instead of building the job's spec (a local worker's).
    parent: the pid of the trainer that started this worker: it exits when that process is gone.
    """

    def __init__(self, address: str, secret: bytes, allowed_models: Iterable[str] = (),
                 model: tuple[torch.nn.Module, tuple] | None = None, parent: int | None = None):
        self.secret = secret
        self.allowed_models = set(allowed_models)
        self.given = model
        self.parent = parent
        self.rejections = wire.RejectionLog(log)
        if parent is not None:
            _die_with_parent()
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        wire.bound(self.socket, MAX_TO_WORKER)
        try:
            self.socket.connect(address)
        except zmq.ZMQError as err:
            self.socket.close()
            self.context.term()
            raise ValueError(f"cannot connect to {address!r}: {err}") from None
        self.nonce: str | None = secrets.token_hex(16)  # of the hello awaiting its job
        self.session: str | None = None
        self.job: dict[str, Any] | None = None
        self.model: torch.nn.Module | None = None  # the job's, once built
        self.inputs: tuple = ()
        self.stopped = False
        self._next_beat = 0.0
        self._timer = _Timer()

    def serve(self) -> None:
        """Answer the trainer until it says stop, or (a local worker) until the trainer is gone."""
        poller = zmq.Poller()
        poller.register(self.socket, zmq.POLLIN)
        poller.register(self._timer.wake, zmq.POLLIN)
        while not self.stopped:
            if time.monotonic() >= self._next_beat:
                self._beat()
                self._next_beat = time.monotonic() + HEARTBEAT_INTERVAL
            ready = dict(poller.poll(max(0, int((self._next_beat - time.monotonic()) * 1000))))
            if self.socket in ready:
                self.receive(wire.receive(self.socket, keep=2))
            if self._timer.wake in ready:
                for done in self._timer.collect():
                    self._finish(*done)

    def receive(self, frames: list[bytes]) -> bool:
        """Act on one message: True if it was acted on; False if it was rejected, which is logged
        (and, for a message of this worker's session, answered with `rejected`)."""
        try:
            body = wire.unseal(self.secret, wire.TO_WORKER, frames)
        except WireError as err:
            self.rejections.warning("ignored a message: %s", err)
            return False
        try:
            self._handle(check_message(body, TO_WORKER))
        except WireError as err:
            self.rejections.warning("rejected a message from the trainer: %s", err)
            if self.session is not None and isinstance(body, dict) and body.get("session") == self.session:
                task = body.get("id") if body.get("type") == "evaluate" and type(body.get("id")) is int else None
                self._send("rejected", session=self.session, reason=str(err)[:MAX_REASON], id=task)
            return False
        return True

    def _beat(self) -> None:
        """A heartbeat: hello until a job comes, ping after; a local worker first checks its parent."""
        if self.parent is not None and os.getppid() != self.parent:
            log.warning("the trainer (process %d) is gone; exiting", self.parent)
            self.stopped = True
        elif self.session is None:
            self._send("hello", pid=os.getpid(), host=socket.gethostname(), nonce=self.nonce)
        else:
            self._send("ping", session=self.session)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "reset":
            self._reset()
        elif kind == "job":
            self._take(message)
        elif self.session is None or message["session"] != self.session:
            raise WireError(f"{kind} for another session")
        elif kind == "stop":
            self.stopped = True
        else:
            self._evaluate(message)

    def _reset(self) -> None:
        log.info("the trainer does not know this worker; saying hello again")
        self.nonce, self.session, self.job, self.model = secrets.token_hex(16), None, None, None
        self._next_beat = 0.0

    def _take(self, job: dict[str, Any]) -> None:
        """Open the job's session, then build its model on the timing thread (`ready` follows)."""
        if self.nonce is None or job["nonce"] != self.nonce:
            raise WireError("a job answering another hello (its nonce is not this worker's)")
        self.nonce, self.session, self.job, self.model = None, job["session"], job, None
        spec = job["model"]
        if self.given is None and spec is None:
            raise WireError("the job has no model spec and this worker was given no model (a trainer "
                            "called with a model object: give it a ModelSpec, see README, Remote workers)")
        if self.given is None and spec["name"] not in zoo.names() and spec["name"] not in self.allowed_models:
            raise WireError(f"model {spec['name']!r} is neither a zoo model nor allowed by --allow-model")
        self._timer.submit(self.session, "load", self._load, job)

    def _load(self, job: dict[str, Any]) -> tuple[torch.nn.Module, tuple]:
        """(On the timing thread.) The job's model and inputs, built or given, if its fingerprint is the job's."""
        torch.set_num_threads(job["threads"])  # here: the thread that runs the model
        if self.given is not None:
            model, inputs = self.given
        else:
            workload = zoo.resolve(job["model"]["name"], **job["model"]["size"])
            model, inputs = workload.model, workload.inputs
        if fingerprint(model) != job["fingerprint"]:
            raise ValueError(f"this worker's model is {fingerprint(model)}, the job's is {job['fingerprint']}")
        return model.eval(), inputs if isinstance(inputs, tuple) else (inputs,)

    def _evaluate(self, task: dict[str, Any]) -> None:
        if self.model is None or self._timer.busy:
            raise WireError(f"task {task['id']}: this worker is {'busy' if self.model else 'not ready'}")
        if task["fingerprint"] != self.job["fingerprint"]:
            raise WireError(f"task {task['id']} is for model {task['fingerprint']}, "
                            f"this worker holds {self.job['fingerprint']}")
        lengths = {len(placement) for placement in task["placements"]}
        if not task["placements"] or lengths != {len(self.job["nodes"])}:
            raise WireError(f"task {task['id']}: placements of {sorted(lengths)} [weight, activation] pairs "
                            f"for {len(self.job['nodes'])} nodes")
        self._timer.submit(self.session, task["id"], self._time, task["placements"], task["repeats"])

    def _time(self, placements: list[list[list[float]]], repeats: int) -> list[list[float]]:
        """(On the timing thread.) For each placement in turn, the samples of `repeats` timed forwards."""
        job, samples = self.job, []
        for placement in placements:
            policy = Policy(job["fingerprint"], job["model_name"],
                            nodes={path: placement_of(np.asarray(row)) for path, row in zip(job["nodes"], placement)})
            samples.append(list(measure(self.model, self.inputs, policy, pm=job["pm"], repeats=repeats,
                                        warmup=job["warmup"], clock=job["clock"], generate=job["generate"]).samples))
        return samples

    def _finish(self, session: str, tag: str | int, outcome: Any, error: Exception | None) -> None:
        """Report what the timing thread did for `session` (forgotten if the session has changed)."""
        if session != self.session:
            return
        if tag == "load" and error is None:
            self.model, self.inputs = outcome
            self._send("ready", session=session, fingerprint=self.job["fingerprint"])
        elif tag == "load":
            self._send("rejected", session=session, reason=f"cannot build the job's model: {error!r}"[:MAX_REASON],
                       id=None)
        elif error is None:
            self._send("result", session=session, id=tag, fingerprint=self.job["fingerprint"], samples=outcome)
        else:  # the trainer re-queues it, and gives up after MAX_ATTEMPTS
            self._send("rejected", session=session, reason=f"task {tag} failed: {error!r}"[:MAX_REASON], id=tag)

    def _send(self, kind: str, **fields: Any) -> None:
        body = {"protocol": PROTOCOL, "type": kind, **fields}
        try:
            self.socket.send_multipart(wire.seal(self.secret, wire.TO_TRAINER, body), flags=zmq.NOBLOCK)
        except zmq.Again:  # no trainer connected yet: the next heartbeat tries again
            pass

    def close(self) -> None:
        self._timer.close()
        self.socket.close()
        self.context.term()


class _Timer:
    """The worker's one thread for slow calls (building the model, timing), so that its socket
    thread keeps the heartbeat going; each finished call waits in a queue, and `wake` (a pipe)
    becomes readable. One thread for every call: torch's intra-op pool and tier state stay put."""

    def __init__(self) -> None:
        self.wake, self._signal = os.pipe()
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._done: queue.SimpleQueue = queue.SimpleQueue()
        self._pending = 0
        threading.Thread(target=self._run, name="torch-tier-timing", daemon=True).start()

    @property
    def busy(self) -> bool:
        return self._pending > 0

    def submit(self, session: str, tag: str | int, call: Callable[..., Any], *args: Any) -> None:
        self._pending += 1
        self._calls.put((session, tag, call, args))

    def collect(self) -> list[tuple[str, str | int, Any, Exception | None]]:
        """The calls finished since the last collect: (session, tag, outcome, error)."""
        os.read(self.wake, 4096)
        done = []
        while not self._done.empty():
            done.append(self._done.get())
        self._pending -= len(done)
        return done

    def _run(self) -> None:
        while (call := self._calls.get()) is not None:
            session, tag, function, args = call
            try:
                self._done.put((session, tag, function(*args), None))
            except Exception as err:  # reported to the trainer, which re-queues the task
                self._done.put((session, tag, None, err))
            try:
                os.write(self._signal, b"!")
            except OSError:  # the worker closed: no one is listening
                break
        os.close(self._signal)

    def close(self) -> None:
        """End the thread once its current call returns."""
        self._calls.put(None)
        os.close(self.wake)


def _die_with_parent() -> None:
    """Have the kernel end this process when its parent exits (Linux's PR_SET_PDEATHSIG); elsewhere
    the heartbeat's check of the parent's pid does it."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
