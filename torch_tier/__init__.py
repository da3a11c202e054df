"""torch-tier: place each layer's weights and activations in DRAM or a slower memory tier."""

from .graph import TierGraph, capture
from .measure import Measurement, measure
from .policy import Placement, Policy, PolicyError, fingerprint
from .runtime import Session, enable
from .simulate import predict
from .tiers import reset_peaks, stats, tier_of
from .train import TrainResult, train  # the function; the subpackage stays importable as torch_tier.train.*

__all__ = ["Measurement", "Placement", "Policy", "PolicyError", "Session", "TierGraph", "capture", "enable",
           "fingerprint", "measure", "predict", "reset_peaks", "stats", "tier_of", "train", "TrainResult"]
__version__ = "0.1.0"
