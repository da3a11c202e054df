"""The trainer's port and its workers on hostile input: authentication, bounded parsing, checked
fields and results, heartbeats, and local workers that die with their trainer (issue 12)."""

import json
import logging
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections import deque

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from torch_tier import cli, zoo
from torch_tier.trainer import ModelSpec, wire
from torch_tier.trainer import workers as workers_module
from torch_tier.trainer.fitness import measured
from torch_tier.trainer.wire import WireError
from torch_tier.trainer.workers import (
    HEARTBEAT_TIMEOUT,
    MAX_TO_TRAINER,
    PROTOCOL,
    TO_TRAINER,
    Job,
    Task,
    Worker,
    WorkerPool,
    check_message,
)

from conftest import small_cnn

SECRET = b"0123456789abcdef" * 4
SPEC = ModelSpec("resnet50", {"width": 0.25, "depth": 0.34, "image_size": 32})
LOGGER = "torch_tier.trainer.workers"


@pytest.fixture(scope="module")
def tiny():
    """The zoo model SPEC names, built as a worker builds it."""
    workload = zoo.resolve(SPEC.name, **SPEC.size)
    return workload.model, workload.inputs


def _job(model, inputs, spec=SPEC, base_time=None) -> Job:
    nodes = [name for name, _ in model.named_modules()]
    return Job.of(model, inputs, "model", nodes, "sim:optane-100", warmup=0, spec=spec, base_time=base_time)


class Peer:
    """A worker's socket driven by hand: sends what a test says, tagged with `secret`."""

    def __init__(self, pool: WorkerPool, secret: bytes = SECRET):
        self.pool, self.secret = pool, secret
        self.socket = pool.context.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(pool.address)
        self.session = None

    def send(self, kind: str, **fields) -> None:
        self.raw(wire.seal(self.secret, wire.TO_TRAINER, {"protocol": PROTOCOL, "type": kind, **fields}))

    def raw(self, frames: list[bytes]) -> None:
        self.socket.send_multipart(frames)
        self.pool.poll(0.3)

    def recv(self, timeout: float = 0.5) -> dict | None:
        if not self.socket.poll(int(timeout * 1000)):
            return None
        return wire.unseal(self.secret, wire.TO_WORKER, self.socket.recv_multipart())

    def join(self) -> dict:
        """Say hello and become ready; returns the job."""
        self.send("hello", pid=1, host="elsewhere", nonce=os.urandom(16).hex())
        job = self.recv()
        self.session = job["session"]
        self.send("ready", session=self.session, fingerprint=job["fingerprint"])
        return job

    def close(self) -> None:
        self.socket.close()


def _hello(nonce: str = "0" * 32) -> dict:
    return {"protocol": PROTOCOL, "type": "hello", "pid": 1, "host": "h", "nonce": nonce}


# --- the shared secret -----------------------------------------------------------------


