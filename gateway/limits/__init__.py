"""Limits: what the inverter may do, derived purely from BMS state, settings and the user's tuning."""

from gateway.limits.engine import EngineResult, LimitsEngine, compute_limits
from gateway.limits.failsafe import failsafe_limits
from gateway.limits.settings import LimitsSettings
from gateway.limits.thresholds import Thresholds, derive_thresholds

__all__ = [
    "EngineResult",
    "LimitsEngine",
    "LimitsSettings",
    "Thresholds",
    "compute_limits",
    "derive_thresholds",
    "failsafe_limits",
]
