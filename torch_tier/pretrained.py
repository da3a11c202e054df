"""from_pretrained(): a `transformers` checkpoint loaded straight into the tiers, for models larger than DRAM.

The model is built from the directory's config.json with its parameters and
persistent buffers on the meta device (no storage). The session then makes
each of them in its weight tier and reads it from its safetensors file
straight into that memory: the file's bytes go from the kernel into the
destination (os.preadv), and are then dropped from the page cache, so a
weight placed in pm never has a copy in DRAM. The one transient is a tensor
stored in another dtype than the model's: it is read in the file's dtype and
converted, both in the destination tier. Buffers the model makes itself when
built (rotary frequencies) are small and made in plain memory, then moved to
their tier as enable() moves them.

With `dram_budget` and no policy, every weight is loaded into pm, a graph is
captured there (capture's `dram_limit`: each node's all-DRAM time is its own
time with its own weights copied into DRAM, in groups that fit the budget; a
node too large for that is timed in pm, see torch_tier.graph_capture), the
cost model's optimum for the budget is found (baselines.optimal), and the
weights it puts in DRAM move there from pm. On `sim:` with a built-in profile
the optimum is judged by the very model the emulated tier runs, so its timed
speed is no evidence that it is right (see docs/architecture.md).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from . import baselines, devices, runtime, tiers
from .graph_capture import capture
from .policy import Policy, PolicyError
from .tensors import owned_tensors

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
PROMPT_TOKENS = 32  # the example prompt a budget's graph is captured on, unless inputs are given
READ_CHUNK = 1 << 30  # bytes per read call (Linux reads at most 2 GiB - 4 KiB at once)

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
    "U64": torch.uint64, "U32": torch.uint32, "U16": torch.uint16, "U8": torch.uint8, "BOOL": torch.bool,
}


class CheckpointError(ValueError):
    """A model directory or safetensors file that cannot be loaded, and why (naming the file)."""


@dataclass(frozen=True)
class Entry:
    """One tensor of a safetensors file: where its bytes are and what they hold."""

    file: Path
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int  # of its first byte in the file
    nbytes: int


def read_header(path: Path) -> dict[str, Entry]:
    """The tensors of one safetensors file, checked against the file's size."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            prefix = f.read(8)
            length = int.from_bytes(prefix, "little")
            if len(prefix) < 8 or length > size - 8:
                raise CheckpointError(f"{path}: not a safetensors file, or truncated (a header of {length} bytes "
                                      f"in a file of {size})")
            header = json.loads(f.read(length))
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: malformed safetensors header ({err})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: malformed safetensors header (not a JSON object)")
    return {name: _entry(path, name, info, 8 + length, size) for name, info in header.items()
            if name != "__metadata__"}


def _entry(path: Path, name: str, info: Any, start: int, size: int) -> Entry:
    where = f"{path}: tensor {name!r}"
    if not isinstance(info, dict) or info.get("dtype") not in _DTYPES:
        dtype = info.get("dtype") if isinstance(info, dict) else info
        raise CheckpointError(f"{where}: dtype {dtype!r} is not one of {sorted(_DTYPES)}")
    shape, offsets = info.get("shape"), info.get("data_offsets")
    if not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise CheckpointError(f"{where}: shape {shape!r} is not a list of sizes")
    dtype = _DTYPES[info["dtype"]]
    nbytes = math.prod(shape) * dtype.itemsize
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(n, int) for n in offsets)
            or offsets[1] - offsets[0] != nbytes or offsets[0] < 0 or start + offsets[1] > size):
        raise CheckpointError(f"{where}: data_offsets {offsets!r} do not hold {nbytes} bytes within the file's "
                              f"{size - start} bytes of data (truncated or corrupt)")
    return Entry(path, dtype, tuple(shape), start + offsets[0], nbytes)