def test_the_trainer_creates_a_user_only_secret_that_a_worker_finds(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_TIER_CACHE", str(tmp_path / "cache"))
    assert wire.key_path() == tmp_path / "cache" / "worker.key"
    secret = wire.trainer_secret()
    assert stat.S_IMODE(os.stat(wire.key_path()).st_mode) == 0o600 and len(secret) >= wire.MIN_SECRET
    assert wire.trainer_secret() == secret == wire.read_secret(wire.key_path())  # created once


@pytest.mark.parametrize("case, reason", [("missing", "no key file"), ("open", "open to others"),
                                          ("short", "at least 32"), ("link", "cannot open")])
def test_a_bad_key_file_is_refused_with_its_reason(tmp_path, case, reason):
    path = tmp_path / "worker.key"
    if case in ("open", "short"):
        path.write_text("x" * (10 if case == "short" else 64))
        path.chmod(0o644 if case == "open" else 0o600)
    if case == "link":  # a link planted where the secret goes: neither written through nor read
        (tmp_path / "elsewhere").write_text("y" * 64)
        path.symlink_to(tmp_path / "elsewhere")
        with pytest.raises(FileExistsError):
            wire.create_secret(path)
    with pytest.raises(wire.SecretError, match=reason):
        wire.read_secret(path)


def test_worker_cli_refuses_a_missing_secret_cleanly(tmp_path):
    run = subprocess.run([sys.executable, "-m", "torch_tier.cli", "worker", "--connect", "tcp://127.0.0.1:9",
                          "--secret", str(tmp_path / "none.key")], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "none.key: no key file" in run.stderr and "Traceback" not in run.stderr


def test_train_creates_its_secret_where_secret_says_and_refuses_one_open_to_others(tmp_path, capsys):
    key = tmp_path / "keys" / "trainer.key"
    argv = ["train", "no-such-model", "--fitness", "measured", "--workers", "tcp://127.0.0.1:0",
            "--secret", str(key), "--out", str(tmp_path / "p.json")]
    assert cli.main(argv) == 2  # the model: the flags, the secret first
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(wire.read_secret(key)) == 64
    key.chmod(0o640)
    assert cli.main(argv) == 2 and "open to others (mode 640)" in capsys.readouterr().err


def test_a_worker_looks_for_the_secret_in_the_cache_without_a_flag(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_TIER_CACHE", str(tmp_path))
    assert cli.main(["worker", "--connect", "tcp://127.0.0.1:9"]) == 2
    assert f"{tmp_path / 'worker.key'}: no key file" in capsys.readouterr().err


def test_remote_workers_need_a_model_spec(tiny):
    """train(model, ..., workers="tcp://...") has no spec to send: a ValueError says what to pass."""
    model, inputs = tiny
    with pytest.raises(ValueError, match=r"workers=RemoteWorkers\('tcp://127.0.0.1:0', ModelSpec"):
        with measured(model, inputs, None, "sim:optane-100", workers="tcp://127.0.0.1:0"):
            pass
    with pytest.raises(ValueError, match="need its spec"):
        WorkerPool(_job(model, inputs, spec=None))


# --- the trainer's side ----------------------------------------------------------------


def test_an_unauthenticated_peer_gets_nothing(tiny, caplog):
    model, inputs = tiny
    with WorkerPool(_job(model, inputs), secret=SECRET) as pool:
        stranger = Peer(pool, secret=b"not the secret, but long enough to be one")
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            stranger.send("hello", pid=1, host="h", nonce="1" * 32)
            stranger.raw([json.dumps(_hello()).encode()])  # protocol 1's untagged hello
            assert stranger.recv() is None and not pool.workers
        assert caplog.text.count("bad authentication tag") == 1 and "expected 2 frames" in caplog.text
        stranger.close()


def test_the_job_is_json_naming_the_model_spec_not_a_pickle(tiny):
    model, inputs = tiny
    with WorkerPool(_job(model, inputs), secret=SECRET) as pool:
        peer = Peer(pool)
        peer.send("hello", pid=1, host="h", nonce="2" * 32)
        peer.socket.poll(500)
        body, tag = peer.socket.recv_multipart()
        job = json.loads(body)
        assert job["model"] == {"name": "resnet50", "size": SPEC.size} and job["nonce"] == "2" * 32
        assert job["type"] == "job" and len(tag) == 32
        peer.close()


P = b'{"protocol":%d,' % PROTOCOL
HOSTILE = {  # name: (body, the reason logged)
    "nested 100,000 deep": (P + b'"type":"hello","pid":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested 100001 deep"),
    "an integer of 5,000 digits": (P + b'"type":"hello","pid":' + b"9" * 5000 + b"}", "integer of 5000 digits"),
    "an overflowing float": (P + b'"type":"ping","session":1e400}', "number 1e400 is out of range"),
    "NaN": (P + b'"type":"ping","session":NaN}', "NaN is not a number"),
    "not UTF-8": (P + b'"type":"\xff\xfe"}', "not JSON"),
    "not an object": (b"[1, 2, 3]", "not a JSON object"),
    "another protocol": (json.dumps({**_hello(), "protocol": 1}).encode(), "protocol version 1,"),
    "a boolean for an integer": (json.dumps({**_hello(), "pid": True}).encode(), "hello.pid is a boolean"),
    "a float for an integer": (json.dumps({**_hello(), "pid": 1.0}).encode(), "hello.pid is a number"),
    "an unknown field": (json.dumps({**_hello(), "extra": 1}).encode(), "unknown field(s) 'extra'"),
    "a missing field": (json.dumps({k: v for k, v in _hello().items() if k != "nonce"}).encode(),
                        "field 'nonce' missing"),
    "a bad nonce": (json.dumps({**_hello(), "nonce": "x"}).encode(), "hello.nonce = 'x' is not of the form"),
    "a trainer's message": (json.dumps({"protocol": PROTOCOL, "type": "stop", "session": "0" * 32}).encode(),
                            "unexpected message type 'stop'"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_a_malformed_message_is_logged_and_never_ends_the_run(tiny, caplog, name):
    """Every one of these escaped the trainer's poll before (RecursionError, ValueError, ...)."""
    model, inputs = tiny
    with WorkerPool(_job(model, inputs), secret=SECRET) as pool:
        peer = Peer(pool)
        body, reason = HOSTILE[name]
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            peer.raw([body, wire.hmac.new(SECRET, wire.TO_TRAINER + body, wire.hashlib.sha256).digest()])
        assert "rejected a message from peer" in caplog.text and reason in caplog.text and not pool.workers
        peer.join()  # the same peer, well-formed now, is served
        assert len(pool.workers) == 1
        peer.close()


def test_oversized_and_many_framed_messages_are_dropped_before_parsing(tiny, caplog):
    model, inputs = tiny
    with WorkerPool(_job(model, inputs), secret=SECRET) as pool:
        peer = Peer(pool)
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            peer.raw([b"x" * (MAX_TO_TRAINER + 1), b"t" * 32])  # over MAXMSGSIZE: zmq drops the peer
            peer.raw([b"{}"] * 1000)
        assert "expected 2 frames (body, tag), got more than 2" in caplog.text and not pool.workers
        peer.close()


def test_a_replayed_hello_or_another_session_gets_no_task(tiny, caplog):
    model, inputs = tiny
    with WorkerPool(_job(model, inputs), secret=SECRET) as pool:
        honest, replayer = Peer(pool), Peer(pool)
        hello = wire.seal(SECRET, wire.TO_TRAINER, _hello("3" * 32))
        honest.raw(hello)
        assert honest.recv()["type"] == "job"
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            replayer.raw(hello)  # recorded on the wire, sent again from another connection
            assert replayer.recv() is None and "replays another worker's nonce" in caplog.text
            replayer.send("ping", session="4" * 32)  # authentic, but not one of this pool's workers
            assert replayer.recv()["type"] == "reset"
        honest.close()
        replayer.close()


@pytest.mark.parametrize("samples, reason", [
    ([0.001] * 2, "2 samples for 3"), ([-1.0] * 3, "outside"), ([0.0] * 3, "outside"),
    ([1e-9] * 3, "outside"), ([1e3] * 3, "outside"), ([0.001, 0.001, "0.001"], "not a number"),
    ([0.001, 0.001, True], "not a number"), ([0.001, 0.001, 10 ** 30], "digits"),
    ([[0.001] * 3] * 2, "samples for 2 placements, task 0 has 1"),
])
def test_results_outside_physical_bounds_drop_the_worker_and_requeue_its_task(tiny, caplog, samples, reason):
    model, inputs = tiny
    with WorkerPool(_job(model, inputs, base_time=0.01), secret=SECRET) as pool:
        peer = Peer(pool)
        job = peer.join()
        pool._tasks, pool._pending = [Task([np.zeros((len(job["nodes"]), 2), np.int8)], 3)], deque([0])
        pool._dispatch()
        task = peer.recv()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            peer.send("result", session=peer.session, id=task["id"], fingerprint=job["fingerprint"],
                      samples=samples if samples and isinstance(samples[0], list) else [samples])
        assert reason in caplog.text and "task 0 re-queued" in caplog.text
        assert not pool.workers and list(pool._pending) == [0] and not pool._results
        assert peer.recv()["type"] == "stop"
        peer.close()


def test_a_worker_that_stops_its_heartbeat_loses_its_task_without_stalling_the_others(tiny, caplog):
    """Before: a dead remote worker held its task for the 60 s task timeout while the others waited."""
    model, inputs = tiny
    assert HEARTBEAT_TIMEOUT <= 10
    with WorkerPool(_job(model, inputs), secret=SECRET, heartbeat_timeout=1.5) as pool:
        silent = Peer(pool)
        silent.join()  # ready: it takes the first task, then says nothing more
        worker = Worker(pool.address, SECRET, model=(model, inputs))
        thread = threading.Thread(target=worker.serve, daemon=True)
        thread.start()
        placement = np.zeros((len(pool.job.nodes), 2), np.int8)
        start = time.monotonic()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            results = pool.run([(placement, 1)] * 4)
        assert len(results) == 4 and time.monotonic() - start < 10
        assert "(no heartbeat in 1.5 s); task 0 re-queued" in caplog.text
        silent.close()
    thread.join(10)
    assert not thread.is_alive()
    worker.close()


# --- the worker's side -----------------------------------------------------------------


class Trainer:
    """A trainer's socket driven by hand, with one Worker serving it on a thread."""

    def __init__(self, worker_options: dict, secret: bytes = SECRET):
        self.context = zmq.Context.instance()
        self.socket = self.context.socket(zmq.ROUTER)
        self.socket.setsockopt(zmq.LINGER, 0)
        port = self.socket.bind_to_random_port("tcp://127.0.0.1")
        self.worker = Worker(f"tcp://127.0.0.1:{port}", SECRET, **worker_options)
        self.thread = threading.Thread(target=self.worker.serve, daemon=True)
        self.thread.start()
        self.secret, self.session = secret, "5" * 32
        self.identity, hello = self.recv(skip=())
        assert hello["type"] == "hello"
        self.nonce = hello["nonce"]

    def recv(self, timeout: float = 30, skip: tuple[str, ...] = ("ping", "hello")) -> tuple[bytes, dict]:
        """The next message that is not a heartbeat (a ping, or a hello before the job)."""
        deadline = time.monotonic() + timeout
        while self.socket.poll(int(max(0, deadline - time.monotonic()) * 1000)):
            identity, *frames = self.socket.recv_multipart()
            body = wire.unseal(SECRET, wire.TO_TRAINER, frames)
            if body["type"] not in skip:
                return identity, body
        raise TimeoutError("the worker said nothing")

    def send(self, kind: str, **fields) -> None:
        self.send_body({"protocol": PROTOCOL, "type": kind, **fields})

    def send_body(self, body: dict) -> None:
        self.socket.send_multipart([self.identity, *wire.seal(self.secret, wire.TO_WORKER, body)])

    def job(self, job: Job) -> dict:
        self.send_body(job.body(self.nonce, self.session))
        return self.recv()[1]

    def close(self) -> None:
        self.send("stop", session=self.session)
        self.thread.join(10)
        assert not self.thread.is_alive()
        self.worker.close()
        self.socket.close()


def test_a_worker_builds_the_model_from_its_spec_and_checks_the_fingerprint(tiny):
    model, inputs = tiny
    trainer = Trainer({})
    assert trainer.job(_job(model, inputs)) == {"protocol": PROTOCOL, "type": "ready", "session": trainer.session,
                                                "fingerprint": _job(model, inputs).fingerprint}
    assert trainer.worker.model is not None and trainer.worker.model is not model  # its own
    trainer.close()


@pytest.mark.parametrize("spec, reason", [
    (ModelSpec("resnet50", {"width": 0.5, "depth": 0.34, "image_size": 32}), "the job's is"),
    (ModelSpec("os:system", {"command": "touch /tmp/owned"}), "neither a zoo model nor allowed"),
    (None, "no model spec"),
])
def test_a_worker_refuses_a_job_it_must_not_or_cannot_build(tiny, spec, reason):
    model, inputs = tiny
    trainer = Trainer({})
    answer = trainer.job(_job(model, inputs, spec=spec))
    assert answer["type"] == "rejected" and reason in answer["reason"] and answer["id"] is None
    trainer.close()


BAD_TASKS = {
    "a share above 1": ([[1.5, 0]], 1, "outside [0, 1]"),
    "booleans for tiers": ([[True, 0]], 1, "not a number"),
    "a tier of 2": ([[2, 0]], 1, "outside [0, 1]"),
    "text for a tier": ([["pm", 0]], 1, "not a number"),
    "three per node": ([[0, 0, 0]], 1, "expected 2"),
    "too few nodes": ([], 1, "placements of [0] [weight, activation] pairs for"),
    "zero repeats": ([[0, 0]], 0, "outside [1, 1000]"),
}


def test_a_worker_rejects_malformed_tasks_with_their_reason_and_keeps_serving(tiny, caplog):
    """Before: [[0.0, 1], ...] passed the worker's check and raised TypeError inside it. Shares
    between 0 and 1 are splits (a pm share per head), timed like whole tiers."""
    model, inputs = tiny
    job = _job(model, inputs)
    trainer = Trainer({"model": (model, inputs)})
    trainer.job(job)
    nodes = len(job.nodes)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for i, (name, (pairs, repeats, reason)) in enumerate(BAD_TASKS.items()):
            placement = pairs * nodes if pairs else []
            trainer.send("evaluate", session=trainer.session, id=i, fingerprint=job.fingerprint,
                         placements=[placement], repeats=repeats)
            answer = trainer.recv()[1]
            assert answer["type"] == "rejected" and answer["id"] == i and reason in answer["reason"], name
        trainer.send("evaluate", session=trainer.session, id=99, fingerprint="sha256:" + "0" * 16,
                     placements=[[[0, 0]] * nodes], repeats=1)
        assert "is for model sha256:0000000000000000" in trainer.recv()[1]["reason"]
        trainer.send("evaluate", session=trainer.session, id=102, fingerprint=job.fingerprint,
                     placements=[], repeats=1)
        assert "placements of [] [weight, activation] pairs" in trainer.recv()[1]["reason"]
        trainer.send("evaluate", session="6" * 32, id=100, fingerprint=job.fingerprint,
                     placements=[[[0, 0]] * nodes], repeats=1)
        trainer.send("evaluate", session=trainer.session, id=101, fingerprint=job.fingerprint,
                     placements=[[[0, 1]] * nodes, [[1, 0]] * nodes, [[0.5, 0.25]] * nodes], repeats=2)
        answer = trainer.recv()[1]  # the other session's task got no answer; this one is timed
    assert answer["type"] == "result" and answer["id"] == 101 and [len(s) for s in answer["samples"]] == [2, 2, 2]
    assert caplog.text.count("rejected a message from the trainer") == len(BAD_TASKS) + 3
    trainer.close()


def test_a_worker_ignores_an_unauthenticated_trainer(tiny, caplog):
    model, inputs = tiny
    trainer = Trainer({"model": (model, inputs)})
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        trainer.secret = b"a forged trainer without the secret!"
        trainer.send_body(_job(model, inputs).body(trainer.nonce, trainer.session))
        time.sleep(0.5)
    assert trainer.worker.session is None and "bad authentication tag" in caplog.text
    trainer.secret = SECRET
    assert trainer.job(_job(model, inputs))["type"] == "ready"  # the real trainer is still served
    trainer.close()


# --- local workers -----------------------------------------------------------------------


@pytest.mark.slow
def test_local_workers_exit_when_their_trainer_is_killed(tmp_path):
    """Before: they outlived a SIGKILLed trainer by minutes, each holding its model."""
    script = textwrap.dedent("""
        import sys, time
        sys.path.insert(0, "tests")
        from conftest import small_cnn
        from torch_tier.trainer.workers import Job, WorkerPool
        model, inputs = small_cnn()
        nodes = [name for name, _ in model.named_modules()]
        pool = WorkerPool(Job.of(model, (inputs,), "cnn", nodes, "sim:optane-100", 0), local=2)
        folder = pool._folder
        while sum(w.state == "ready" for w in pool.workers.values()) < 2:
            pool.poll(0.1)
        assert not folder.exists()  # read by both: the model and secret files are gone
        print(" ".join(str(p.pid) for p in pool.processes), flush=True)
        time.sleep(600)
    """)
    trainer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pids = [int(pid) for pid in trainer.stdout.readline().split()]
    assert len(pids) == 2
    trainer.kill()
    trainer.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[1][0] != "Z"


@pytest.mark.slow
def test_pool_requeues_the_tasks_of_a_killed_and_of_a_hung_worker(caplog):
    """Three local workers: one killed, then one stopped (hung) while timing; all tasks still complete."""
    model, inputs = small_cnn()
    job = _job(model, (inputs,), spec=None)
    placement = np.zeros((len(job.nodes), 2), dtype=np.int8)

    def sabotage(pool: WorkerPool, sig: int) -> None:
        """Send `sig` to a worker while it holds a task."""
        while True:
            busy = [w for w in list(pool.workers.values()) if w.task is not None]
            if busy:
                os.kill(busy[0].pid, sig)
                return
            time.sleep(0.001)

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        with WorkerPool(job, local=3, timeout=3.0) as pool:
            deadline = time.monotonic() + 60
            while sum(w.state == "ready" for w in pool.workers.values()) < 3 and time.monotonic() < deadline:
                pool.poll(0.1)
            for sig in (signal.SIGKILL, signal.SIGSTOP):
                thread = threading.Thread(target=sabotage, args=(pool, sig))
                thread.start()
                results = pool.run([(placement, 30)] * 6)
                thread.join()
                assert len(results) == 6 and all(len(r) == 30 for r in results)
    assert "(its process exited); task" in caplog.text and "s); task" in caplog.text.split("exited")[-1]
    assert caplog.text.count("re-queued") == 2


# --- fuzzing -----------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20)


def _near_valid(schema: dict, kinds: list[str]) -> st.SearchStrategy:
    """A message of one of `kinds` with every field but one plausible, that one replaced by any JSON value."""
    plausible = {"session": "7" * 32, "nonce": "8" * 32, "fingerprint": "sha256:" + "1" * 16, "id": 0, "pid": 1,
                 "host": "h", "samples": [[0.01]], "reason": "r", "placements": [[[0, 0]]], "repeats": 1}

    @st.composite
    def build(draw):
        kind = draw(st.sampled_from(kinds))
        body = {"protocol": PROTOCOL, "type": kind, **{k: plausible.get(k) for k in schema[kind]}}
        field = draw(st.sampled_from(sorted(body)))
        body[field] = draw(json_values)
        return json.dumps(body).encode()
    return build()


raw_bodies = (st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode())
              | st.integers(0, 3000).map(lambda n: P + b'"type":"ping","session":' + b"[" * n + b"]" * n + b"}")
              | st.integers(1, 6000).map(lambda n: P + b'"type":"hello","pid":' + b"9" * n + b"}")
              | _near_valid(TO_TRAINER, list(TO_TRAINER)) | _near_valid(workers_module.TO_WORKER, ["evaluate", "job"]))


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=raw_bodies, tagged=st.booleans(), direction=st.sampled_from([wire.TO_TRAINER, wire.TO_WORKER]))
def test_fuzz_the_trainer_never_raises_and_logs_every_rejection(fuzz_pool, body, tagged, direction):
    pool, handler = fuzz_pool
    _assert_acted_or_logged(pool, lambda frames: pool.receive(b"\x00fuzz", frames), handler, body, tagged, direction)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=raw_bodies, tagged=st.booleans(), direction=st.sampled_from([wire.TO_TRAINER, wire.TO_WORKER]))
def test_fuzz_the_worker_never_raises_and_logs_every_rejection(fuzz_worker, body, tagged, direction):
    worker, handler = fuzz_worker
    _assert_acted_or_logged(worker, worker.receive, handler, body, tagged, direction)


def _assert_acted_or_logged(peer, receive, handler, body: bytes, tagged: bool, direction: bytes) -> None:
    """`receive` (a peer's handler of [body, tag] frames) acts on the message, or its rejection is
    logged as a warning or counted by the peer's rate-limited log."""
    tag = wire.hmac.new(SECRET if tagged else b"x" * 32, direction + body, wire.hashlib.sha256).digest()
    handler.records.clear()
    suppressed = peer.rejections.suppressed
    acted = receive([body, tag])
    assert acted or any(r.levelno >= logging.WARNING for r in handler.records) or peer.rejections.suppressed > suppressed


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def records():
    handler = _Records()
    logger = logging.getLogger(LOGGER)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.fixture(scope="module")
def fuzz_pool(tiny, records):
    model, inputs = tiny
    with WorkerPool(_job(model, inputs), secret=SECRET) as pool:
        yield pool, records


@pytest.fixture(scope="module")
def fuzz_worker(tiny, records):
    """A worker in session "7"*32 holding the model, which it never times: it is fed messages only."""
    model, inputs = tiny
    worker = Worker("tcp://127.0.0.1:9", SECRET, model=(model, inputs))
    worker._timer.submit = lambda *call: None
    worker.session, worker.job, worker.model = "7" * 32, _job(model, inputs).body("8" * 32, "7" * 32), model
    yield worker, records
    worker.close()


def test_a_flood_of_rejected_messages_logs_a_burst_then_a_count(tiny, caplog):
    """Before: every rejected message was one warning, so a peer could fill the log."""
    model, inputs = tiny
    with WorkerPool(_job(model, inputs), secret=SECRET) as pool, caplog.at_level(logging.WARNING):
        pool.rejections.window = 0.5
        for _ in range(1000):
            assert not pool.receive(b"\x00flood", [b"{}", b"x" * 32])
        assert caplog.text.count("rejected a message from peer") == pool.rejections.burst
        assert pool.rejections.suppressed == 1000 - pool.rejections.burst
        time.sleep(0.6)
        assert not pool.receive(b"\x00flood", [b"{}", b"x" * 32])
        assert f"{1000 - pool.rejections.burst} more rejected messages in" in caplog.text
        assert caplog.text.count("rejected a message from peer") == pool.rejections.burst + 1


def test_check_message_names_the_field_and_the_reason():
    with pytest.raises(WireError, match=r"hello\.pid is a boolean, not an integer"):
        check_message({**_hello(), "pid": True}, TO_TRAINER)
    with pytest.raises(WireError, match="nested 9 deep"):
        wire.parse(b"[" * 9 + b"]" * 9)
    assert wire.parse(b'["[[[[[[[[[[", [[]]]') == ["[[[[[[[[[[", [[]]]  # brackets in strings do not count
