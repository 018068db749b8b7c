"""Limits: what the inverter may do, derived purely from BMS state, settings and the user's caps."""

from gateway.limits.simple import LimitCaps, failsafe_limits, simple_limits

__all__ = ["LimitCaps", "failsafe_limits", "simple_limits"]
