"""The tensors a module owns and the tensors a call receives: what capture and the runtime walk."""

from __future__ import annotations

import torch
from torch.utils._pytree import tree_leaves


def owned_tensors(model: torch.nn.Module) -> dict[str, list[torch.Tensor]]:
    """Each module path's own parameters and buffers; a tied tensor belongs to its first owner."""
    seen: set[int] = set()
    owned: dict[str, list[torch.Tensor]] = {}
    for path, module in model.named_modules():
        owned[path] = []
        for tensor in list(module._parameters.values()) + list(module._buffers.values()):
            if tensor is not None and id(tensor) not in seen:
                seen.add(id(tensor))
                owned[path].append(tensor)
    return owned


def input_tensors(args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """The distinct tensors (by storage) a call receives, in args and kwargs."""
    seen: set[int] = set()
    out = []
    for leaf in tree_leaves((args, kwargs)):
        if torch.is_tensor(leaf) and leaf.layout == torch.strided:
            key = leaf.untyped_storage().data_ptr()
            if key not in seen:
                seen.add(key)
                out.append(leaf)
    return out
