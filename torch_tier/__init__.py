"""torch-tier: place each layer's weights and activations in DRAM or a slower memory tier.

The public names load on first use (PEP 562), so `import torch_tier` costs
nothing and a command that needs only the planner never imports torch.
Running a policy loads the runtime; the trainer, the baselines' MILP, the fit
agents and plotting load only when called.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it (no public name is also a submodule's name)
_EXPORTS = {
    "Placement": "policy", "Policy": "policy", "PolicyError": "policy", "fingerprint": "policy",
    "reset_peaks": "tiers", "stats": "tiers", "tier_bytes": "tiers", "tier_of": "tiers",
    "TierGraph": "graph",
    "Traffic": "traffic", "TrafficStream": "traffic",
    "register_device": "devices",
    "predict": "cost_model",
    "Session": "runtime", "enable": "runtime",
    "capture": "graph_capture",
    "calibrate_device": "calibrate",
    "Measurement": "timing", "measure": "timing",
    "TrainResult": "trainer.erl", "train": "trainer.erl",
    "from_pretrained": "pretrained",
}

__all__ = ["Measurement", "Placement", "Policy", "PolicyError", "Session", "TierGraph", "Traffic", "TrafficStream",
           "TrainResult", "calibrate_device", "capture", "enable", "fingerprint", "from_pretrained", "measure",
           "predict", "register_device", "reset_peaks", "stats", "tier_bytes", "tier_of", "train"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from .calibrate import calibrate_device
    from .cost_model import predict
    from .devices import register_device
    from .graph import TierGraph
    from .graph_capture import capture
    from .policy import Placement, Policy, PolicyError, fingerprint
    from .pretrained import from_pretrained
    from .runtime import Session, enable
    from .tiers import reset_peaks, stats, tier_bytes, tier_of
    from .timing import Measurement, measure
    from .trainer.erl import TrainResult, train
    from .traffic import Traffic, TrafficStream


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'torch_tier' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
