"""memkind, bound once with cffi (ABI mode): the slow tier's real memory.

The C++ allocator receives a kind and the library's entry points from here,
so the library is loaded and bound in one place only.

memkind's jemalloc returns freed pages to the kind's file as they age
(dirty_decay_ms, 10 s by default, by MADV_REMOVE and munmap), so a model
whose activations come and go every forward faults them in again each time:
4,400 page faults and 1.3x to 2x the time of the same forward in DRAM, on the
same DRAM (tmpfs). Before loading the library this module therefore sets
memkind's jemalloc options (JEMK_MALLOC_CONF, see JEMALLOC_CONF) to keep
freed pages for reuse. The kind still holds no more than its max_size, and a
JEMK_MALLOC_CONF set by the user comes after these and wins.

It also sets MEMKIND_HOG_MEMORY=1 (unless the environment sets it), which
makes a pmem kind's extent hook decline to give an extent back
(pmem_extent_dalloc: MADV_REMOVE and munmap while the arena lives), so
jemalloc keeps it until memkind_destroy_kind unmaps the kind's whole heap.
Without it, memkind 1.14 crashes (SIGSEGV in jemalloc under
memkind_arena_posix_memalign) within seconds when threads allocate from a
pmem kind while kinds are destroyed or their extents given back (issue 16;
tests/test_memkind_churn.py, which runs the reproduction): a fresh kind per
session, freed as its last block goes, is exactly that. With the decay
options above jemalloc purges nothing while a kind lives, so a kind holds
what it held before; its file still goes with memkind_destroy_kind.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import cffi

LIBRARY = "libmemkind.so.0"
_MIN_PMEM_SIZE = 16 << 20
JEMALLOC_CONF = "dirty_decay_ms:-1,muzzy_decay_ms:-1"
"""memkind's jemalloc options set before the library loads: never return freed pages."""
HOG_MEMORY = "1"
"""MEMKIND_HOG_MEMORY set before the library loads (unless already set): see the module's doc."""

_CDEF = """
typedef struct memkind *memkind_t;
int memkind_create_pmem(const char *dir, size_t max_size, memkind_t *kind);
int memkind_destroy_kind(memkind_t kind);
int memkind_posix_memalign(memkind_t kind, void **memptr, size_t alignment, size_t size);
void memkind_free(memkind_t kind, void *ptr);
size_t memkind_malloc_usable_size(memkind_t kind, void *ptr);
int memkind_check_available(memkind_t kind);
int memkind_check_dax_path(const char *pmem_dir);
void memkind_error_message(int err, char *msg, size_t size);
extern memkind_t MEMKIND_DAX_KMEM;
"""


class MemkindUnavailable(RuntimeError):
    """libmemkind is missing, or the requested kind cannot be used here."""


@dataclass(frozen=True)
class Kind:
    """A memkind kind and the entry points the C++ backend calls."""

    kind: int
    posix_memalign: int
    free: int
    destroy_kind: int  # 0 for static kinds, which must not be destroyed
    malloc_usable_size: int
    name: str


@lru_cache(maxsize=1)
def _binding() -> tuple[cffi.FFI, object]:
    ffi = cffi.FFI()
    ffi.cdef(_CDEF)
    user = os.environ.get("JEMK_MALLOC_CONF")
    os.environ["JEMK_MALLOC_CONF"] = JEMALLOC_CONF + (f",{user}" if user else "")
    os.environ.setdefault("MEMKIND_HOG_MEMORY", HOG_MEMORY)  # read by libmemkind's constructor
    try:
        lib = ffi.dlopen(LIBRARY)
    except OSError as err:
        raise MemkindUnavailable(
            f"cannot load {LIBRARY} ({err}); install it with 'apt-get install libmemkind0' "
            "(Debian/Ubuntu), or use the simulated tier pm='sim', which needs no library"
        ) from None
    return ffi, lib


def available() -> bool:
    """Whether libmemkind can be loaded on this machine."""
    try:
        _binding()
    except MemkindUnavailable:
        return False
    return True


def _address(ffi: cffi.FFI, cdata: object) -> int:
    return int(ffi.cast("uintptr_t", cdata))


def _error(lib: object, ffi: cffi.FFI, code: int) -> str:
    buf = ffi.new("char[]", 256)
    lib.memkind_error_message(code, buf, 256)
    return ffi.string(buf).decode(errors="replace")


def _kind(ffi: cffi.FFI, lib: object, kind: object, destroy: bool, name: str) -> Kind:
    return Kind(
        kind=_address(ffi, kind),
        posix_memalign=_address(ffi, lib.memkind_posix_memalign),
        free=_address(ffi, lib.memkind_free),
        destroy_kind=_address(ffi, lib.memkind_destroy_kind) if destroy else 0,
        malloc_usable_size=_address(ffi, lib.memkind_malloc_usable_size),
        name=name,
    )


def pmem_kind(directory: str, max_size: int = 0) -> Kind:
    """A file-backed PMEM kind in `directory` (DAX or, for development, any filesystem).

    `max_size` 0 means unlimited; otherwise at least 16 MiB, memkind's minimum.
    """
    ffi, lib = _binding()
    if not os.path.isdir(directory):
        raise MemkindUnavailable(f"memkind directory {directory!r} does not exist")
    if max_size and max_size < _MIN_PMEM_SIZE:
        raise ValueError(f"memkind pmem capacity must be 0 (unlimited) or >= 16 MiB, got {max_size}")
    out = ffi.new("memkind_t *")
    code = lib.memkind_create_pmem(directory.encode(), max_size, out)
    if code:
        raise MemkindUnavailable(f"memkind_create_pmem({directory!r}): {_error(lib, ffi, code)}")
    dax = lib.memkind_check_dax_path(directory.encode()) == 0
    label = f"memkind pmem in {directory} ({'DAX' if dax else 'not DAX'}, " + (
        f"{max_size} bytes)" if max_size else "unlimited)"
    )
    return _kind(ffi, lib, out[0], destroy=True, name=label)


def kmem_kind() -> Kind:
    """MEMKIND_DAX_KMEM: PM or CXL memory exposed as a CPU-less NUMA node.

    On a machine without one, MEMKIND_DAX_KMEM_NODES names the nodes to use
    (e.g. 0, for tests); it must be set before the kind is first used.
    """
    ffi, lib = _binding()
    code = lib.memkind_check_available(lib.MEMKIND_DAX_KMEM)
    if code:
        raise MemkindUnavailable(
            f"MEMKIND_DAX_KMEM is not available here ({_error(lib, ffi, code)}); "
            "it needs a CPU-less NUMA node of PM/CXL memory, or MEMKIND_DAX_KMEM_NODES set"
        )
    nodes = os.environ.get("MEMKIND_DAX_KMEM_NODES")
    name = "memkind DAX KMEM" + (f" (nodes {nodes})" if nodes else "")
    return _kind(ffi, lib, lib.MEMKIND_DAX_KMEM, destroy=False, name=name)
