"""The limits engine: (reading, tuning, previous memory, now) → (Limits, memory, events). Pure.

Per side, the current limit is the lowest of the ceiling, the cell-voltage taper, the battery-temperature
window and the MOS-temperature derating; an alarm blocking that side, its MOS being off, stale data or
invalid values make it 0. The result then moves with the dynamics of :mod:`gateway.limits.dynamics` (hard
zeros bypass them), and :mod:`gateway.limits.enforcement` decides what is advertised. The charge voltage comes
from :mod:`gateway.limits.charge_voltage`. Every limit carries the limiter that set it and why.

The memory is an immutable value: the caller keeps it between calls (see :class:`LimitsEngine`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from gateway.limits import limiters
from gateway.limits.charge_voltage import SECONDS_PER_DAY, ChargePhase, VoltageState, start_voltage, step_voltage
from gateway.limits.dynamics import RampState, step_ramp
from gateway.limits.enforcement import EnforcementState, enforce, patience_s
from gateway.limits.limiters import Candidate
from gateway.limits.rounding import round_down, round_up
from gateway.limits.settings import LimitsSettings
from gateway.limits.thresholds import OVP_HEADROOM_V, Thresholds, derive_thresholds
from gateway.model import Alarm, BatteryState, LimitReason, Limits, PackReading, Side

FORCE_CHARGE_RELEASE_PCT = 5.0
"""Force charge ends this far above where it started, %."""


@dataclass(frozen=True, slots=True)
class SideMemory:
    ramp: RampState | None
    """None at start: the first limit is taken as computed (a restart must not starve a running inverter)."""
    enforcement: EnforcementState = field(default_factory=EnforcementState)
    latches: tuple[tuple[str, str], ...] = ()
    """(limiter, latch) pairs held after the last evaluation."""

    def latch(self, limiter: str) -> str | None:
        return dict(self.latches).get(limiter)


@dataclass(frozen=True, slots=True)
class EngineMemory:
    charge: SideMemory
    discharge: SideMemory
    voltage: VoltageState
    discharge_voltage_v: float = 0.0
    """The DVL last published, V."""
    force_charge: bool = False
    blocked_cvl_v: float | None = None
    """While charging is blocked: the CVL the block allows (see :func:`_blocked_cvl`), V; None otherwise."""
    blocked_cvl_at_s: float = 0.0
    blocked_dvl_v: float | None = None
    """While discharging is blocked: the DVL the block sets (see :func:`_blocked_dvl`), V; None otherwise."""


@dataclass(frozen=True, slots=True)
class EngineResult:
    limits: Limits
    memory: EngineMemory | None
    """None when the reading could not be used (the next good reading starts afresh from 0 A)."""
    thresholds: Thresholds | None
    events: tuple[str, ...] = field(default=())


def _zero_limits(reading: PackReading, now_s: float, why: str, last_cvl: float, last_dvl: float) -> Limits:
    reason = LimitReason("invalid", why)
    return Limits(
        computed_at_s=reading.measured_at_s,
        charge_voltage_limit_v=last_cvl,
        charge_current_limit_a=0.0,
        discharge_current_limit_a=0.0,
        discharge_voltage_limit_v=last_dvl,
        charge_enable=False,
        discharge_enable=False,
        reasons={
            "charge_current_limit_a": reason,
            "discharge_current_limit_a": reason,
            "charge_enable": reason,
            "discharge_enable": reason,
        },
        soc_pct=reading.state.soc_pct if math.isfinite(reading.state.soc_pct) else 0.0,
    )


def _voltages_from_settings(reading: PackReading, cell_count: int, tuning: LimitsSettings) -> tuple[float, float]:
    """(CVL, DVL) from the settings alone, V, when they are usable; else (0, 0)."""
    bms = reading.settings
    volts = (bms.cell_ovp_v, bms.cell_uvp_v, bms.cell_ovpr_v, bms.cell_uvpr_v)
    if cell_count <= 0 or not all(math.isfinite(v) and v > 0 for v in volts) or not bms.cell_uvp_v < bms.cell_ovp_v:
        return 0.0, 0.0
    t = derive_thresholds(bms, cell_count, tuning)
    return min(t.bulk_pack_v, t.max_pack_cvl_v), t.cell_count * t.discharge_cutoff_v


def _unusable(reading: PackReading, now_s: float, max_age_s: float) -> str | None:
    """Why nothing in ``reading`` can be trusted, or None."""
    state, bms = reading.state, reading.settings
    age = now_s - reading.measured_at_s
    if not math.isfinite(age) or age > max_age_s:
        return f"BMS data {age:.0f} s old"
    cells = state.cell_voltages_v
    if not cells or not all(math.isfinite(v) and v > 0 for v in cells):
        return "no valid cell voltages"
    if not (math.isfinite(state.soc_pct) and math.isfinite(state.current_a)):
        return "SOC or current not a number"
    for name in ("cell_ovp_v", "cell_uvp_v", "cell_ovpr_v", "cell_uvpr_v"):
        if not math.isfinite(getattr(bms, name)) or getattr(bms, name) <= 0:
            return f"BMS setting {name} invalid"
    if not bms.cell_uvp_v < bms.cell_ovp_v:
        return f"BMS settings: UVP {bms.cell_uvp_v:.3f} V not below OVP {bms.cell_ovp_v:.3f} V"
    return None


BLOCKED_REST_A = 1.0
"""While charging is blocked, a current this small either way counts as the pack at rest, A."""
BLOCKED_CVL_STEP_V_PER_CELL_S = 0.02
"""While charging is blocked and current still flows in, CVL steps down this fast, V per cell per second (0.32 V/s
for 16S: some 30 A/s less from a CV charger through 10 mΩ)."""
CVL_RETURNS_SLOWLY_AFTER = frozenset({"cell_voltage", "enforcement", "alarm"})
"""Blocks after which CVL comes back from the blocked CVL through the charge logic's hold and ramp, not in one step
(audit P13): the cells ran high or the inverter pushed past CCL, and a charger that follows only CVL would take
its full current again at once. After a temperature block CVL returns at once: it said nothing of the cells."""


def _blocked_cvl(memory: EngineMemory, state: BatteryState, cell_count: int, now_s: float, floor_v: float) -> float:
    """The CVL while charging is blocked.

    At rest it is the pack voltage, so a CV charger has nothing to push with and an inverter nothing to discharge
    towards (some discharge to reach a CVL under the pack voltage: yambms#46). While current still flows in, the
    pack voltage carries the charger's I × R, and a CV charger would hold its current at it: CVL steps down from
    the lowest it was until the current stops (never below ``floor_v``, the DVL), never below the pack voltage at
    rest (where it returns as soon as the current does). While current flows out, it steps back up, so an
    inverter discharging towards a low CVL is pushed back.
    """
    pack_v = sum(state.cell_voltages_v)
    previous = memory.blocked_cvl_v
    if previous is None or abs(state.current_a) <= BLOCKED_REST_A:
        return pack_v
    step_v = BLOCKED_CVL_STEP_V_PER_CELL_S * cell_count * max(0.0, now_s - memory.blocked_cvl_at_s)
    if state.current_a > 0:
        return max(floor_v, min(previous, pack_v) - step_v)
    return max(previous, pack_v) + step_v


def _blocked_dvl(memory: EngineMemory, state: BatteryState, cell_count: int, now_s: float) -> float:
    """The DVL while discharging is blocked: the mirror of :func:`_blocked_cvl` (battery-safety audit P10).

    At rest it is the pack voltage, so a load that stops only at DVL does not start. While current still flows
    out, the pack voltage sits below its rest voltage by the load's I × R, and a load that stops at DVL would go
    on at it: DVL steps up from the highest it was until the current stops. While current flows in, it holds.
    """
    pack_v = sum(state.cell_voltages_v)
    previous = memory.blocked_dvl_v
    if previous is None or abs(state.current_a) <= BLOCKED_REST_A:
        return pack_v
    if state.current_a > 0:
        return min(previous, pack_v)
    step_v = BLOCKED_CVL_STEP_V_PER_CELL_S * cell_count * max(0.0, now_s - memory.blocked_cvl_at_s)
    return max(previous, pack_v) + step_v


def _side(
    side: Side,
    reading: PackReading,
    t: Thresholds,
    tuning: LimitsSettings,
    memory: SideMemory,
    now_s: float,
) -> tuple[float, bool, LimitReason, SideMemory, str | None]:
    """(advertised limit A, enable, reason, memory, event) for one side."""
    state = reading.state
    word = "charge" if side is Side.CHARGE else "discharge"
    ceiling_a = t.charge_ceiling_a if side is Side.CHARGE else t.discharge_ceiling_a
    origin = t.origins.get(f"{word}_ceiling_a", "ceiling")
    candidates: list[Candidate] = [limiters.ceiling(side, ceiling_a, origin)]
    voltage = limiters.cell_voltage(side, state, t, ceiling_a, memory.latch("cell_voltage"))
    temperature = limiters.battery_temperature(
        side, state, t, ceiling_a, tuning.temperature_margin_c, memory.latch("temperature")
    )
    mos = limiters.mos_temperature(state, t, ceiling_a, memory.latch("mos_temperature"))
    deep = limiters.deep_discharge(
        side,
        state,
        t,
        ceiling_a,
        tuning.recovery_current_c,
        reading.settings.capacity_ah,
        memory.latch(limiters.DEEP_DISCHARGE),
    )
    candidates += [voltage, temperature, mos, deep]
    if side is Side.CHARGE and tuning.soc_ccl_taper is not None:
        candidates.append(limiters.soc_taper(state, ceiling_a, tuning.soc_ccl_taper))
    latches = tuple((c.limiter, c.latch) for c in (voltage, temperature, mos, deep) if c.latch is not None)
    blocked = limiters.bms_blocks(side, state)
    hard_zero = blocked is not None or any(c.current_a <= 0.0 for c in candidates)
    # The lowest wins; among equals the first (the ceiling before the others) names the reason.
    winner = blocked if blocked is not None else min(candidates, key=lambda c: c.current_a)
    target = max(0.0, min(winner.current_a, ceiling_a))

    if hard_zero:
        ramp = RampState(0.0, now_s + tuning.current_hold_s, now_s)
    elif memory.ramp is None:
        ramp = RampState(target, now_s, now_s)
    else:
        ramp = step_ramp(
            memory.ramp,
            target,
            now_s,
            hold_s=tuning.current_hold_s,
            ramp_a_per_s=tuning.current_ramp_a_per_s,
            deadband_a=tuning.current_deadband_a,
        )
    limit_a = min(ramp.output_a, ceiling_a)
    reason = LimitReason(winner.limiter, winner.reason)
    if not hard_zero and limit_a < target - 1e-6:
        if now_s < ramp.hold_until_s:
            reason = LimitReason(
                "hold", f"held {ramp.hold_until_s - now_s:.0f} s before rising to {target:.1f} A ({winner.reason})"
            )
        elif ramp.rising:
            reason = LimitReason("ramp", f"rising to {target:.1f} A ({winner.limiter}: {winner.reason})")
        else:
            reason = LimitReason(
                winner.limiter, f"{winner.reason} (within the {tuning.current_deadband_a:g} A dead-band)"
            )
    elif not hard_zero and limit_a > target + 1e-6:
        reason = LimitReason(winner.limiter, f"{winner.reason} (within the {tuning.current_deadband_a:g} A dead-band)")

    measured = state.current_a if side is Side.CHARGE else -state.current_a
    settings = reading.settings
    delay = settings.charge_ocp_delay_s if side is Side.CHARGE else settings.discharge_ocp_delay_s
    alarm = Alarm.CHARGE_OVER_CURRENT if side is Side.CHARGE else Alarm.DISCHARGE_OVER_CURRENT
    enforced = enforce(
        memory.enforcement,
        word,
        limit_a,
        measured,
        now_s,
        tuning,
        patience=patience_s(tuning, delay),
        over_current_alarm=alarm in state.alarms,
    )
    advertised = enforced.advertised_a
    if enforced.reason is not None and advertised < limit_a:
        reason = LimitReason("enforcement", enforced.reason)
    new_memory = SideMemory(ramp, enforced.state, latches)
    return advertised, advertised > 0.0 and not enforced.blocked, reason, new_memory, enforced.event


def compute_limits(
    reading: PackReading,
    tuning: LimitsSettings,
    memory: EngineMemory | None,
    now_s: float,
    *,
    max_age_s: float = 10.0,
) -> EngineResult:
    """Limits for ``reading`` at monotonic ``now_s``; ``memory`` from the previous call (None at start).

    :param max_age_s: a reading older than this is stale: both currents 0.
    """
    # The cells measured, not the setting: a setting one too high gives a CVL above OVP per cell (audit P12);
    # the mismatch is an audit error (gateway.audit).
    cell_count = reading.state.cell_count or reading.settings.cell_count
    problem = _unusable(reading, now_s, max_age_s)
    if problem is not None:
        # Currents 0; voltage limits as before (they derive from settings), latches and phase kept so that one
        # bad reading cannot reopen a cut-off. The ramps restart: the inverter was just told 0 A.
        if memory is not None:
            cvl, dvl = memory.voltage.output_v, memory.discharge_voltage_v
            memory = replace(
                memory, charge=replace(memory.charge, ramp=None), discharge=replace(memory.discharge, ramp=None)
            )
        else:
            cvl, dvl = _voltages_from_settings(reading, cell_count, tuning)
        if cvl > 0.0:
            # The same offset as with a usable reading: the inverter's reading is no better when the BMS's is stale.
            cvl, dvl = cvl + tuning.inverter_voltage_offset_v, dvl + tuning.inverter_voltage_offset_v
        return EngineResult(_zero_limits(reading, now_s, problem, round_down(cvl, 3), round_up(dvl, 3)), memory, None)
    t = derive_thresholds(reading.settings, cell_count, tuning)
    if memory is None:
        memory = EngineMemory(SideMemory(None), SideMemory(None), start_voltage(t, now_s))
    state = reading.state
    events: list[str] = []

    ccl, charge_enable, charge_reason, charge_memory, event = _side(
        Side.CHARGE, reading, t, tuning, memory.charge, now_s
    )
    events += [event] if event else []
    dcl, discharge_enable, discharge_reason, discharge_memory, event = _side(
        Side.DISCHARGE, reading, t, tuning, memory.discharge, now_s
    )
    events += [event] if event else []
    deeply_discharged = charge_memory.latch(limiters.DEEP_DISCHARGE)
    if deeply_discharged != memory.charge.latch(limiters.DEEP_DISCHARGE):
        events.append(_deep_discharge_event(deeply_discharged, state.min_cell_v))

    voltage = step_voltage(memory.voltage, state, t, tuning, now_s, capacity_ah=reading.settings.capacity_ah)
    events += voltage.events
    cvl = min(voltage.state.output_v, t.max_pack_cvl_v)
    dvl = t.cell_count * t.discharge_cutoff_v

    soc = state.soc_pct
    soc_reason = LimitReason("bms", f"BMS SOC {soc:g} %")
    floated = voltage.state.phase is ChargePhase.FLOAT
    if tuning.soc_cap_pct is not None and not floated and soc > tuning.soc_cap_pct:
        soc_reason = LimitReason("soc_cap", f"BMS SOC {soc:g} % shown as {tuning.soc_cap_pct:g} % until float")
        soc = tuning.soc_cap_pct

    force = memory.force_charge
    if tuning.force_charge_soc_pct is None:
        force = False
    elif state.soc_pct <= tuning.force_charge_soc_pct:
        force = True
    elif state.soc_pct >= tuning.force_charge_soc_pct + FORCE_CHARGE_RELEASE_PCT:
        force = False
    if force != memory.force_charge:
        events.append(f"force charge {'requested' if force else 'ended'} at SOC {state.soc_pct:g} %")
    force_flag = force and charge_enable
    since_float = now_s - voltage.state.last_float_s
    full_request = (
        tuning.full_charge_interval_days is not None
        and not floated
        and since_float >= tuning.full_charge_interval_days * SECONDS_PER_DAY
    )

    # Published values round towards safety: currents and CVL down, DVL up; an enable follows the rounded limit.
    ccl, dcl = round_down(ccl, 2), round_down(dcl, 2)
    charge_enable = charge_enable and ccl > 0.0
    discharge_enable = discharge_enable and dcl > 0.0
    force_flag = force_flag and charge_enable

    # CVL is the second lever (battery-safety audit P2): while charging is blocked (a cut-off, a temperature,
    # enforcement, an alarm), a charger that ignores CCL and the enables must have nothing to push with.
    blocked_cvl = None
    cvl_reason = LimitReason(voltage.limiter, voltage.reason)
    if not charge_enable:
        blocked_cvl = _blocked_cvl(memory, state, t.cell_count, now_s, dvl)
        # Whatever the charge logic wanted, above or below: a CVL under the pack would make some inverters
        # discharge towards it (an LTO bulk on LiFePO4 cells, audit P7), one above it lets a charger push.
        # Capped by the BMS's own OVP (not the thresholds' chemistry, which may be the contradicting type's).
        cvl = min(blocked_cvl, t.cell_count * (reading.settings.cell_ovp_v - OVP_HEADROOM_V))
        cvl_reason = LimitReason(
            "charge_blocked", f"charging blocked ({charge_reason.limiter}): CVL {cvl:.2f} V at the pack voltage"
        )
        if charge_reason.limiter in CVL_RETURNS_SLOWLY_AFTER and blocked_cvl <= voltage.state.output_v:
            voltage = replace(
                voltage,
                state=replace(voltage.state, output_v=blocked_cvl, hold_until_s=now_s + tuning.cvl_hold_s),
            )
    # DVL is the discharge lever, the mirror (battery-safety audit P10): while discharging is blocked, a load that
    # stops only at DVL must stop. Never above CVL (both at the pack voltage where both levers are needed), never
    # below cells × UVP.
    blocked_dvl = None
    dvl_reason = LimitReason("cell_voltage", f"discharge cut-off {t.discharge_cutoff_v:.3f} V × {t.cell_count}")
    if not discharge_enable:
        blocked_dvl = _blocked_dvl(memory, state, t.cell_count, now_s)
        if blocked_dvl > dvl:
            dvl = blocked_dvl
            dvl_reason = LimitReason(
                "discharge_blocked",
                f"discharging blocked ({discharge_reason.limiter}): DVL {dvl:.2f} V at the pack voltage",
            )
    dvl = max(min(dvl, cvl), t.cell_count * reading.settings.cell_uvp_v)
    # The DVL meant at the battery is kept for a stale reading (the offset is added again then).
    battery_dvl_v = round_up(dvl, 3)
    cvl, dvl, cvl_reason, dvl_reason = _offset_for_inverter(cvl, dvl, cvl_reason, dvl_reason, t, tuning)
    limits = Limits(
        computed_at_s=reading.measured_at_s,
        charge_voltage_limit_v=round_down(cvl, 3),
        charge_current_limit_a=ccl,
        discharge_current_limit_a=dcl,
        discharge_voltage_limit_v=round_up(dvl, 3),
        charge_enable=charge_enable,
        discharge_enable=discharge_enable,
        force_charge=force_flag,
        full_charge_request=full_request,
        reasons={
            "charge_current_limit_a": charge_reason,
            "discharge_current_limit_a": discharge_reason,
            "charge_voltage_limit_v": cvl_reason,
            "discharge_voltage_limit_v": dvl_reason,
            "charge_enable": charge_reason,
            "discharge_enable": discharge_reason,
            "soc_pct": soc_reason,
            **(
                {
                    "force_charge": LimitReason(
                        "soc", f"SOC {state.soc_pct:g} % at or below {tuning.force_charge_soc_pct:g} %"
                    )
                }
                if force_flag
                else {}
            ),
            **(
                {
                    "full_charge_request": LimitReason(
                        "calibration", f"no float for {since_float / SECONDS_PER_DAY:.0f} days"
                    )
                }
                if full_request
                else {}
            ),
        },
        soc_pct=soc,
        charge_phase=voltage.state.phase.value,
        cell_deeply_discharged=deeply_discharged is not None,
    )
    new_memory = replace(
        memory,
        charge=charge_memory,
        discharge=discharge_memory,
        voltage=voltage.state,
        discharge_voltage_v=battery_dvl_v,
        force_charge=force,
        blocked_cvl_v=blocked_cvl,
        blocked_cvl_at_s=now_s,
        blocked_dvl_v=blocked_dvl,
    )
    return EngineResult(limits, new_memory, t, tuple(events))


def _offset_for_inverter(
    cvl_v: float,
    dvl_v: float,
    cvl_reason: LimitReason,
    dvl_reason: LimitReason,
    t: Thresholds,
    tuning: LimitsSettings,
) -> tuple[float, float, LimitReason, LimitReason]:
    """CVL and DVL as the inverter must hear them when its voltage reading is ``inverter_voltage_offset_v`` above
    the BMS's (``charging.inverter_voltage_offset_v``): both raised by it (lowered when negative), as the inverter
    compares both with its one reading. The CVL it implies at the battery (sent − offset) never exceeds cells ×
    (OVP − headroom), whatever the charge logic or a block asked for."""
    offset_v = tuning.inverter_voltage_offset_v
    if offset_v == 0.0:
        return cvl_v, dvl_v, cvl_reason, dvl_reason
    cvl_v = min(cvl_v, t.max_pack_cvl_v) + offset_v
    dvl_v = dvl_v + offset_v
    note = f"{'+' if offset_v > 0 else '−'}{abs(offset_v):g} V inverter offset"
    return (
        cvl_v,
        dvl_v,
        LimitReason(cvl_reason.limiter, f"{cvl_reason.reason} ({note})"),
        LimitReason(dvl_reason.limiter, f"{dvl_reason.reason} ({note})"),
    )


def _deep_discharge_event(latch: str | None, lowest_cell_v: float) -> str:
    """The log line when a deep discharge begins, changes between recovery and no charge, or ends."""
    if latch is None:
        return f"deep discharge over: lowest cell at {lowest_cell_v:.3f} V, normal charging resumes"
    if latch == "no_charge":
        return f"deep discharge: lowest cell at {lowest_cell_v:.3f} V, no charging and no discharging: check the cell"
    return (
        f"deep discharge: lowest cell at {lowest_cell_v:.3f} V, charging limited to the recovery current "
        "(limits.recovery_current_c), no discharging"
    )


class LimitsEngine:
    """Keeps the engine's memory between readings; the thin stateful shell around :func:`compute_limits`."""

    def __init__(self, tuning: LimitsSettings, *, max_age_s: float = 10.0) -> None:
        self.tuning = tuning
        self.max_age_s = max_age_s
        self.memory: EngineMemory | None = None
        self.thresholds: Thresholds | None = None

    def resume(self) -> None:
        """After a fail-safe period (the inverter was told 0 A), take the next limits as computed instead of
        ramping from 0: fresh data justifies them, and an off-grid inverter should not starve longer."""
        if self.memory is not None:
            self.memory = replace(
                self.memory,
                charge=replace(self.memory.charge, ramp=None),
                discharge=replace(self.memory.discharge, ramp=None),
            )

    def update(self, reading: PackReading, now_s: float) -> EngineResult:
        result = compute_limits(reading, self.tuning, self.memory, now_s, max_age_s=self.max_age_s)
        self.memory = result.memory
        if result.thresholds is not None:
            self.thresholds = result.thresholds
        return result
