"""The charge voltage limit (pure): bulk → absorption → float, re-bulk, and a per-cell over-voltage trim.

* **Bulk**: CVL = cells × bulk. Absorption starts once the pack reaches it (sum of cells within 10 mV per
  cell of it) or the highest cell reaches the bulk voltage.
* **Absorption**: CVL stays at bulk; a timer runs while the cells are balanced (delta at most
  ``absorption_max_delta_v``); after ``absorption_s`` of it, or ``absorption_timeout_s`` in all, float.
  Optionally also by tail current (Nordkyn, YamBMS): balanced at bulk with the charge current at or below
  ``tail_current_c`` × capacity for ``tail_time_s``, the pack is full: float without waiting out ``absorption_s``.
* **Float**: CVL falls slowly (``float_ramp_v_per_s``) to cells × float. Back to bulk when the SOC falls
  below ``rebulk_soc_pct``, when the cell delta reaches ``rebulk_delta_v`` having been below it as float began,
  after ``full_charge_interval_days`` in float, or (optionally) when the highest cell falls below ``rebulk_cell_v``.
* **Over-voltage trim** (bulk and absorption): when cells run above the bulk voltage while others lag (the
  balancer has not caught up), CVL = sum of cells − the sum of their excess, so the inverter stops pushing
  the runner up; clamped to [cells × the chemistry's trim floor (LiFePO4 2.9 V, as dbus-serialbattery), bulk]
  for the pack: not to float, or a charger that follows only CVL would push a runner to OVP (battery-safety
  audit P2). Decreases act at once (beyond a dead-band); increases wait ``cvl_hold_s`` and ramp at
  ``cvl_ramp_v_per_s``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.limits.settings import LimitsSettings
from gateway.limits.thresholds import Thresholds
from gateway.model import BatteryState

REACHED_TOLERANCE_V = 0.010
"""Per cell: the pack counts as at bulk this close below it, V."""
SECONDS_PER_DAY = 86400.0
ABSORPTION_LEAVE_V = 0.030
"""Per cell: absorption pauses its timer while the pack is this far below bulk, V."""


class ChargePhase(enum.StrEnum):
    BULK = "bulk"
    ABSORPTION = "absorption"
    FLOAT = "float"


@dataclass(frozen=True, slots=True)
class VoltageState:
    phase: ChargePhase
    phase_since_s: float
    balanced_s: float
    """Time spent balanced in this absorption, s."""
    output_v: float
    """The pack CVL now, V."""
    hold_until_s: float
    updated_at_s: float
    last_float_s: float
    """When float was last reached (or the engine started), s."""
    float_delta_v: float = 0.0
    """The cell delta when this float began, V (0 outside float)."""
    tail_s: float = 0.0
    """Time spent balanced at bulk with the current at or below the tail current in this absorption, s. Not
    persisted: after a restart the tail timer starts again (a longer absorption, never a shorter one)."""


@dataclass(frozen=True, slots=True)
class VoltageResult:
    state: VoltageState
    limiter: str
    reason: str
    events: tuple[str, ...]


def start_voltage(t: Thresholds, now_s: float) -> VoltageState:
    return VoltageState(ChargePhase.BULK, now_s, 0.0, t.bulk_pack_v, now_s, now_s, now_s)


def tail_current_a(tuning: LimitsSettings, capacity_ah: float | None) -> float | None:
    """The charge current at or below which absorption counts towards its tail-current end, A; None: off (not
    set, or no capacity known)."""
    if tuning.tail_current_c is None or capacity_ah is None or capacity_ah <= 0:
        return None
    return tuning.tail_current_c * capacity_ah


def _next_phase(
    previous: VoltageState,
    state: BatteryState,
    t: Thresholds,
    tuning: LimitsSettings,
    now_s: float,
    dt: float,
    tail_a: float | None,
) -> tuple[ChargePhase, float, float, str | None]:
    """(phase, balanced time, tail time, event) after this reading."""
    cells = state.cell_voltages_v
    n = t.cell_count
    pack = sum(cells)
    delta = max(cells) - min(cells)
    phase, balanced = previous.phase, previous.balanced_s
    if phase is ChargePhase.BULK:
        if pack >= n * (t.bulk_cell_v - REACHED_TOLERANCE_V) or max(cells) >= t.bulk_cell_v:
            event = f"charge: absorption at {pack:.2f} V (cell delta {delta * 1000:.0f} mV)"
            return ChargePhase.ABSORPTION, 0.0, 0.0, event
        return phase, 0.0, 0.0, None
    if phase is ChargePhase.ABSORPTION:
        if state.soc_pct < tuning.rebulk_soc_pct:
            return ChargePhase.BULK, 0.0, 0.0, f"charge: back to bulk, SOC {state.soc_pct:g} % during absorption"
        at_bulk = pack >= n * (t.bulk_cell_v - ABSORPTION_LEAVE_V)
        balanced_now = at_bulk and delta <= tuning.absorption_max_delta_v
        if balanced_now:
            balanced += dt
        # The tail current ends absorption only with the cells balanced: a pack still balancing keeps its
        # absorption (the balancer needs the voltage), and a current that is low because the over-voltage trim
        # holds CVL down does not mean full. Charging, not discharging: 0 A at bulk is full, -5 A is a load.
        tail = previous.tail_s
        in_tail = tail_a is not None and balanced_now and 0.0 <= state.current_a <= tail_a
        tail = tail + dt if in_tail else 0.0
        if tail_a is not None and tail >= tuning.tail_time_s and in_tail:
            return (
                ChargePhase.FLOAT,
                0.0,
                0.0,
                f"charge: float, the current {state.current_a:.1f} A at or below the tail current {tail_a:.1f} A "
                f"for {tail:.0f} s",
            )
        if balanced >= tuning.absorption_s:
            return ChargePhase.FLOAT, 0.0, 0.0, f"charge: float after {balanced / 60:.0f} min balanced at bulk"
        if now_s - previous.phase_since_s >= tuning.absorption_timeout_s:
            return (
                ChargePhase.FLOAT,
                0.0,
                0.0,
                f"charge: float after the {tuning.absorption_timeout_s / 60:.0f} min absorption limit, cells not "
                f"balanced (delta {delta * 1000:.0f} mV)",
            )
        return phase, balanced, tail, None
    if state.soc_pct < tuning.rebulk_soc_pct:
        return (
            ChargePhase.BULK,
            0.0,
            0.0,
            f"charge: re-bulk, SOC {state.soc_pct:g} % below {tuning.rebulk_soc_pct:g} %",
        )
    # Held at float for the full-charge interval (a backup battery that is always full): one absorption, so that
    # the balancer gets the voltage it needs and the BMS's SOC its calibration (YamBMS's re-bulk days). The same
    # key as the full-charge request, which covers the other case: float not reached for that long.
    days = tuning.full_charge_interval_days
    if days is not None and now_s - previous.phase_since_s >= days * SECONDS_PER_DAY:
        return (
            ChargePhase.BULK,
            0.0,
            0.0,
            f"charge: re-bulk, {days:g} days in float (charging.full_charge_interval_days)",
        )
    # Every cell below the re-bulk voltage (the highest one): the pack was used, not just resting at float. Only
    # below float (else every float would re-bulk at once): the config refuses a rebulk_cell_v at or above float_cell_v.
    rebulk_cell_v = tuning.rebulk_cell_v
    if rebulk_cell_v is not None and rebulk_cell_v < t.float_cell_v and max(cells) < rebulk_cell_v:
        return (
            ChargePhase.BULK,
            0.0,
            0.0,
            f"charge: re-bulk, highest cell {max(cells):.3f} V below {rebulk_cell_v:.3f} V",
        )
    # Re-bulk on the delta only when float began with the cells closer than that: a float reached on the
    # absorption timeout with a wider delta (a weak cell the balancer cannot catch up with) would otherwise go
    # straight back to bulk and absorb again, every timeout, for nothing (audit P13). The SOC rule still applies.
    if tuning.rebulk_delta_v <= delta and previous.float_delta_v < tuning.rebulk_delta_v:
        return ChargePhase.BULK, 0.0, 0.0, f"charge: re-bulk, cell delta {delta * 1000:.0f} mV"
    return phase, 0.0, 0.0, None


def step_voltage(
    previous: VoltageState,
    state: BatteryState,
    t: Thresholds,
    tuning: LimitsSettings,
    now_s: float,
    *,
    capacity_ah: float | None = None,
) -> VoltageResult:
    """The CVL after this reading. ``state`` must have finite cell voltages; ``capacity_ah`` (the pack's or the
    battery's) scales the tail current (without it the tail-current end is off)."""
    dt = max(0.0, now_s - previous.updated_at_s)
    phase, balanced, tail, event = _next_phase(
        previous, state, t, tuning, now_s, dt, tail_current_a(tuning, capacity_ah)
    )
    events = (event,) if event else ()
    since = now_s if phase is not previous.phase else previous.phase_since_s
    last_float = now_s if phase is ChargePhase.FLOAT else previous.last_float_s
    out, hold_until = previous.output_v, previous.hold_until_s
    bulk_pack, float_pack = t.bulk_pack_v, t.float_pack_v
    floating = phase is ChargePhase.FLOAT
    nominal = float_pack if floating else bulk_pack
    if previous.phase is ChargePhase.FLOAT and phase is ChargePhase.BULK:
        # Re-bulk happens with the pack well below bulk (SOC under the threshold): step straight up instead of
        # a ramp that would change CVL on the wire every few seconds for minutes.
        out, hold_until = bulk_pack, now_s
    cells = state.cell_voltages_v
    excess = sum(v - t.bulk_cell_v for v in cells if v > t.bulk_cell_v)
    target = nominal
    limiter, reason = phase.value, f"{phase.value} {nominal / t.cell_count:.3f} V × {t.cell_count}"
    trimming = excess > 0 and max(cells) - min(cells) > tuning.absorption_max_delta_v
    if trimming:
        # In float too: a weak cell runs above bulk at float's pack voltage, and a CVL-only charger follows CVL.
        target = min(nominal, max(t.cvl_trim_floor_pack_v, sum(cells) - excess))
        runner = cells.index(max(cells)) + 1
        limiter = "cell_over_voltage"
        reason = f"cell {runner} at {max(cells):.3f} V runs ahead of bulk {t.bulk_cell_v:.3f} V: CVL {target:.2f} V"
    if floating and out > float_pack and not (trimming and target < out - tuning.cvl_deadband_v):
        # Down to float slowly: a sudden CVL far below the pack makes some inverters discharge hard.
        out = max(target, min(out, bulk_pack) - tuning.float_ramp_v_per_s * dt)
        if out < float_pack + 1e-9:
            out = float_pack
        if out > target:
            limiter, reason = "float", f"float: falling to {target:.2f} V at {tuning.float_ramp_v_per_s * 1000:g} mV/s"
    elif target < out - tuning.cvl_deadband_v or out > nominal:
        out, hold_until = min(target, nominal), now_s + tuning.cvl_hold_s
    elif target > out and now_s >= hold_until:
        # Never a step up, also not when float starts below float (after a trim): at most the ramp (audit P13).
        out = min(target, out + tuning.cvl_ramp_v_per_s * dt)
        if limiter != "cell_over_voltage" and out < target:
            limiter, reason = (
                "cvl_recovery",
                f"rising back to {target:.2f} V at {tuning.cvl_ramp_v_per_s * 1000:g} mV/s",
            )
    elif target > out:
        limiter, reason = (
            "cvl_hold",
            f"held at {out:.2f} V for {hold_until - now_s:.0f} s before rising to {target:.2f} V",
        )
    float_delta = 0.0
    if floating:
        float_delta = max(cells) - min(cells) if previous.phase is not ChargePhase.FLOAT else previous.float_delta_v
    return VoltageResult(
        VoltageState(phase, since, balanced, out, hold_until, now_s, last_float, float_delta, tail),
        limiter,
        reason,
        events,
    )
