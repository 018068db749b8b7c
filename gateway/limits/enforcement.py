"""Holding the line when the inverter does not obey (pure).

Many inverters overshoot the current limit (one Deye took 126 A when told 108 A). When the measured current
exceeds the limit by more than ``overshoot_margin_a`` for ``overshoot_after_s``:

1. the advertised limit is lowered by the excess (kept as a fraction of the true limit, so it follows it);
2. if the excess persists for another ``overshoot_after_s``, the side's enable flag is cleared and its
   limit advertised as 0 until the current obeys, then step 1's compensation applies again;
3. after ``overshoot_forgive_s`` of obedience the compensation is dropped.

Every step is an event (a log line with the numbers).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.limits.settings import LimitsSettings


class Enforcement(enum.StrEnum):
    OBEYED = "obeyed"
    COMPENSATED = "compensated"
    BLOCKED = "blocked"


@dataclass(frozen=True, slots=True)
class EnforcementState:
    stage: Enforcement = Enforcement.OBEYED
    factor: float = 1.0
    """Advertised limit = true limit × factor."""
    over_since_s: float | None = None
    """Since when the current exceeds the limit, s."""
    obeyed_since_s: float | None = None
    """Since when the current keeps within the limit, s."""


@dataclass(frozen=True, slots=True)
class EnforcementResult:
    state: EnforcementState
    advertised_a: float
    blocked: bool
    reason: str | None
    event: str | None


def enforce(
    previous: EnforcementState, word: str, limit_a: float, measured_a: float, now_s: float, tuning: LimitsSettings
) -> EnforcementResult:
    """``measured_a``: the current in this side's direction (≥ 0 when flowing that way), A."""
    margin, after = tuning.overshoot_margin_a, tuning.overshoot_after_s
    stage, factor = previous.stage, previous.factor
    over = measured_a > limit_a + margin
    event: str | None = None
    over_since = (previous.over_since_s if previous.over_since_s is not None else now_s) if over else None
    # Forgiveness needs the inverter to keep within what it is *told*: one that still takes the true limit
    # against a lowered advertisement is still overshooting, only compensated.
    within_advertised = measured_a <= limit_a * factor + margin
    obeyed_since = (
        (previous.obeyed_since_s if previous.obeyed_since_s is not None else now_s) if within_advertised else None
    )

    if over and over_since is not None and now_s - over_since >= after:
        if stage is Enforcement.OBEYED and limit_a > 0:
            excess = measured_a - limit_a
            factor = max(0.0, (limit_a * factor - excess) / limit_a)
            stage = Enforcement.COMPENSATED
            event = (
                f"enforce: inverter {word}s {measured_a:.1f} A against a limit of {limit_a:.1f} A for "
                f"{now_s - over_since:.0f} s: advertising {limit_a * factor:.1f} A"
            )
        elif stage is not Enforcement.BLOCKED:
            stage = Enforcement.BLOCKED
            event = (
                f"enforce: inverter still {word}s {measured_a:.1f} A against a limit of {limit_a:.1f} A: "
                f"{word} disabled until it obeys"
            )
        over_since = now_s
    elif not over and stage is Enforcement.BLOCKED:
        stage = Enforcement.COMPENSATED if factor < 1.0 else Enforcement.OBEYED
        event = f"enforce: {word} current {measured_a:.1f} A obeys the limit {limit_a:.1f} A again: {word} enabled"
    elif (
        stage is Enforcement.COMPENSATED
        and obeyed_since is not None
        and now_s - obeyed_since >= tuning.overshoot_forgive_s
    ):
        stage, factor = Enforcement.OBEYED, 1.0
        event = f"enforce: {word} obeyed for {tuning.overshoot_forgive_s / 60:.0f} min: compensation dropped"

    state = EnforcementState(stage, factor, over_since, obeyed_since)
    if stage is Enforcement.BLOCKED:
        return EnforcementResult(state, 0.0, True, f"inverter ignored the {word} limit: {word} disabled", event)
    if stage is Enforcement.COMPENSATED:
        return EnforcementResult(
            state,
            limit_a * factor,
            False,
            f"inverter overshoots: {limit_a:.1f} A advertised as {limit_a * factor:.1f} A",
            event,
        )
    return EnforcementResult(state, limit_a, False, None, event)
