"""Evaluation workers over pyzmq: the trainer binds, workers connect, placements go out, timings come back.

MARL timed its candidates on a separate PM server over RPC; so does this.
`torch-tier worker --connect tcp://HOST:PORT` runs a worker: it receives the
job once (the model and example inputs serialised with torch.save, the node
paths, the pm spec, the warm-up count, and the trainer's intra-op thread
count, so every worker times with the threads the user chose), checks the
model's fingerprint, and then times the placements it is sent with
torch_tier.measure(), the model loaded once and each placement reapplied. The
trainer (WorkerPool) binds a ROUTER socket and uses every worker that
connects; local workers are the same program started as subprocesses.

A task is a group of placements timed side by side on one worker: a
measure() of each in turn (`repeats` timed forwards after the warm-up), so
drifts of the machine's speed fall on all of them alike. A group of one is a
plain timing (WorkerPool.run); a group of two is a pair of racing's paired
runs (racing.py), a group of all the compared placements one round of a
comparison (WorkerPool.side_by_side). Tasks are spread over the workers, so
many pairs or rounds are timed at once, each within one process, and no task
is longer than one round.

Protocol (version PROTOCOL): every message is a JSON header frame, plus one
binary frame for the job's model. Headers carry `protocol` and `type`:

  worker -> trainer   hello {pid, host}; ping {fingerprint|null} when idle;
                      ready {fingerprint}; result {id, fingerprint, samples}
                      (samples: `repeats` seconds for each placement);
                      rejected {reason, id?}
  trainer -> worker   job {fingerprint, model_name, nodes, pm, warmup, threads}
                      + model; evaluate {id, fingerprint, placements, repeats};
                      stop

A message that is not valid JSON, lacks a field, has another protocol version
or names another model's fingerprint is rejected, and the reason is logged
(a worker also answers `rejected`). A worker that dies (a local process that
exits) or that does not answer within the task timeout loses its task, which
is re-queued for another worker; training goes on. A worker that comes back
is sent the job again.

Security: the job's model is unpickled by the worker; connect workers only to
trainers you trust, on networks you trust.
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
import zmq

from .. import devices
from ..timing import measure
from ..policy import Placement, Policy, fingerprint
from ..tiers import TIER_NAMES

PROTOCOL = 2
PING_INTERVAL = 2.0  # seconds an idle worker waits before telling the trainer it is there
MAX_ATTEMPTS = 3  # times one task may be rejected by workers before training stops
log = logging.getLogger(__name__)

# Required fields and their types, per message type.
FIELDS: dict[str, dict[str, type | tuple[type, ...]]] = {
    "hello": {"pid": int, "host": str},
    "ping": {"fingerprint": (str, type(None))},
    "ready": {"fingerprint": str},
    "result": {"id": int, "fingerprint": str, "samples": list},
    "rejected": {"reason": str},
    "job": {"fingerprint": str, "model_name": str, "nodes": list, "pm": str, "warmup": int, "threads": int},
    "evaluate": {"id": int, "fingerprint": str, "placements": list, "repeats": int},
    "stop": {},
}


class ProtocolError(ValueError):
    """A message this side will not act on; the text is the logged reason."""


def encode(kind: str, payload: bytes | None = None, **fields: Any) -> list[bytes]:
    frames = [json.dumps({"protocol": PROTOCOL, "type": kind, **fields}).encode()]
    return frames + ([payload] if payload is not None else [])


def decode(frames: list[bytes]) -> tuple[dict, bytes | None]:
    """The header and optional payload of a message; ProtocolError says why it is unusable."""
    if not frames or len(frames) > 2:
        raise ProtocolError(f"expected 1 or 2 frames, got {len(frames)}")
    try:
        header = json.loads(frames[0])
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ProtocolError(f"header is not JSON ({err})") from None
    if not isinstance(header, dict):
        raise ProtocolError(f"header is a {type(header).__name__}, not an object")
    if header.get("protocol") != PROTOCOL:
        raise ProtocolError(f"protocol version {header.get('protocol')!r}, this side speaks {PROTOCOL}")
    kind = header.get("type")
    if kind not in FIELDS:
        raise ProtocolError(f"unknown message type {kind!r}")
    for name, types in FIELDS[kind].items():
        if not isinstance(header.get(name), types) or isinstance(header.get(name), bool):
            raise ProtocolError(f"{kind}: field {name!r} missing or of the wrong type")
    if (kind == "job") != (len(frames) == 2):
        raise ProtocolError(f"{kind}: {'missing' if kind == 'job' else 'unexpected'} payload frame")
    return header, frames[1] if len(frames) == 2 else None


@dataclass
class Job:
    """Everything a worker needs to time placements of one model."""

    fingerprint: str
    model_name: str
    nodes: list[str]
    pm: str
    warmup: int
    threads: int
    model: bytes = field(repr=False)  # torch.save((model, inputs))

    @classmethod
    def of(cls, model: torch.nn.Module, inputs: tuple, model_name: str, nodes: list[str], pm: str,
           warmup: int) -> "Job":
        """The job for `model`, timed with this process's intra-op thread count."""
        buffer = io.BytesIO()
        torch.save((model, inputs), buffer)
        return cls(fingerprint(model), model_name, nodes, pm, warmup, torch.get_num_threads(), buffer.getvalue())

    def message(self) -> list[bytes]:
        return encode("job", self.model, fingerprint=self.fingerprint, model_name=self.model_name,
                      nodes=self.nodes, pm=self.pm, warmup=self.warmup, threads=self.threads)


