"""Policies: where each node's weights and activations live, as a JSON file.

A node is a module path of the model (`""` is the model's own forward,
`"layer1.0.conv1"` a leaf, `"encoder.layer.0.attention.self"` a module whose
own code allocates). A module not listed takes the placement of the
innermost listed module around it, and the default at the top.

Format version 2 adds split placements: a node's weights or activations may
be `{"dram": 0.25}`, a quarter of each tensor's bytes in DRAM (its first
pages) and the rest in pm. A policy with no split saves as version 1, so
that files of whole placements stay readable by torch-tier versions that
know only version 1; both versions load.
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
VERSION = 2  # the newest version this torch-tier reads; a policy without splits saves as version 1
WHOLE_VERSION = 1  # the version of policies whose every placement is whole


class PolicyError(ValueError):
    """A policy file or dict that cannot be used, and why."""


HEADS = ("weight", "activation")  # what a placement places of a node: its weights, its activations
Share = str | float  # a tier name, or the share of each tensor's bytes in DRAM (0 < share < 1: split)


def _share(value: Any, where: str) -> Share:
    """A head's placement checked: a tier name, or a DRAM share as a number or {"dram": share}.
    Shares of 0 and 1 are the tier names pm and dram, so a whole placement has one spelling."""
    if isinstance(value, Mapping):
        if set(value) != {"dram"}:
            raise PolicyError(f"{where}: a split must be {{\"dram\": share}}, got {dict(value)!r}")
        value = value["dram"]
        where += ".dram"
    elif isinstance(value, str):
        if value not in TIER_NAMES:
            raise PolicyError(f"{where}: unknown tier {value!r} (expected one of {list(TIER_NAMES)})")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise PolicyError(f"{where}: {value!r} is not a share of bytes in DRAM (a number from 0 to 1)")
    return "dram" if value == 1 else "pm" if value == 0 else float(value)


@dataclass(frozen=True)
class Placement:
    """Where one node's weights (parameters, buffers) and activations go: each a tier name, or
    (split) the share of each of its tensors' bytes in DRAM, 0 < share < 1, the rest in pm.

    A split tensor's first pages are in DRAM: of its ceil(bytes / 4096) pages,
    round(share * pages) (halves up) are DRAM pages and the rest pm pages, so
    a tensor of under one page is whole in DRAM if share >= 0.5, else in pm,
    and no tensor is off its share by more than half a page. Budgets and the
    cost model count the exact share of the bytes.
    """

    weight: Share = "dram"
    activation: Share = "dram"

    def __post_init__(self) -> None:
        for head in HEADS:
            object.__setattr__(self, head, _share(getattr(self, head), f"Placement.{head}"))

    def share(self, head: str, tier: str = "dram") -> float:
        """The share of `head`'s ("weight" or "activation") bytes in `tier`."""
        value = getattr(self, head)
        dram = value if isinstance(value, float) else float(value == "dram")
        return dram if tier == "dram" else 1.0 - dram

    def allocator_tier(self, head: str) -> int | float:
        """What the allocator's set_tier takes for `head`: the tier's index, or a split's pm share."""
        value = getattr(self, head)
        return 1.0 - value if isinstance(value, float) else TIER_NAMES.index(value)

    @property
    def split(self) -> bool:
        """Whether either head is split between the tiers."""
        return isinstance(self.weight, float) or isinstance(self.activation, float)

    def to_dict(self) -> dict[str, Any]:
        return {head: {"dram": value} if isinstance(value, float) else value
                for head, value in ((h, getattr(self, h)) for h in HEADS)}



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
    for key in HEADS:
        if isinstance(raw.get(key), (int, float)):
            raise PolicyError(f"{where}.{key}: {raw[key]!r}: write a tier name, or a split as {{\"dram\": share}}")
    return Placement(**{key: _share(raw.get(key, "dram"), f"{where}.{key}") for key in HEADS})


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

    @property
    def split(self) -> bool:
        """Whether any placement is split between the tiers (format version 2)."""
        return self.default.split or any(place.split for place in self.nodes.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "version": VERSION if self.split else WHOLE_VERSION,
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
        version = data.get("version")
        if type(version) is not int or not WHOLE_VERSION <= version <= VERSION:  # not True, not 1.0
            raise PolicyError(f"{source}: unsupported version {version!r} (this torch-tier reads versions "
                              f"{WHOLE_VERSION} to {VERSION}, as integers)")
        model = data.get("model")
        if not isinstance(model, Mapping) or not isinstance(model.get("fingerprint"), str):
            raise PolicyError(f"{source}: 'model' must be an object with a string 'fingerprint'")
        nodes = data.get("nodes", {})
        if not isinstance(nodes, Mapping):
            raise PolicyError(f"{source}: 'nodes' must be an object mapping module paths to placements")
        metadata = data.get("metadata", {})
        if not isinstance(metadata, Mapping):
            raise PolicyError(f"{source}: 'metadata' must be an object")
        policy = cls(
            fingerprint=model["fingerprint"],
            model_name=str(model.get("name", "")),
            default=_placement(data.get("default", {}), f"{source}: default"),
            nodes={str(k): _placement(v, f"{source}: nodes[{k!r}]") for k, v in nodes.items()},
            metadata=dict(metadata),
        )
        if policy.split and version < VERSION:
            raise PolicyError(f"{source}: split placements need version {VERSION}; the file says version {version}")
        return policy

    @classmethod
    def load(cls, path: str | Path) -> "Policy":
        """Read a policy file; errors name the file (and the position of a JSON error)."""
        path = Path(path)
        try:
            text = path.read_bytes().decode("utf-8")
        except OSError as err:
            raise PolicyError(f"{path}: cannot read policy file ({err.strerror})") from None
        except UnicodeDecodeError as err:
            raise PolicyError(f"{path}: not UTF-8 text (byte {err.start} is {err.object[err.start]:#04x}); "
                              "a policy file is JSON") from None
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
