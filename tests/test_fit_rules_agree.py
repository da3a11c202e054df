"""The fit rules exist twice: in C++ (the sim tier's arena, csrc/arena_backend.cpp)
and in Python (torch_tier.fit.rules, for the fit environment). Replayed on the
same requests they must place every block at the same offset.

The C++ side is driven through the real allocator: a fresh sim tier of
`PAGE * CELL` bytes under one fit, the pm tier selected, one `torch.empty`
per allocation and `del` per free. Bytes map to cells exactly:

- the arena is made of 256-byte cells and keeps its bookkeeping out of band:
  a block is the payload the allocator asked for rounded up to whole cells,
  and the allocator asks for the tensor's bytes plus its own per-block
  overhead (`_C.block_overhead()`, none since its metadata left the block).
  A tensor of `k * CELL - TAG - header` bytes is therefore a block of
  exactly `k` cells, starting `TAG + header` bytes before its data;
- the arena splits every hole it allocates from exactly, as the Python
  rules do (every hole is a whole number of cells);
- the arena's base address is not exposed, but a fresh arena is one free
  block, so every rule puts the first request at its start.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from torch_tier import _C, tiers
from torch_tier.fit.generators import Request, make_generator
from torch_tier.fit.rules import RulePolicy, free_blocks

CELL = 256
"""Bytes per cell: the arena's granule (ArenaBackend::kCell), its smallest block."""
TAG = 0
"""Bytes the arena itself adds to each block: none, its tags are out of band."""
PAGE = 128
"""Cells in the arena."""
SEEDS = range(5)

# After each allocation: the block's byte offset (None: it failed), then the
# arena's free bytes, free blocks and largest free block.
Placement = tuple[int | None, int, int, int]


def requests(seed: int, count: int = 600) -> list[Request]:
    """The `random` generator with sizes 2..20 cells and frees as likely as allocations:
    the page fills, then fragments, and some requests fail while enough cells are free."""
    stream = make_generator("random", PAGE, sizes=(2, 20), p_free=0.5)(np.random.default_rng(seed))
    return list(itertools.islice(stream, count))


def python_placements(stream: list[Request], fit: str) -> list[Placement]:
    """Each allocation of `stream` placed in a page bitmap by the Python rule `fit`."""
    rule = RulePolicy(fit).rule
    bitmap = np.zeros(PAGE, np.int8)
    live: dict[int, tuple[int, int]] = {}
    out = []
    for request in stream:
        if request.op == "free":
            if request.id in live:
                start, size = live.pop(request.id)
                bitmap[start : start + size] = 0
            continue
        start = rule(bitmap, request.size)
        if start is not None:
            bitmap[start : start + request.size] = 1
            live[request.id] = (start, request.size)
        _, lengths = free_blocks(bitmap)
        out.append((None if start is None else start * CELL, int(lengths.sum()) * CELL, len(lengths),
                    int(lengths.max(initial=0)) * CELL))
    return out


def arena_placements(stream: list[Request], fit: str) -> list[Placement]:
    """Each allocation of `stream` placed by the C++ sim arena under `fit`, through the allocator."""
    header = _C.block_overhead()
    tiers.activate(tiers.parse_pm("sim", PAGE * CELL, fit), "error")
    live: dict[int, torch.Tensor] = {}
    out, base = [], None
    _C.set_tier(tiers.PM)
    try:
        for request in stream:
            if request.op == "free":
                live.pop(request.id, None)
                continue
            try:  # only `live` holds the tensor, so its free request frees it
                live[request.id] = torch.empty(request.size * CELL - TAG - header, dtype=torch.uint8)
            except torch.OutOfMemoryError:
                address = None
            else:
                address = live[request.id].data_ptr() - header - TAG
                base = address if base is None else base
            layout = _C.pm_layout()
            out.append((None if address is None else address - base, layout["free_bytes"], layout["free_blocks"],
                        layout["largest_free"]))
    finally:
        _C.set_tier(tiers.DRAM)
        live.clear()
        tiers.deactivate()
    return out


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("fit", tiers.FITS)
def test_cpp_arena_and_python_rules_place_alike(fit: str, seed: int) -> None:
    stream = requests(seed)
    assert arena_placements(stream, fit) == python_placements(stream, fit)


@pytest.mark.parametrize("seed", SEEDS)
def test_the_requests_fragment_and_tell_the_rules_apart(seed: int) -> None:
    """The comparison above has teeth: some request fails with enough cells free
    in total (fragmentation), and no two rules place the stream alike."""
    stream = requests(seed)
    placed = {fit: python_placements(stream, fit) for fit in tiers.FITS}
    sizes = [r.size for r in stream if r.op == "alloc"]
    assert any(offset is None and free >= size * CELL
               for fit in tiers.FITS for (offset, free, _, _), size in zip(placed[fit], sizes))
    offsets = [tuple(p[0] for p in placed[fit]) for fit in tiers.FITS]
    assert len(set(offsets)) == len(tiers.FITS)