class Task(NamedTuple):
    """Placements to time in turn on one worker, `repeats` timed forwards each."""

    placements: list[np.ndarray]
    repeats: int


@dataclass
class _Worker:
    state: str  # "loading" (job sent) or "ready"
    since: float  # when the job or the current task was sent
    pid: int = 0  # of a worker on this host, to notice its exit at once; 0 for remote ones
    task: int | None = None


class WorkerPool:
    """The trainer's side: binds `address`, hands the job to every worker that connects,
    spreads tasks over them and re-queues the tasks of workers that die or hang."""

    def __init__(self, job: Job, address: str = "tcp://127.0.0.1:*", local: int = 0,
                 timeout: float = 60.0, connect_timeout: float = 300.0):
        self.job = job
        self.timeout = timeout  # seconds a task or a job load may take (raised to 10x the slowest task seen)
        self.connect_timeout = connect_timeout
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(address)
        self.address = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.workers: dict[bytes, _Worker] = {}
        self.processes = [_spawn(self.address) for _ in range(local)]
        self.job_message = job.message()
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
            identity, *frames = self.socket.recv_multipart()
            try:
                self._handle(identity, *decode(frames))
            except ProtocolError as err:
                log.warning("rejected a message from worker %s: %s", identity.hex(), err)

    def _handle(self, identity: bytes, header: dict, _payload: bytes | None) -> None:
        kind, worker = header["type"], self.workers.get(identity)
        if kind == "hello" or (kind == "ping" and worker is None):
            self._send_job(identity, header.get("pid", 0), header.get("host", ""))
        elif kind == "ready":
            if worker is None:
                raise ProtocolError("ready without having been sent the job")
            if header["fingerprint"] != self.job.fingerprint:
                del self.workers[identity]
                self.socket.send_multipart([identity, *encode("stop")])
                raise ProtocolError(f"worker loaded model {header['fingerprint']}, "
                                    f"the job is {self.job.fingerprint}; stopped it")
            worker.state = "ready"
        elif kind == "result":
            self._accept(identity, worker, header)
        elif kind == "ping":  # a known worker, idle between tasks: nothing to do
            return
        elif kind == "rejected":
            log.warning("worker %s rejected a message: %s", identity.hex(), header["reason"])
            if worker is not None and worker.task is not None and header.get("id") == worker.task:
                self._retry(worker, f"worker {identity.hex()} rejected it")
        else:
            raise ProtocolError(f"{kind} is a trainer-to-worker message")

    def _accept(self, identity: bytes, worker: _Worker | None, header: dict) -> None:
        if worker is None or worker.task != header["id"]:
            raise ProtocolError(f"result for task {header['id']}, which this worker does not hold")
        if header["fingerprint"] != self.job.fingerprint:
            raise ProtocolError(f"result for model {header['fingerprint']}, the job is {self.job.fingerprint}")
        task, samples = self._tasks[worker.task], header["samples"]
        if len(samples) != len(task.placements) or not all(
                isinstance(s, list) and len(s) == task.repeats and all(isinstance(x, (int, float)) and x > 0 for x in s)
                for s in samples):
            raise ProtocolError(f"result for task {header['id']}: expected {task.repeats} positive samples "
                                f"for each of its {len(task.placements)} placements")
        self._results[worker.task] = [[float(x) for x in s] for s in samples]
        self._slowest = max(self._slowest, time.monotonic() - worker.since)
        worker.task = None

    def _send_job(self, identity: bytes, pid: int, host: str) -> None:
        local = pid if host == socket.gethostname() else 0
        previous = self.workers.get(identity)
        if previous is not None and previous.task is not None:  # it restarted mid-task
            self._pending.appendleft(previous.task)
        self.workers[identity] = _Worker("loading", time.monotonic(), local)
        self.socket.send_multipart([identity, *self.job_message])

    def _dispatch(self) -> None:
        for identity, worker in self.workers.items():
            if worker.state == "ready" and worker.task is None and self._pending:
                task = self._pending.popleft()
                placements, repeats = self._tasks[task]
                worker.task, worker.since = task, time.monotonic()
                self.socket.send_multipart([identity, *encode(
                    "evaluate", id=task, fingerprint=self.job.fingerprint,
                    placements=[np.asarray(p).tolist() for p in placements], repeats=int(repeats))])

    def _reap(self) -> None:
        """Drop workers whose process exited or that exceeded the timeout; re-queue their tasks."""
        dead = {p.pid for p in self.processes if p.poll() is not None}
        limit = max(self.timeout, 10 * self._slowest)
        now = time.monotonic()
        for identity, worker in list(self.workers.items()):
            if worker.pid in dead:
                reason = "its process exited"
            elif now - worker.since > limit and (worker.task is not None or worker.state == "loading"):
                reason = f"no answer in {limit:.0f} s"
            else:
                continue
            del self.workers[identity]
            if worker.task is not None:
                log.warning("worker %s lost (%s); task %d re-queued", identity.hex(), reason, worker.task)
                self._pending.appendleft(worker.task)
            else:
                log.warning("worker %s lost (%s)", identity.hex(), reason)

    def _retry(self, worker: _Worker, why: str) -> None:
        task, worker.task = worker.task, None
        self._failures[task] = self._failures.get(task, 0) + 1
        if self._failures[task] >= MAX_ATTEMPTS:
            raise RuntimeError(f"task {task} failed {MAX_ATTEMPTS} times (last: {why})")
        self._pending.appendleft(task)

    def close(self) -> None:
        """Stop every worker, local processes included, and release the socket."""
        for identity in self.workers:
            self.socket.send_multipart([identity, *encode("stop")], flags=zmq.NOBLOCK)
        known = {worker.pid for worker in self.workers.values()}
        for process in self.processes:
            try:
                process.wait(5 if process.pid in known else 0)  # a dropped one has no way to hear stop
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.socket.close()
        self.context.term()

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _spawn(address: str) -> subprocess.Popen:
    """A local worker process; in its own session, so a Ctrl-C meant for the trainer spares it.
    It registers the device models registered here, by reference (`--device NAME=MODULE:FUNCTION`)."""
    devices_args = [arg for name, ref in devices.registered_references().items() for arg in ("--device", f"{name}={ref}")]
    return subprocess.Popen([sys.executable, "-m", "torch_tier.cli", "worker", "--connect", address, *devices_args],
                            stdout=subprocess.DEVNULL, start_new_session=True)


