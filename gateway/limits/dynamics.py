"""How a current limit moves over time (pure): down at once, up only after a hold and then on a ramp.

Small changes (below the dead-band) are not passed on, and a limit at 0 resumes only once its target clears
the dead-band: together with the hold, limits do not flap around a threshold or around 0 A.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RampState:
    """A current limit as last published."""

    output_a: float
    """The limit now, A."""
    hold_until_s: float
    """No increase before this monotonic time, s."""
    updated_at_s: float
    """When :attr:`output_a` was last computed, s."""
    rising: bool = False
    """A ramp is under way: it runs to its target, the dead-band only decides whether one starts."""


def step_ramp(
    previous: RampState, target_a: float, now_s: float, *, hold_s: float, ramp_a_per_s: float, deadband_a: float
) -> RampState:
    """The limit after moving ``previous`` towards ``target_a`` (A, ≥ 0) at ``now_s``."""
    out = previous.output_a
    dt = max(0.0, now_s - previous.updated_at_s)
    if target_a <= 0.0:
        return RampState(0.0, now_s + hold_s if out > 0.0 else previous.hold_until_s, now_s)
    if target_a < out:
        if out - target_a >= deadband_a or previous.rising:
            return RampState(target_a, now_s + hold_s if out - target_a >= deadband_a else previous.hold_until_s, now_s)
        return RampState(out, previous.hold_until_s, now_s)
    if target_a == out or now_s < previous.hold_until_s or (target_a - out < deadband_a and not previous.rising):
        return RampState(out, previous.hold_until_s, now_s)
    risen = min(target_a, out + ramp_a_per_s * dt)
    return RampState(risen, previous.hold_until_s, now_s, rising=risen < target_a)
