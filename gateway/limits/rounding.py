"""Rounding towards safety: a published limit is never above (a current, the charge voltage) or below (the
discharge voltage) the value the engine computed, not even by a float's last bit."""

from __future__ import annotations

import math

_GRID_SLACK: float = 1e-9
"""A value this close to a grid step (in steps) is taken as on it: ``0.3 * 10`` is 3 steps, not 2."""


def round_down(value: float, digits: int) -> float:
    """``value`` rounded down to ``digits`` decimals, and never above ``value`` itself."""
    scale = 10.0**digits
    return min(math.floor(value * scale + _GRID_SLACK) / scale, value)


def round_up(value: float, digits: int) -> float:
    """``value`` rounded up to ``digits`` decimals, and never below ``value`` itself."""
    scale = 10.0**digits
    return max(math.ceil(value * scale - _GRID_SLACK) / scale, value)


def round_raw(scaled: float, direction: int) -> int:
    """A scaled value as a wire integer: ``direction`` 0 to the nearest, −1 towards zero (its magnitude down),
    +1 away from zero (its magnitude up). By magnitude, so that a limit sent negative (Pylontech's DCL) is made
    no larger either."""
    if direction == 0:
        return round(scaled)
    magnitude = abs(scaled)
    rounded = math.floor(magnitude + _GRID_SLACK) if direction < 0 else math.ceil(magnitude - _GRID_SLACK)
    return int(math.copysign(rounded, scaled))
