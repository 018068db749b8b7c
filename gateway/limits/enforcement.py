"""Holding the line when the inverter does not obey (pure).

Many inverters overshoot the current limit (one Deye took 126 A when told 108 A). When the measured current
exceeds the limit by more than ``overshoot_margin_a`` for the *patience* (``overshoot_after_s``, but at most a
third of the BMS's over-current delay for that side, so the gateway acts before the BMS trips: battery-safety
audit P1):

1. the advertised limit is lowered by the excess (kept as a fraction of the true limit, so it follows it);
2. if the excess persists for another patience, the side's enable flag is cleared and its limit advertised as 0
   for at least ``enforcement_disable_min_s`` and until the current obeys (no 1 s enable pulses: audit P5),
   then step 1's compensation applies again;
3. after ``overshoot_forgive_s`` of obedience the compensation is dropped.

A BMS over-current alarm on that side while the current was over is proof of overshoot: the compensation is
learned from the excess seen then, and kept across the trip. After the limit fell, the inverter gets
``inverter_response_s`` to follow it: for that long an excess counts against the limit before the fall (a slow
inverter is not a disobedient one, battery-safety audit P5); falls within that time do not extend it, so an
inverter that takes more than a limit falling step by step is still caught. An inverter still *moving towards*
the limit after that (its current falling at least half as fast, :data:`FOLLOW_RATE_SHARE`, as a first-order lag
of ``inverter_response_s`` would close the excess, and at least :data:`FOLLOW_MIN_RATE_A_PER_S`) is not counted
either, for at most :data:`FOLLOW_TIME_CONSTANTS` × ``inverter_response_s`` after the fall: a lag of 20 s is
still 37 % short after 20 s, 5 % after 60 s.

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
    blocked_since_s: float | None = None
    """Since when the side is disabled, s."""
    limit_a: float | None = None
    """The true limit of the previous call, A."""
    grace_limit_a: float | None = None
    """While the inverter follows a fall: the limit before it, A; None otherwise."""
    grace_until_s: float = 0.0
    """Until when the excess counts against :attr:`grace_limit_a`, s."""
    excess_a: float = 0.0
    """The excess measured while over, A (what an over-current alarm is taken to prove)."""
    measured_a: float | None = None
    """The current of the previous call, A (whether the inverter is moving towards the limit)."""
    measured_at_s: float | None = None
    """When :attr:`measured_a` was measured, s."""
    follow_until_s: float = 0.0
    """Until when an inverter moving towards a fallen limit is not counted, s."""


@dataclass(frozen=True, slots=True)
class EnforcementResult:
    state: EnforcementState
    advertised_a: float
    blocked: bool
    reason: str | None
    event: str | None


FOLLOW_TIME_CONSTANTS = 3.0
"""After a fall, an inverter moving towards the limit is not counted for this many ``inverter_response_s``."""
FOLLOW_RATE_SHARE = 0.5
"""Moving towards the limit: falling at least this share of the rate of a first-order lag of
``inverter_response_s`` (a sampled lag, a limit that moves meanwhile and noise all make the rate seen lower)."""
FOLLOW_MIN_RATE_A_PER_S = 0.1
"""A current falling slower than this is not moving towards the limit (noise, or an inverter that holds), A/s."""

PATIENCE_SHARE_OF_BMS_DELAY = 1 / 3
"""Enforcement's patience is at most this share of the BMS's over-current delay: both of its steps (compensate,
then disable) fit in two thirds of the delay, leaving a third for the CVL lever to bring the current down."""


def patience_s(tuning: LimitsSettings, bms_ocp_delay_s: float | None) -> float:
    """How long an excess may last before enforcement acts, s: ``overshoot_after_s``, at most a third of the
    BMS's over-current delay (when the BMS states one; the issue's bound is half)."""
    if bms_ocp_delay_s is None or bms_ocp_delay_s <= 0:
        return tuning.overshoot_after_s
    return min(tuning.overshoot_after_s, PATIENCE_SHARE_OF_BMS_DELAY * bms_ocp_delay_s)


def enforce(
    previous: EnforcementState,
    word: str,
    limit_a: float,
    measured_a: float,
    now_s: float,
    tuning: LimitsSettings,
    *,
    patience: float | None = None,
    over_current_alarm: bool = False,
) -> EnforcementResult:
    """``measured_a``: the current in this side's direction (≥ 0 when flowing that way), A.

    :param patience: see :func:`patience_s` (default ``overshoot_after_s``).
    :param over_current_alarm: the BMS reports its over-current protection on this side.
    """
    margin = tuning.overshoot_margin_a
    after = tuning.overshoot_after_s if patience is None else patience
    stage, factor = previous.stage, previous.factor
    grace_limit, grace_until = previous.grace_limit_a, previous.grace_until_s
    if now_s >= grace_until:
        grace_limit = None
    follow_until = previous.follow_until_s
    if grace_limit is None and previous.limit_a is not None and limit_a < previous.limit_a - 1e-9:
        grace_limit, grace_until = previous.limit_a, now_s + tuning.inverter_response_s
        follow_until = now_s + FOLLOW_TIME_CONSTANTS * tuning.inverter_response_s
    judged_against = max(limit_a, grace_limit) if grace_limit is not None else limit_a
    over = measured_a > judged_against + margin
    event: str | None = None
    over_since = (previous.over_since_s if previous.over_since_s is not None else now_s) if over else None
    if over and now_s < follow_until and _moving_towards(previous, measured_a, limit_a, now_s, tuning):
        over_since = now_s  # slow, not disobedient: the patience starts when it stops closing in
    excess = measured_a - limit_a if over else previous.excess_a
    # Forgiveness needs the inverter to keep within what it is *told*: one that still takes the true limit
    # against a lowered advertisement is still overshooting, only compensated.
    within_advertised = measured_a <= limit_a * factor + margin
    obeyed_since = (
        (previous.obeyed_since_s if previous.obeyed_since_s is not None else now_s) if within_advertised else None
    )
    blocked_since = previous.blocked_since_s

    # The limit the inverter overshot: the BMS's own block has made this call's limit 0.
    reference = previous.limit_a if previous.limit_a else limit_a
    if over_current_alarm and stage is Enforcement.OBEYED and reference > 0 and previous.excess_a > 0:
        # The BMS tripped on the overshoot before the patience ran out: learn the excess it proves, keep it.
        factor = max(0.0, (reference - previous.excess_a) / reference)
        stage = Enforcement.COMPENSATED
        event = (
            f"enforce: the BMS reports {word} over-current after the inverter took {previous.excess_a:.1f} A more "
            f"than {reference:.1f} A: advertising {reference * factor:.1f} A"
        )
    elif over and over_since is not None and now_s - over_since >= after:
        if stage is Enforcement.OBEYED and limit_a > 0:
            factor = max(0.0, (limit_a * factor - excess) / limit_a)
            stage = Enforcement.COMPENSATED
            event = (
                f"enforce: inverter {word}s {measured_a:.1f} A against a limit of {limit_a:.1f} A for "
                f"{now_s - over_since:.0f} s: advertising {limit_a * factor:.1f} A"
            )
        elif stage is not Enforcement.BLOCKED:
            stage, blocked_since = Enforcement.BLOCKED, now_s
            event = (
                f"enforce: inverter still {word}s {measured_a:.1f} A against a limit of {limit_a:.1f} A: "
                f"{word} disabled until it obeys (at least {tuning.enforcement_disable_min_s:.0f} s)"
            )
        over_since = now_s
    elif (
        not over
        and stage is Enforcement.BLOCKED
        and (blocked_since is None or now_s - blocked_since >= tuning.enforcement_disable_min_s)
    ):
        stage = Enforcement.COMPENSATED if factor < 1.0 else Enforcement.OBEYED
        blocked_since = None
        event = f"enforce: {word} current {measured_a:.1f} A obeys the limit {limit_a:.1f} A again: {word} enabled"
    elif (
        stage is Enforcement.COMPENSATED
        and obeyed_since is not None
        and now_s - obeyed_since >= tuning.overshoot_forgive_s
    ):
        stage, factor = Enforcement.OBEYED, 1.0
        event = f"enforce: {word} obeyed for {tuning.overshoot_forgive_s / 60:.0f} min: compensation dropped"

    state = EnforcementState(
        stage,
        factor,
        over_since,
        obeyed_since,
        blocked_since,
        limit_a,
        grace_limit,
        grace_until,
        excess,
        measured_a,
        now_s,
        follow_until,
    )
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


def _moving_towards(
    previous: EnforcementState, measured_a: float, limit_a: float, now_s: float, tuning: LimitsSettings
) -> bool:
    """The current fell since the previous call at least as fast as a first-order lag of ``inverter_response_s``
    closes the excess (and at least :data:`FOLLOW_MIN_RATE_A_PER_S`)."""
    if previous.measured_a is None or previous.measured_at_s is None or now_s <= previous.measured_at_s:
        return False
    rate_a_per_s = (previous.measured_a - measured_a) / (now_s - previous.measured_at_s)
    lag_rate_a_per_s = (measured_a - limit_a) / max(tuning.inverter_response_s, 1e-9)
    return rate_a_per_s >= max(FOLLOW_MIN_RATE_A_PER_S, FOLLOW_RATE_SHARE * lag_rate_a_per_s)
