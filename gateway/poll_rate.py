"""How often to poll the BMS: fast near a threshold, slow away from every one (pure).

A pack far from every threshold changes slowly, and polling it at ``bms.poll_interval_s`` (1 s) costs little CPU and
bus time. Near a threshold the limits must react fast: a cell past its knee can reach OVP within a second. So the
poller runs at ``bms.fast_poll_interval_s`` (0.2 s, or as fast as a bus of several packs allows) while **any** of:

* a cell is past a knee: the highest above the charge knee, or the lowest below the discharge knee;
* a battery temperature is within a derating band of the charge or discharge window, or the MOS temperature within
  its derating band;
* a current limit is ramping, held before rising, or at 0 (a cut-off, a block: its release must be seen at once);
* the fail-safe is not normal (waiting for the first reading, stale, silent).

Hysteresis keeps it from flapping at a knee: once fast, the voltage and temperature triggers release only
:data:`VOLTAGE_HYSTERESIS_V` / :data:`TEMPERATURE_HYSTERESIS_C` back inside their band, and the slow rate returns
only after no trigger held for :data:`FAST_HOLD_S`.

:func:`decide_poll_rate` is a pure function of the readings, their thresholds (:attr:`LimitsEngine.thresholds`),
the limits, the fail-safe state and the previous decision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.limits.limiters import CHARGE_LOW_BAND, DISCHARGE_LOW_BAND, HIGH_BAND, MOS_FULL_BELOW_OTPR_C
from gateway.limits.thresholds import TemperatureWindow, Thresholds
from gateway.model import Limits, PackReading

VOLTAGE_HYSTERESIS_V = 0.010
"""Once fast, a knee trigger releases only this far back inside the knee, V (cell noise is a few mV)."""
TEMPERATURE_HYSTERESIS_C = 1.0
"""Once fast, a temperature trigger releases only this far back outside its derating band, °C."""
FAST_HOLD_S = 10.0
"""The slow rate returns only after no trigger held for this long, s: a limit that dips for one reading does not
switch the rate twice."""
FAST_LIMITERS = frozenset({"ramp", "hold"})
"""Limiters (:class:`~gateway.model.LimitReason`) that mean a current limit is on the move."""


@dataclass(frozen=True, slots=True)
class PackThresholds:
    """One pack's newest reading and the thresholds its limits engine derived for it."""

    reading: PackReading
    thresholds: Thresholds | None
    temperature_margin_c: float = 0.0
    """``limits.temperature_margin_c``: the derating bands start this far inside the BMS's window, °C."""


@dataclass(frozen=True, slots=True)
class PollRate:
    """The poll rate in force and why."""

    interval_s: float
    fast: bool
    why: str
    """One line: ``fast: cell 7 past the charge knee 3.450 V`` or ``slow: every value away from its thresholds``."""
    fast_since_s: float | None = None
    """Monotonic time the fast rate began, s; None while slow."""
    last_trigger_s: float | None = None
    """Monotonic time a trigger last held, s; None while slow."""

    def to_json(self) -> dict[str, object]:
        return {"interval_s": self.interval_s, "fast": self.fast, "why": self.why}


def initial_rate(fast_interval_s: float) -> PollRate:
    """Before the first reading: the fail-safe is waiting, so poll fast."""
    return PollRate(fast_interval_s, True, "fast: fail-safe waiting for the first reading")


def _cells_past_knees(reading: PackReading, t: Thresholds, slack_v: float, label: str) -> str | None:
    cells = reading.state.cell_voltages_v
    finite = [v for v in cells if math.isfinite(v)]
    if not finite:
        return None
    highest, lowest = max(finite), min(finite)
    if highest > t.charge_knee_v - slack_v:
        return f"{label}cell {cells.index(highest) + 1} past the charge knee {t.charge_knee_v:.3f} V ({highest:.3f} V)"
    if lowest < t.discharge_knee_v + slack_v:
        return (
            f"{label}cell {cells.index(lowest) + 1} past the discharge knee {t.discharge_knee_v:.3f} V ({lowest:.3f} V)"
        )
    return None


