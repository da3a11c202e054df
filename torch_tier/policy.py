"""Policies: where each node's weights and activations live, as a JSON file.

A node is a module path of the model (`""` is the model's own forward,
`"layer1.0.conv1"` a leaf, `"encoder.layer.0.attention.self"` a module whose
own code allocates). A module not listed takes the placement of the
innermost listed module around it, and the default at the top.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch

from .tiers import TIER_NAMES

FORMAT = "torch-tier-policy"
VERSION = 1


class PolicyError(ValueError):
    """A policy file or dict that cannot be used, and why."""


@dataclass(frozen=True)
class Placement:
    """Where one node's weights (parameters, buffers) and activations go."""

    weight: str = "dram"
    activation: str = "dram"

    def to_dict(self) -> dict[str, str]:
        return {"weight": self.weight, "activation": self.activation}


def module_nodes(model: torch.nn.Module) -> list[str]:
    """Every module path of `model` that a policy may name, in registration order."""
    return [name for name, _ in model.named_modules()]


def fingerprint(model: torch.nn.Module) -> str:
    """A hash of the model's leaf-module paths and parameter/buffer shapes.

    Two models with the same fingerprint have the same nodes and tensor sizes,
    so a policy (and its budget) found for one holds for the other.
    """
    h = hashlib.sha256()
    for name, module in model.named_modules():
        if next(module.children(), None) is None:
            h.update(f"m {name} {type(module).__name__}\n".encode())
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        h.update(f"t {name} {tuple(tensor.shape)}\n".encode())
    return "sha256:" + h.hexdigest()[:16]


def _placement(raw: Any, where: str) -> Placement:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where}: expected an object with 'weight' and 'activation', got {raw!r}")
    unknown = set(raw) - {"weight", "activation"}
    if unknown:
        raise PolicyError(f"{where}: unknown field(s) {sorted(unknown)} (expected 'weight', 'activation')")
    values = {}
    for key in ("weight", "activation"):
        value = raw.get(key, "dram")
        if value not in TIER_NAMES:
            raise PolicyError(f"{where}.{key}: unknown tier {value!r} (expected one of {list(TIER_NAMES)})")
        values[key] = value
    return Placement(**values)


@dataclass
class Policy:
    """A placement per node for one model (identified by its fingerprint)."""

    fingerprint: str
    model_name: str = ""
    default: Placement = field(default_factory=Placement)
    nodes: dict[str, Placement] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def uniform(
        cls, model: torch.nn.Module, weight: str = "dram", activation: str = "dram", name: str = ""
    ) -> "Policy":
        """Every node of `model` in the same tiers."""
        place = _placement({"weight": weight, "activation": activation}, "uniform")
        return cls(
            fingerprint=fingerprint(model),
            model_name=name or type(model).__name__,
            default=place,
            nodes={node: place for node in module_nodes(model)},
            metadata={"found_by": "uniform"},
        )

    def for_node(self, name: str) -> Placement:
        """The placement of node `name` if listed, else the default."""
        return self.nodes.get(name, self.default)

    def placement_of(self, path: str) -> Placement:
        """The effective placement of module `path`: its own, its innermost listed ancestor's, or the default."""
        while path not in self.nodes:
            if not path:
                return self.default
            path = path.rpartition(".")[0]
        return self.nodes[path]

    def resolve(self, model: torch.nn.Module) -> dict[str, Placement]:
        """The effective placement of every module path of `model`."""
        return {path: self.placement_of(path) for path in module_nodes(model)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION,
            "model": {"name": self.model_name, "fingerprint": self.fingerprint},
            "default": self.default.to_dict(),
            "nodes": {name: place.to_dict() for name, place in self.nodes.items()},
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "policy") -> "Policy":
        """Parse and validate a policy dict; `source` names it in errors."""
        if not isinstance(data, Mapping):
            raise PolicyError(f"{source}: expected a JSON object, got {type(data).__name__}")
        if data.get("format") != FORMAT:
            raise PolicyError(f"{source}: 'format' is {data.get('format')!r}, expected {FORMAT!r}")
        if data.get("version") != VERSION:
            raise PolicyError(
                f"{source}: unsupported version {data.get('version')!r} (this torch-tier reads version {VERSION})"
            )
        model = data.get("model")
        if not isinstance(model, Mapping) or not isinstance(model.get("fingerprint"), str):
            raise PolicyError(f"{source}: 'model' must be an object with a string 'fingerprint'")
        nodes = data.get("nodes", {})
        if not isinstance(nodes, Mapping):
            raise PolicyError(f"{source}: 'nodes' must be an object mapping module paths to placements")
        metadata = data.get("metadata", {})
        if not isinstance(metadata, Mapping):
            raise PolicyError(f"{source}: 'metadata' must be an object")
        return cls(
            fingerprint=model["fingerprint"],
            model_name=str(model.get("name", "")),
            default=_placement(data.get("default", {}), f"{source}: default"),
            nodes={str(k): _placement(v, f"{source}: nodes[{k!r}]") for k, v in nodes.items()},
            metadata=dict(metadata),
        )

    @classmethod
    def load(cls, path: str | Path) -> "Policy":
        """Read a policy file; errors name the file (and the position of a JSON error)."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as err:
            raise PolicyError(f"{path}: cannot read policy file ({err.strerror})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise PolicyError(f"{path}:{err.lineno}:{err.colno}: malformed JSON: {err.msg}") from None
        return cls.from_dict(data, source=str(path))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    def check(self, model: torch.nn.Module) -> None:
        """Raise PolicyError unless this policy was made for `model`."""
        known = module_nodes(model)
        extra = sorted(set(self.nodes) - set(known))
        if self.fingerprint != fingerprint(model):
            leaves = [n for n, m in model.named_modules() if next(m.children(), None) is None]
            missing = [n for n in leaves if n not in self.nodes]
            detail = (
                f"missing nodes: {_short(missing)}; extra nodes: {_short(extra)}"
                if missing or extra
                else "the module paths match but parameter shapes differ"
            )
            raise PolicyError(
                f"policy for {self.model_name or 'a model'!r} ({self.fingerprint}) does not match "
                f"this {type(model).__name__} ({fingerprint(model)}): {detail}"
            )
        if extra:
            raise PolicyError(f"policy names nodes that do not exist in the model: {_short(extra)}")


def _short(names: list[str], limit: int = 10) -> str:
    if not names:
        return "none"
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
