"""memkind: threads allocating in pm while sessions come and go (issue 16).

memkind 1.14 (Debian's libmemkind0) crashed with a SIGSEGV inside its jemalloc, under
memkind_arena_posix_memalign called from MemkindBackend::aligned, within about a second when
four threads allocated tensors in pm while the main thread enabled and closed memkind sessions
(each a fresh pmem kind, destroyed when its last block is freed): 3 crashes in 3 runs, also in
a plain C program with no torch-tier at all, also with every memkind call under one mutex. It
needs extents given back through the pmem kind's dalloc hook (MADV_REMOVE and munmap), as an
arena's destruction does; torch_tier.memkind sets MEMKIND_HOG_MEMORY=1, so that the hook
declines and the kind's heap goes whole with memkind_destroy_kind. The reproduction runs in a
child process, so that a crash fails this test and not the whole run.
"""

import os
import subprocess
import sys

import pytest

from torch_tier import memkind

pytestmark = pytest.mark.skipif(
    not memkind.available(), reason="libmemkind0 is not installed (apt-get install libmemkind0)"
)

SECONDS = 5.0

CHURN = r"""
import random, sys, threading, time
import torch
import torch_tier as tt
from torch_tier import _C, tiers

seconds, workers = float(sys.argv[1]), 4
stop = threading.Event()
counts, corrupt, errors = [0] * workers, [], []

def work(index):
    _C.set_tier(tiers.PM)
    rng, live = random.Random(index), []
    try:
        while not stop.is_set():
            n = rng.randrange(16, 65536 if counts[index] % 10 == 0 else 1024)  # small, some large
            live.append(torch.full((n,), float(index * 100000 + n)))
            if len(live) > 64:
                t = live.pop(rng.randrange(len(live)))
                if not bool((t == float(index * 100000 + t.numel())).all()):
                    corrupt.append(index)
            counts[index] += 1
    except BaseException as err:
        errors.append(err)
    finally:
        _C.set_tier(tiers.DRAM)

owner = torch.nn.Linear(256, 256)
threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
for t in threads:
    t.start()
sessions, deadline = 0, time.monotonic() + seconds
try:
    while time.monotonic() < deadline and not errors:
        with tt.enable(tt.Policy.uniform(owner, "pm", "pm"), owner, pm="memkind:/dev/shm", pm_capacity="16MiB"):
            _C.set_tier(tiers.PM)  # as enable() moving a model's weights: large blocks in the fresh kind
            big = [torch.ones(75000) for _ in range(32)]
            _C.set_tier(tiers.DRAM)
            time.sleep(0.002)
            del big
        sessions += 1
finally:
    stop.set()
    for t in threads:
        t.join()
assert not errors, errors
print(f"sessions {sessions} allocations {sum(counts)} corrupt {len(corrupt)}")
sys.exit(1 if corrupt else 0)
"""


def test_threads_allocate_while_memkind_sessions_come_and_go():
    env = {k: v for k, v in os.environ.items() if k != "MEMKIND_HOG_MEMORY"}  # torch_tier.memkind's own setting
    run = subprocess.run([sys.executable, "-c", CHURN, str(SECONDS)], env=env, capture_output=True, text=True,
                         timeout=SECONDS + 120)
    assert run.returncode == 0, (
        f"exit status {run.returncode} (-11: SIGSEGV, issue 16)\n{run.stdout[-2000:]}{run.stderr[-4000:]}"
    )
    sessions = int(run.stdout.split()[1])
    assert sessions >= 20, run.stdout
