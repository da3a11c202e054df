"""pytest plugin: torch-tier's memkind calls through the checking shim (memkind_shim.c).

    gcc -O2 -shared -fPIC -o /tmp/memkind_shim.so tests/sanitizers/memkind_shim.c -lpthread
    MEMKIND_SHIM=/tmp/memkind_shim.so PYTHONPATH=tests/sanitizers \\
        python -m pytest -p memkind_shim -s -m slow tests/test_stress.py

Every kind torch_tier.memkind makes hands the C++ backend the shim's posix_memalign and free,
which check each free against the live blocks and then call memkind's. At exit it prints how
many it checked.
"""

from __future__ import annotations

import atexit
import ctypes
import os

from torch_tier import memkind

_shim = ctypes.CDLL(os.environ["MEMKIND_SHIM"])
_plain_kind = memkind._kind


def _address(fn) -> int:
    return ctypes.cast(fn, ctypes.c_void_p).value


def _checked_kind(ffi, lib, kind, destroy, name) -> memkind.Kind:
    plain = _plain_kind(ffi, lib, kind, destroy, name)
    _shim.shim_init(ctypes.c_void_p(plain.posix_memalign), ctypes.c_void_p(plain.free))
    return memkind.Kind(kind=plain.kind, posix_memalign=_address(_shim.shim_posix_memalign),
                        free=_address(_shim.shim_free), destroy_kind=plain.destroy_kind,
                        malloc_usable_size=plain.malloc_usable_size, name=plain.name)


memkind._kind = _checked_kind
_shim.shim_allocs.restype = _shim.shim_frees.restype = ctypes.c_ulong
atexit.register(lambda: print(f"memkind shim: {_shim.shim_allocs()} allocations, {_shim.shim_frees()} frees checked"))
