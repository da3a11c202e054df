"""torch-tier: place each layer's weights and activations in DRAM or a slower memory tier."""

from .policy import Placement, Policy, PolicyError, fingerprint
from .runtime import Session, enable
from .tiers import reset_peaks, stats, tier_of

__all__ = ["Placement", "Policy", "PolicyError", "Session", "enable", "fingerprint", "reset_peaks",
           "stats", "tier_of"]
__version__ = "0.1.0"