def _in_window_band(
    temperatures: Sequence[float],
    window: TemperatureWindow,
    low_band: tuple[tuple[float, float], ...],
    margin_c: float,
    slack_c: float,
    word: str,
) -> str | None:
    """Where a temperature is within the derating band near either edge of ``window`` (the limiter's bands)."""
    coldest, hottest = min(temperatures), max(temperatures)
    cold_band_top_c = window.low_c + margin_c + low_band[-1][0] + slack_c
    hot_band_bottom_c = window.high_c - margin_c - HIGH_BAND[-1][0] - slack_c
    if coldest < cold_band_top_c:
        return f"battery at {coldest:g} °C, within the {word} derating band near {window.low_c:g} °C"
    if hottest > hot_band_bottom_c:
        return f"battery at {hottest:g} °C, within the {word} derating band near {window.high_c:g} °C"
    return None


def _temperature_trigger(pack: PackThresholds, t: Thresholds, slack_c: float, label: str) -> str | None:
    state = pack.reading.state
    temperatures = [c for c in state.battery_temperatures_c if c is not None and math.isfinite(c)]
    if temperatures:
        for window, band, word in (
            (t.charge_window, CHARGE_LOW_BAND, "charge"),
            (t.discharge_window, DISCHARGE_LOW_BAND, "discharge"),
        ):
            hit = _in_window_band(temperatures, window, band, pack.temperature_margin_c, slack_c, word)
            if hit is not None:
                return label + hit
    mos = state.mos_temperature_c
    if mos is not None and math.isfinite(mos):
        full_at_c = t.mos_otpr_c - MOS_FULL_BELOW_OTPR_C  # the limiter derates above the lower of this and OTP − 8
        if mos > min(full_at_c, t.mos_otp_c - 8.0) - slack_c:
            return f"{label}MOS at {mos:g} °C, within its derating band"
    return None


def _limits_trigger(limits: Limits | None) -> str | None:
    if limits is None:
        return None
    for name, word in (("charge_current_limit_a", "charge"), ("discharge_current_limit_a", "discharge")):
        reason = limits.reasons.get(name)
        value = getattr(limits, name)
        if reason is not None and reason.limiter in FAST_LIMITERS:
            return f"{word} current limit {'held' if reason.limiter == 'hold' else 'ramping'}"
        if value <= 0.0:
            limiter = f" ({reason.limiter})" if reason is not None else ""
            return f"{word} current limit at 0 A{limiter}"
    return None


def decide_poll_rate(
    packs: Sequence[PackThresholds],
    limits: Limits | None,
    failsafe_normal: bool,
    failsafe_state: str,
    previous: PollRate,
    now_s: float,
    *,
    slow_interval_s: float,
    fast_interval_s: float,
) -> PollRate:
    """The poll rate after this tick (see the module docs); ``previous`` is the last decision."""
    fast_interval_s = min(fast_interval_s, slow_interval_s)
    slack_v = VOLTAGE_HYSTERESIS_V if previous.fast else 0.0
    slack_c = TEMPERATURE_HYSTERESIS_C if previous.fast else 0.0
    several = len(packs) > 1
    trigger: str | None = None
    if not failsafe_normal:
        trigger = f"fail-safe {failsafe_state}"
    for pack in packs:
        if trigger is not None:
            break
        t = pack.thresholds
        if t is None:
            continue
        label = f"{pack.reading.pack_id} " if several else ""
        trigger = _cells_past_knees(pack.reading, t, slack_v, label) or _temperature_trigger(pack, t, slack_c, label)
    if trigger is None:
        trigger = _limits_trigger(limits)
    if trigger is not None:
        since = previous.fast_since_s if previous.fast and previous.fast_since_s is not None else now_s
        return PollRate(fast_interval_s, True, f"fast: {trigger}", since, now_s)
    if previous.fast and previous.last_trigger_s is not None and now_s - previous.last_trigger_s < FAST_HOLD_S:
        why = previous.why if "(until" in previous.why else f"{previous.why} (until {FAST_HOLD_S:g} s after it ends)"
        return PollRate(fast_interval_s, True, why, previous.fast_since_s, previous.last_trigger_s)
    return PollRate(slow_interval_s, False, "slow: every value away from its thresholds")