class Worker:
    """The worker's side: holds the job's model and times the placements it is sent."""

    def __init__(self, address: str):
        self.context = zmq.Context()
        self.socket = self.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(address)
        self.job: dict | None = None
        self.model: torch.nn.Module | None = None
        self.inputs: tuple = ()

    def serve(self) -> None:
        """Answer messages until the trainer says stop."""
        self._send("hello", pid=os.getpid(), host=socket.gethostname())
        while True:
            if not self.socket.poll(int(PING_INTERVAL * 1000)):
                self._send("ping", fingerprint=self.job["fingerprint"] if self.job else None)
                continue
            try:
                header, payload = decode(self.socket.recv_multipart())
                if header["type"] == "stop":
                    return
                self._handle(header, payload)
            except ProtocolError as err:
                log.warning("rejected a message from the trainer: %s", err)
                task = {"id": err.task} if isinstance(err, _TaskError) else {}
                self._send("rejected", reason=str(err), **task)

    def _handle(self, header: dict, payload: bytes | None) -> None:
        if header["type"] == "job":
            self._load(header, payload)
        elif header["type"] == "evaluate":
            self._evaluate(header)
        else:
            raise ProtocolError(f"{header['type']} is a worker-to-trainer message")

    def _load(self, header: dict, payload: bytes) -> None:
        try:
            model, inputs = torch.load(io.BytesIO(payload), weights_only=False)
        except Exception as err:
            raise ProtocolError(f"cannot load the job's model: {err!r}") from err
        if fingerprint(model) != header["fingerprint"]:
            raise ProtocolError(f"job model's fingerprint is {fingerprint(model)}, "
                                f"the job says {header['fingerprint']}")
        self.job, self.model, self.inputs = header, model.eval(), tuple(inputs)
        torch.set_num_threads(max(1, header["threads"]))
        self._send("ready", fingerprint=header["fingerprint"])

    def _evaluate(self, header: dict) -> None:
        if self.job is None or header["fingerprint"] != self.job["fingerprint"]:
            raise _TaskError(header["id"], f"task {header['id']} is for model {header['fingerprint']}, "
                                           f"this worker holds {self.job and self.job['fingerprint']}")
        placements, nodes = header["placements"], len(self.job["nodes"])
        well_formed = placements and all(
            isinstance(placement, list) and len(placement) == nodes and
            all(isinstance(p, list) and len(p) == 2 and all(t in (0, 1) for t in p) for p in placement)
            for placement in placements)
        if not well_formed or header["repeats"] < 1:
            raise _TaskError(header["id"], f"task {header['id']}: expected placements of {nodes} "
                                           f"[weight, activation] pairs of 0/1 and repeats >= 1")
        samples = []
        for placement in placements:
            policy = Policy(self.job["fingerprint"], self.job["model_name"],
                            nodes={path: Placement(TIER_NAMES[w], TIER_NAMES[a])
                                   for path, (w, a) in zip(self.job["nodes"], placement)})
            try:
                result = measure(self.model, self.inputs, policy, pm=self.job["pm"], repeats=header["repeats"],
                                 warmup=self.job["warmup"])
            except Exception as err:  # the trainer re-queues it, and gives up after MAX_ATTEMPTS
                raise _TaskError(header["id"], f"task {header['id']} failed: {err!r}") from err
            samples.append(list(result.samples))
        self._send("result", id=header["id"], fingerprint=self.job["fingerprint"], samples=samples)

    def _send(self, kind: str, **fields: Any) -> None:
        try:
            self.socket.send_multipart(encode(kind, **fields), flags=zmq.NOBLOCK)
        except zmq.Again:  # no trainer connected yet: the next ping tries again
            pass

    def close(self) -> None:
        self.socket.close()
        self.context.term()


class _TaskError(ProtocolError):
    """A rejected task: the trainer is told which, so it can re-queue it."""

    def __init__(self, task: int, reason: str):
        super().__init__(reason)
        self.task = task