def checkpoint_files(directory: Path) -> list[Path]:
    """The safetensors files of a model directory: the shards its index names, or its one file."""
    index = directory / INDEX
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            files = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise CheckpointError(f"{index}: cannot read a 'weight_map' of tensor names to shard files "
                                  f"({type(err).__name__}: {err})") from None
        missing = [name for name in files if not (directory / name).is_file()]
        if missing:
            raise CheckpointError(f"{index}: names shard {missing[0]!r}, which is not in {directory}")
        return [directory / name for name in files]
    if (directory / SINGLE).is_file():
        return [directory / SINGLE]
    raise CheckpointError(f"{directory}: no {SINGLE} or {INDEX} (torch-tier loads safetensors checkpoints, "
                          "as save_pretrained writes them)")


class Checkpoint:
    """The tensors of a model directory's safetensors files, each read on demand into a
    tensor the current allocator makes (so in the tier the session has set)."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.entries: dict[str, Entry] = {}
        for path in checkpoint_files(directory):
            self.entries.update(read_header(path))

    def read(self, name: str, like: torch.Tensor) -> torch.Tensor:
        """Tensor `name` as a new tensor of `like`'s shape and dtype (converted from the file's if it differs)."""
        entry = self.entries[name]
        if entry.shape != tuple(like.shape):
            raise CheckpointError(f"{entry.file}: tensor {name!r} has shape {list(entry.shape)}, the model's "
                                  f"{list(like.shape)} (a checkpoint of another configuration?)")
        data = torch.empty(entry.shape, dtype=entry.dtype)
        if entry.nbytes:
            _read_into(entry, data.reshape(-1).view(torch.uint8).numpy())
        return data if entry.dtype == like.dtype else data.to(like.dtype)


def _read_into(entry: Entry, out: Any) -> None:
    """Read the entry's bytes from its file into `out` (a writable buffer), then drop them from the page cache."""
    view = memoryview(out)
    fd = os.open(entry.file, os.O_RDONLY)
    try:
        done = 0
        while done < entry.nbytes:
            n = os.preadv(fd, [view[done:done + READ_CHUNK]], entry.offset + done)
            if n <= 0:
                raise CheckpointError(f"{entry.file}: ended {entry.nbytes - done} bytes short of a tensor at byte "
                                      f"{entry.offset} (truncated while being read?)")
            done += n
        os.posix_fadvise(fd, entry.offset, entry.nbytes, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Modules built in the block register their parameters and persistent buffers on the meta
    device; non-persistent buffers (computed, never saved) stay real. The patch of nn.Module is
    process-wide while the block runs (as accelerate's init_empty_weights is)."""
    register_parameter, register_buffer = nn.Module.register_parameter, nn.Module.register_buffer

    def parameter(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register_parameter(module, name, param)
        if param is not None and not param.is_meta:
            module._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    def buffer(module: nn.Module, name: str, tensor: torch.Tensor | None, persistent: bool = True) -> None:
        register_buffer(module, name, tensor, persistent)
        if persistent and tensor is not None:
            module._buffers[name] = tensor.to("meta")

    nn.Module.register_parameter, nn.Module.register_buffer = parameter, buffer
    try:
        yield
    finally:
        nn.Module.register_parameter, nn.Module.register_buffer = register_parameter, register_buffer


def build(directory: Path, **kwargs: Any) -> nn.Module:
    """The causal LM of `directory`'s config.json, in eval mode, without storage for its weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    if not (directory / "config.json").is_file():
        raise CheckpointError(f"{directory}: no config.json (expected a transformers model directory: "
                              "config.json and safetensors weights)")
    try:
        config = AutoConfig.from_pretrained(directory)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{directory / 'config.json'}: cannot read a transformers config ({err})") from None
    try:
        with _parameters_on_meta():
            return AutoModelForCausalLM.from_config(config, **kwargs).eval()
    except ValueError as err:
        raise CheckpointError(f"{directory / 'config.json'}: {type(config).__name__} is not a causal "
                              f"language model ({err})") from None


def loader(model: nn.Module, checkpoint: Checkpoint) -> runtime.Loader:
    """The session's loader for `model`'s meta tensors: each read from the checkpoint by one of its
    names (a tied weight is saved once, under any of the names it has)."""
    names: dict[int, list[str]] = {}
    prefix = getattr(model, "base_model_prefix", "") + "."
    for name, tensor in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]:
        names.setdefault(id(tensor), []).extend([name, name.removeprefix(prefix)])

    def load(tensor: torch.Tensor) -> torch.Tensor:
        found = next((name for name in names[id(tensor)] if name in checkpoint.entries), None)
        if found is None:
            raise CheckpointError(f"{checkpoint.directory}: no tensor {names[id(tensor)][0]!r} in its safetensors "
                                  f"files ({', '.join(sorted({e.file.name for e in checkpoint.entries.values()}))})")
        return checkpoint.read(found, tensor)

    return load


def _planner_device(spec: tiers.PmSpec, device: str | None) -> str:
    """The profile the cost model prices: `device`, else the one a `sim:` tier assumes, else the default."""
    if device is None:
        return devices.assumed_profile(spec.profile) if spec.kind == "sim" else baselines.DEFAULT_DEVICE
    if devices.assumed_profile(device) != device:
        raise ValueError(f"device: {device!r} is not a device profile (known: {', '.join(devices.names())}, "
                         "or a profile file PATH.json)")
    return device


def from_pretrained(
    path: str | Path,
    *,
    policy: Policy | str | Path | None = None,
    dram_budget: baselines.BudgetSpec | None = None,
    pm: str | None = None,
    device: str | None = None,
    inputs: Any = None,
    capture_options: dict[str, Any] | None = None,
    on_full: str = "fallback",
    pm_capacity: int | str | None = None,
    **kwargs: Any,
) -> runtime.Session:
    """The causal LM in `path` (config.json and safetensors files), loaded straight into the
    tiers and running under a placement until the returned session is closed.

    policy: a placement made for this model (a Policy or a policy file); each
        weight is read into its tier.
    dram_budget: instead of a policy, DRAM the placement may use (bytes, '512MiB', 0.25
        or '25%' of the all-DRAM footprint): the cost model's optimum on `device` (default
        the sim profile of `pm`, else optane-100) for a graph captured on `inputs`
        (default: a prompt of PROMPT_TOKENS random token ids) with the weights in pm;
        capture_options go to torch_tier.capture (generate=N for a decode-aware placement
        on a graph of a whole generate call; repeats, precision, max_repeats, clock).
    pm, on_full, pm_capacity: as for torch_tier.enable.
    kwargs: passed to transformers' from_config (e.g. dtype, attn_implementation).

    session.model is the model. close() removes the hooks and restores the allocator;
    the weights stay in tier memory (valid tensors; freed with the model), never pulled
    into plain memory, which may not hold them.
    """
    directory = Path(path)
    if (policy is None) == (dram_budget is None):
        raise ValueError("from_pretrained: give either policy= or dram_budget= (not both)")
    spec = tiers.parse_pm(pm, pm_capacity)
    model = build(directory, **kwargs)
    load = loader(model, Checkpoint(directory))
    if policy is not None:
        if not isinstance(policy, Policy):
            policy = Policy.load(policy)
        try:
            policy.check(model)
        except PolicyError as err:
            raise PolicyError(f"{directory}: {err}") from None
        return runtime.start(policy, model, spec, on_full, loader=load)
    return _budgeted(model, load, spec, dram_budget, _planner_device(spec, device), inputs, capture_options or {},
                     on_full)


def _budgeted(model: nn.Module, load: runtime.Loader, spec: tiers.PmSpec, budget: baselines.BudgetSpec,
              device: str, inputs: Any, options: dict[str, Any], on_full: str) -> runtime.Session:
    """Load every weight into pm, capture within the budget, place the optimum."""
    limit = baselines.parse_budget(budget)
    weights = sum(t.untyped_storage().nbytes() for ts in owned_tensors(model).values() for t in ts)
    capture_limit = limit if isinstance(limit, int) else int(limit * weights)  # a share's bytes are at least this
    if inputs is None:
        generator = torch.Generator().manual_seed(0)
        inputs = (torch.randint(0, model.config.vocab_size, (1, PROMPT_TOKENS), generator=generator),)
    runtime.start(Policy.uniform(model, weight="pm"), model, spec, on_full, loader=load).close()
    graph = capture(model, inputs, name=type(model).__name__, dram_limit=capture_limit, **options)
    policy = baselines.optimal(graph, budget, device)
    policy.metadata["capture"] = graph.metadata  # the inputs and how the nodes were timed
    return runtime.start(policy, model, spec, on_full)
