"""PyTorch's own operator database, every output in pm: bit-identical to the plugin off.

Every op of `op_db` (torch.testing._internal.common_methods_invocations, shipped in the torch
wheel; it needs `expecttest`) that supports float32 on CPU runs each of its sample inputs twice
with torch-tier off (the second with its internal buffers elsewhere in the heap) and once with
the allocator enabled and the calling thread's tier set to
pm, each run from the same RNG seed. Inputs are made with the plugin off; everything the op
allocates comes from the pm tier (the simulated tier's arena, memkind's PMEM kind on
/dev/shm, or the lowest NUMA node's memory). The outputs must be the same bits as with the plugin off, for every op that gives
the same bits twice with the plugin off (ops that do not are listed, and are few: e.g.
linalg.lstsq's gelsy driver, whose last bits depend on where its buffers lie even with the
plugin off); uninitialised outputs (`empty*`) are not compared.

668 ops compared per backend (as_strided found address-dependent), about 30 s each on 2 cores.
"""

from __future__ import annotations

import os
from functools import partial

import pytest
import torch
from torch.utils._pytree import tree_leaves, tree_map

from torch_tier import _C, memkind, tiers

pytest.importorskip("expecttest", reason="op_db needs expecttest (pip install expecttest)")
from torch.testing._internal.opinfo.core import SampleInput  # needs expecttest

if os.environ.get("CI") == "true" and not memkind.available():
    raise RuntimeError("CI=true but libmemkind0 is not installed: the memkind op_db run cannot run")

UNINITIALISED = {"empty", "empty_like", "new_empty", "new_empty_strided", "empty_strided", "empty_permuted",
                 "torch.empty", "nn.functional.empty"}
ADDRESS_DEPENDENT = {"linalg.lstsq"}
"""Ops whose last bits depend on where their buffers lie, with the plugin off too: linalg.lstsq's
gelsy sample (2x3 underdetermined) gives 3 different solutions (up to 3e-6 apart) for its input
copied to 6 places in one heap, 256 bytes apart. The two-run check above catches it only sometimes."""
SAMPLES_PER_OP = 8


def _bits(value):
    """A comparable form of an output leaf: a tensor's dtype, shape and raw bytes."""
    if not torch.is_tensor(value):
        return value
    if value.layout != torch.strided:
        value = value.to_dense()
    value = value.detach().resolve_conj().resolve_neg()
    if value.is_complex():
        value = torch.view_as_real(value)
    if value.dtype in (torch.bfloat16, torch.float16):
        value = value.view(torch.int16)
    return value.dtype, tuple(value.shape), value.numpy().tobytes()  # numpy follows any strides


def _moved(sample):
    """The sample with copies of its tensors, at other addresses."""
    copy = partial(tree_map, lambda x: x.clone() if torch.is_tensor(x) else x)
    return SampleInput(copy(sample.input), args=copy(sample.args), kwargs=copy(sample.kwargs))


def _run(op, sample, seed: int):
    torch.manual_seed(seed)
    try:
        out = op(sample.input, *sample.args, **sample.kwargs)
    except Exception as err:  # an op may reject a sample: then it must reject it the same way with the plugin on
        return ("raised", type(err).__name__)
    return [_bits(leaf) for leaf in tree_leaves(out)], [leaf for leaf in tree_leaves(out) if torch.is_tensor(leaf)]


def _compare_all(pm: str) -> tuple[list[str], list[str], int, int]:
    """Mismatching ops, nondeterministic ops, ops compared, and outputs that landed in pm."""
    from torch.testing._internal.common_methods_invocations import op_db

    mismatched, nondeterministic, compared, in_pm = [], [], 0, 0
    for op in op_db:
        if op.name in UNINITIALISED | ADDRESS_DEPENDENT or torch.float32 not in op.supported_dtypes("cpu"):
            continue
        torch.manual_seed(0)
        try:
            samples = list(op.sample_inputs("cpu", torch.float32, requires_grad=False))[:SAMPLES_PER_OP]
        except Exception:  # the sample generator itself fails here: nothing to compare
            continue
        for index, sample in enumerate(samples):
            first = _run(op, sample, index)
            pad = [torch.empty(k) for k in range(1, 200)]  # the second run's buffers land elsewhere,
            second = _run(op, _moved(sample), index)      # its inputs too
            del pad
            if first[0] != second[0]:
                nondeterministic.append(op.name)
                break
            tiers.activate(tiers.parse_pm(pm), "fallback")
            _C.set_tier(tiers.PM)
            try:
                tiered = _run(op, sample, index)
            finally:
                _C.set_tier(tiers.DRAM)
                tiers.deactivate()
            if tiered[0] != first[0]:
                mismatched.append(f"{op.name}[{index}]")
                break
            if first[0] != "raised":
                in_pm += sum(tiers.tier_of(t) == "pm" for t in tiered[1])
        else:
            compared += 1
    return mismatched, nondeterministic, compared, in_pm


PMS = ["sim", pytest.param("memkind:/dev/shm", marks=pytest.mark.skipif(
    not memkind.available(), reason="libmemkind0 is not installed (apt-get install libmemkind0)")),
       pytest.param(f"numa:{min(tiers.numa_nodes(), default=0)}", marks=pytest.mark.skipif(
           not tiers.numa_nodes(), reason="this kernel shows no NUMA node with memory"))]


@pytest.mark.parametrize("pm", PMS)
def test_op_db_outputs_in_pm_are_bit_identical(pm, one_thread):
    mismatched, nondeterministic, compared, in_pm = _compare_all(pm)
    assert not mismatched, f"{len(mismatched)} ops differ with their outputs in {pm}: {mismatched}"
    assert compared >= 600, (compared, nondeterministic)
    assert in_pm >= 2000, in_pm  # the outputs really were in pm (views of inputs are not)
    assert len(nondeterministic) <= 10, nondeterministic
