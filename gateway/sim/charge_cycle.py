"""A charge cycle in compressed time: the limits engine between a simulated JK BMS and a simulated inverter.

The issue's ``bms-gateway simulate charge-cycle``. A simulated clock advances in steps of ``dt_s`` (no
sleeping: the engine is pure and takes the time). Each step:

1. the pack (:mod:`gateway.sim.cell_model`: 16 LiFePO4 cells of slightly different capacity, one 1.5 %
   smaller) carries the inverter's current; the simulated BMS protects it (cell OVP/UVP, over-current) and
   balances it (active balancer at its max current);
2. its reading goes through the real JK NW codec (encode a reply frame, decode it), so the engine sees mV
   cell voltages, 10 mA current and an integer SOC as from a real BMS;
3. :class:`~gateway.limits.engine.LimitsEngine` computes the limits;
4. they go through the pylontech-can profile's 0x351 and 0x35C frames, so the inverter hears 0.1 V / 0.1 A;
5. the inverter responds with a first-order lag: a CV charger towards CVL (at most CCL × ``overshoot``),
   or a constant load (at most DCL × ``overshoot``) until it stops at DCL 0, discharge disabled or DVL.

Schedule: charge from 20 % SOC through absorption to float, stay in float for ``float_hold_s``, then
discharge until the inverter stops, rest ``rest_after_s``, end. ``max_s`` caps the simulated time.
"""

from __future__ import annotations

import enum
import itertools
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Final

from gateway.bms import jk_nw
from gateway.limits.engine import LimitsEngine
from gateway.limits.settings import LimitsSettings
from gateway.model import (
    BatteryState,
    Chemistry,
    DeviceInfo,
    LimitReason,
    Limits,
    PackReading,
    ProtectionSettings,
)
from gateway.profiles import CanFrameCodec, load_profile
from gateway.sim import cycle_output
from gateway.sim.bms_model import BmsTrip, Protection, protect, simulated_bms_settings
from gateway.sim.cell_model import Balancing, PackModel, balance_decision, make_pack
from gateway.sim.cycle_summary import max_changes_per_window
from gateway.sim.inverter import named_values
from gateway.sim.inverter_model import Bus, Heard, Inverter
from gateway.values import Value, published_values

CELL_COUNT: Final = 16
CAPACITY_AH: Final = 100.0
TEMPERATURE_C: Final = 25.0
PROFILE: Final = "pylontech-can"
STEADY_SETTLE_S: Final = 120.0
"""A steady window starts this long after the change that began it, s (the limits settle first)."""
LIMIT_NAMES: Final = ("cvl_v", "ccl_a", "dcl_a")
"""The advertised limits whose changes are counted, as heard on the wire."""


def cycle_settings() -> ProtectionSettings:
    """The issue's 16S LiFePO4 100 Ah settings (OVP 3.65, OVPR 3.40, UVP 2.80, UVPR 3.00, charge 0…45 °C, 100 A
    charge, 150 A discharge, balancer from 3.40 V at 5 mV and 2 A): the simulated BMS of a default scenario pack."""
    return simulated_bms_settings(Chemistry.LIFEPO4, CELL_COUNT, CAPACITY_AH)


# --- the run --------------------------------------------------------------------------------------------------


class Stage(enum.StrEnum):
    CHARGE = "charge"
    FLOAT = "float"
    DISCHARGE = "discharge"
    REST = "rest"


@dataclass(frozen=True, slots=True)
class TraceRow:
    """One step of the cycle. Limits are as the inverter heard them; ``true_*`` is the engine's own limit
    before enforcement compensated an overshooting inverter."""

    time_s: float
    stage: Stage
    cell_voltages_v: tuple[float, ...]
    """As the BMS measured them (mV-quantised by the wire), V."""
    pack_v: float
    current_a: float
    """As the BMS measured it, A (+ charging)."""
    soc_pct: float
    """The pack's capacity-weighted SOC to 0.001 % (the BMS sends it rounded to 1 %), %."""
    cvl_v: float
    ccl_a: float
    dcl_a: float
    dvl_v: float
    charge_enable: bool
    discharge_enable: bool
    charge_phase: str | None
    cvl_limiter: str
    ccl_limiter: str
    ccl_reason: str
    dcl_limiter: str
    true_ccl_a: float
    true_dcl_a: float
    balance_a: float
    """Balancer current, A (0: resting)."""
    charge_mos_on: bool
    discharge_mos_on: bool


@dataclass(frozen=True, slots=True)
class CycleSummary:
    overshoot: float
    reached_float: bool
    float_at_s: float | None
    """When the engine entered float, s."""
    absorption_at_s: float | None
    bms_trips: tuple[BmsTrip, ...]
    max_cell_v: float
    max_cell_at_s: float
    min_cell_v: float
    min_cell_at_s: float
    steady_windows: Mapping[str, tuple[float, float]]
    """Window name → (start, end), s: spans where the inverter's inputs are steady."""
    changes_per_min: Mapping[str, Mapping[str, int]]
    """Window name → limit (:data:`LIMIT_NAMES`) → the most changes on the wire in any minute of it."""
    max_changes_per_min: Mapping[str, int]
    """Limit → the most changes on the wire in any minute of the whole cycle (transitions included)."""
    max_over_ccl_s: float
    """Longest time the measured charge current stayed above the true CCL + the overshoot margin, s."""
    max_over_dcl_s: float
    enforcement_events: int
    end_reason: str
    end_s: float


@dataclass(frozen=True, slots=True)
class CycleResult:
    rows: tuple[TraceRow, ...]
    events: tuple[tuple[float, str], ...]
    """(time s, engine event)."""
    summary: CycleSummary
    wall_s: float
    """Real time the simulation took, s."""

    def write_csv(self, path: str | Path) -> None:
        """Write the trace to ``path`` as CSV with a header row."""
        cycle_output.write_csv(self.rows, path)

    def write_plot(self, path: str | Path) -> bool:
        """Write a PNG of the trace to ``path``; False when matplotlib is not installed."""
        return cycle_output.write_plot(self, path)


@dataclass(frozen=True, slots=True)
class _Codecs:
    limits: CanFrameCodec
    requests: CanFrameCodec


def _codecs() -> _Codecs:
    profile = load_profile(PROFILE)
    return _Codecs(profile.frame(0x351), profile.frame(0x35C))


def _reading(
    now_s: float,
    cells_v: Sequence[float],
    current_a: float,
    soc_pct: float,
    protection: Protection,
    balancing: Balancing | None,
    settings: ProtectionSettings,
) -> PackReading:
    state = BatteryState(
        measured_at_s=now_s,
        cell_voltages_v=tuple(round(v, 3) for v in cells_v),
        pack_voltage_v=round(sum(cells_v), 2),
        current_a=round(current_a, 2),
        soc_pct=min(100.0, max(0.0, soc_pct)),
        cycle_count=3,
        cycle_capacity_ah=300.0,
        mos_temperature_c=TEMPERATURE_C + 3.0 + 0.03 * abs(current_a),
        battery_temperatures_c=(TEMPERATURE_C, TEMPERATURE_C - 1.0),
        charge_mos_on=not protection.charge_off(now_s),
        discharge_mos_on=not protection.discharge_off(now_s),
        balancer_on=balancing is not None,
        balance_current_a=balancing.current_a if balancing is not None else 0.0,
        alarms=protection.alarms(now_s),
        runtime_s=3_600_000.0 + now_s,
    )
    return PackReading("sim-cycle", state, settings, DeviceInfo(model="bms-gateway cycle sim"))


def over_the_wire(reading: PackReading, now_s: float) -> PackReading:
    """``reading`` after a JK NW reply frame round trip: what the gateway would read, stamped ``now_s``."""
    frame = jk_nw.encode_reply(jk_nw.from_reading(reading))
    return jk_nw.to_reading(jk_nw.decode_reply(frame), now_s, reading.pack_id)


def _heard(codecs: _Codecs, reading: PackReading, limits: Limits) -> Heard:
    values = published_values(reading, limits)
    heard: dict[str, Value] = {
        **named_values(codecs.limits, codecs.limits.encode(values)),
        **named_values(codecs.requests, codecs.requests.encode(values)),
    }
    return Heard.of(heard)


def _true_limits_a(engine: LimitsEngine) -> tuple[float, float]:
    """(charge, discharge) limit of the engine before enforcement, A (0 without a usable reading)."""
    memory, t = engine.memory, engine.thresholds
    if memory is None or t is None:
        return 0.0, 0.0
    charge = memory.charge.ramp.output_a if memory.charge.ramp is not None else 0.0
    discharge = memory.discharge.ramp.output_a if memory.discharge.ramp is not None else 0.0
    return min(charge, t.charge_ceiling_a), min(discharge, t.discharge_ceiling_a)


def run_charge_cycle(
    *,
    overshoot: float = 1.0,
    inverter: Inverter | None = None,
    pack: PackModel | None = None,
    settings: ProtectionSettings | None = None,
    tuning: LimitsSettings | None = None,
    dt_s: float = 1.0,
    float_hold_s: float = 1200.0,
    rest_after_s: float = 60.0,
    max_s: float = 8 * 3600.0,
) -> CycleResult:
    """Run one charge cycle; see the module docstring.

    :param overshoot: the inverter takes up to its limits × this (ignored when ``inverter`` is given).
    :param pack: the cells (default: :func:`~gateway.sim.cell_model.make_pack` at 20 % SOC).
    :param settings: the BMS's settings (default: :func:`cycle_settings`).
    :param tuning: the engine's tunables (default: :class:`LimitsSettings` defaults).
    :param dt_s: simulated time step, s.
    :param float_hold_s: time to stay in float before the load starts, s.
    :param rest_after_s: simulated time after the inverter stopped discharging, s.
    :param max_s: cap on the simulated time, s.
    """
    started = time.perf_counter()
    inverter = inverter or Inverter(overshoot=overshoot)
    model = pack or make_pack(cell_count=CELL_COUNT, capacity_ah=CAPACITY_AH)
    bms = settings or cycle_settings()
    tuning = tuning or LimitsSettings()
    engine = LimitsEngine(tuning)
    codecs = _codecs()
    resistance_ohm = model.resistance_ohm

    rows: list[TraceRow] = []
    events: list[tuple[float, str]] = []
    trips: list[BmsTrip] = []
    protection = Protection()
    stage = Stage.CHARGE
    current_a = 0.0
    float_at: float | None = None
    absorption_at: float | None = None
    stopped_at: float | None = None
    end_reason = f"time cap {max_s / 3600:g} h"
    now_s = 0.0
    over_since: dict[str, float | None] = {"charge": None, "discharge": None}
    longest_over: dict[str, float] = {"charge": 0.0, "discharge": 0.0}

    while now_s <= max_s:
        # The MOS the BMS opened blocks that direction at once, whatever the inverter wants.
        if protection.charge_off(now_s):
            current_a = min(current_a, 0.0)
        if protection.discharge_off(now_s):
            current_a = max(current_a, 0.0)
        ocvs_v = model.cell_ocvs_v()
        cells_v = model.cell_voltages_v(current_a, ocvs_v)
        protection, new_trips = protect(protection, cells_v, current_a, now_s, bms)
        if new_trips:
            trips += new_trips
            events += [(now_s, f"BMS trip: {t.kind}: {t.detail}") for t in new_trips]
        balancing = balance_decision(
            cells_v,
            start_v=bms.balance_start_v or math.inf,
            trigger_v=bms.balance_trigger_v or 0.0,
            max_current_a=(bms.max_balance_current_a or 0.0) if bms.balancer_enabled else 0.0,
        )
        soc_pct = model.soc_pct
        sent = _reading(now_s, cells_v, current_a, soc_pct, protection, balancing, bms)
        reading = over_the_wire(sent, now_s)
        result = engine.update(reading, now_s)
        events += [(now_s, e) for e in result.events]
        limits = result.limits
        heard = _heard(codecs, reading, limits)
        true_ccl, true_dcl = _true_limits_a(engine)

        measured = reading.state.current_a
        for word, amps, limit in (("charge", measured, true_ccl), ("discharge", -measured, true_dcl)):
            if amps > limit + tuning.overshoot_margin_a:
                since = over_since[word]
                since = now_s if since is None else since
                over_since[word] = since
                longest_over[word] = max(longest_over[word], now_s - since + dt_s)
            else:
                over_since[word] = None

        phase = limits.charge_phase
        if absorption_at is None and phase == "absorption":
            absorption_at = now_s
        if stage is Stage.CHARGE and phase == "float":
            stage, float_at = Stage.FLOAT, now_s
        elif stage is Stage.FLOAT and float_at is not None and now_s - float_at >= float_hold_s:
            stage = Stage.DISCHARGE

        reasons = limits.reasons
        ccl_reason = reasons.get("charge_current_limit_a")
        rows.append(
            TraceRow(
                time_s=now_s,
                stage=stage,
                cell_voltages_v=reading.state.cell_voltages_v,
                pack_v=reading.state.pack_voltage_v,
                current_a=measured,
                soc_pct=round(soc_pct, 3),
                cvl_v=heard.cvl_v,
                ccl_a=heard.ccl_a,
                dcl_a=heard.dcl_a,
                dvl_v=heard.dvl_v,
                charge_enable=heard.charge_enable,
                discharge_enable=heard.discharge_enable,
                charge_phase=phase,
                cvl_limiter=_limiter(reasons, "charge_voltage_limit_v"),
                ccl_limiter=ccl_reason.limiter if ccl_reason else "",
                ccl_reason=ccl_reason.reason if ccl_reason else "",
                dcl_limiter=_limiter(reasons, "discharge_current_limit_a"),
                true_ccl_a=round(true_ccl, 2),
                true_dcl_a=round(true_dcl, 2),
                balance_a=balancing.current_a if balancing is not None else 0.0,
                charge_mos_on=reading.state.charge_mos_on,
                discharge_mos_on=reading.state.discharge_mos_on,
            )
        )

        terminal_v = sum(cells_v)
        if stage in (Stage.CHARGE, Stage.FLOAT):
            target = inverter.charge_target_a(heard, Bus(sum(ocvs_v), resistance_ohm), terminal_v)
        elif stage is Stage.DISCHARGE:
            target = -inverter.discharge_target_a(heard, terminal_v)
            if target == 0.0:
                stage, stopped_at = Stage.REST, now_s
                end_reason = _stop_reason(heard, cells_v)
        else:
            target = 0.0
        if stopped_at is not None and now_s - stopped_at >= rest_after_s:
            break

        model = model.step(current_a, dt_s, balancing)
        current_a = inverter.respond(current_a, target, dt_s)
        now_s += dt_s

    summary = _summarise(
        rows,
        events,
        trips,
        inverter.overshoot,
        float_at,
        absorption_at,
        longest_over,
        end_reason,
        engine,
    )
    return CycleResult(tuple(rows), tuple(events), summary, time.perf_counter() - started)


def _limiter(reasons: Mapping[str, LimitReason], name: str) -> str:
    reason = reasons.get(name)
    return reason.limiter if reason is not None else ""


def _stop_reason(heard: Heard, cells_v: Sequence[float]) -> str:
    lowest = f"lowest cell {min(cells_v):.3f} V"
    if heard.dcl_a <= 0:
        return f"DCL 0 A, {lowest}"
    if not heard.discharge_enable:
        return f"discharge disabled, {lowest}"
    return f"pack {sum(cells_v):.2f} V at DVL {heard.dvl_v:.1f} V, {lowest}"


# --- the summary ----------------------------------------------------------------------------------------------


def change_times_s(rows: Sequence[TraceRow], name: str) -> list[float]:
    """When the heard limit ``name`` (a :data:`LIMIT_NAMES` entry) changed, s."""
    out: list[float] = []
    for before, after in itertools.pairwise(rows):
        if getattr(before, name) != getattr(after, name):
            out.append(after.time_s)
    return out


def steady_windows(rows: Sequence[TraceRow], engine: LimitsEngine) -> dict[str, tuple[float, float]]:
    """Spans where the inverter's inputs are steady: constant-current bulk, float without load, steady load."""
    t = engine.thresholds
    windows: dict[str, tuple[float, float]] = {}
    if t is None or not rows:
        return windows
    # Bulk at constant current: from start (after settling) until the highest cell nears the taper knee.
    bulk_end = next(
        (r.time_s for r in rows if r.charge_phase != "bulk" or max(r.cell_voltages_v) >= t.charge_knee_v - 0.01),
        rows[-1].time_s,
    )
    if bulk_end > STEADY_SETTLE_S:
        windows["bulk"] = (STEADY_SETTLE_S, bulk_end)
    # Float: from when the CVL has come down to float until the load starts.
    float_v = round(t.float_pack_v, 1)
    float_rows = [r for r in rows if r.stage is Stage.FLOAT]
    settled = next((r.time_s for r in float_rows if abs(r.cvl_v - float_v) < 0.05), None)
    if settled is not None and float_rows[-1].time_s > settled + STEADY_SETTLE_S:
        windows["float"] = (settled + STEADY_SETTLE_S, float_rows[-1].time_s)
    # Discharge at a steady load: after settling until the lowest cell nears the discharge taper knee.
    discharge_rows = [r for r in rows if r.stage is Stage.DISCHARGE]
    if discharge_rows:
        start = discharge_rows[0].time_s + STEADY_SETTLE_S
        end = next(
            (r.time_s for r in discharge_rows if min(r.cell_voltages_v) <= t.discharge_knee_v + 0.02),
            discharge_rows[-1].time_s,
        )
        if end > start:
            windows["discharge"] = (start, end)
    return windows


def _summarise(
    rows: Sequence[TraceRow],
    events: Sequence[tuple[float, str]],
    trips: Sequence[BmsTrip],
    overshoot: float,
    float_at: float | None,
    absorption_at: float | None,
    longest_over: Mapping[str, float],
    end_reason: str,
    engine: LimitsEngine,
) -> CycleSummary:
    highest = max(rows, key=lambda r: max(r.cell_voltages_v))
    lowest = min(rows, key=lambda r: min(r.cell_voltages_v))
    windows = steady_windows(rows, engine)
    changes = {name: change_times_s(rows, name) for name in LIMIT_NAMES}
    per_window: dict[str, Mapping[str, int]] = {}
    for window, (start, end) in windows.items():
        per_window[window] = MappingProxyType(
            {name: max_changes_per_window([t for t in times if start <= t <= end]) for name, times in changes.items()}
        )
    return CycleSummary(
        overshoot=overshoot,
        reached_float=float_at is not None,
        float_at_s=float_at,
        absorption_at_s=absorption_at,
        bms_trips=tuple(trips),
        max_cell_v=max(highest.cell_voltages_v),
        max_cell_at_s=highest.time_s,
        min_cell_v=min(lowest.cell_voltages_v),
        min_cell_at_s=lowest.time_s,
        steady_windows=MappingProxyType(windows),
        changes_per_min=MappingProxyType(per_window),
        max_changes_per_min=MappingProxyType({n: max_changes_per_window(t) for n, t in changes.items()}),
        max_over_ccl_s=longest_over["charge"],
        max_over_dcl_s=longest_over["discharge"],
        enforcement_events=sum(1 for _, e in events if e.startswith("enforce:")),
        end_reason=end_reason,
        end_s=rows[-1].time_s if rows else 0.0,
    )


def format_summary(summary: CycleSummary) -> str:
    """A few human lines about one cycle."""
    lines = [
        f"inverter overshoot × {summary.overshoot:g}",
        f"absorption at {_minutes(summary.absorption_at_s)}, float at {_minutes(summary.float_at_s)}, "
        f"end at {_minutes(summary.end_s)} ({summary.end_reason})",
        f"BMS trips: {len(summary.bms_trips)}"
        + "".join(f"\n  {t.time_s:.0f} s {t.kind}: {t.detail}" for t in summary.bms_trips),
        f"cells {summary.min_cell_v:.3f} V (at {_minutes(summary.min_cell_at_s)}) … "
        f"{summary.max_cell_v:.3f} V (at {_minutes(summary.max_cell_at_s)})",
        f"over CCL + margin at most {summary.max_over_ccl_s:.0f} s, over DCL + margin at most "
        f"{summary.max_over_dcl_s:.0f} s, {summary.enforcement_events} enforcement events",
    ]
    for window, (start, end) in summary.steady_windows.items():
        counts = ", ".join(f"{n} {c}" for n, c in summary.changes_per_min[window].items())
        lines.append(f"steady {window} {_minutes(start)}–{_minutes(end)}: most changes per minute: {counts}")
    counts = ", ".join(f"{n} {c}" for n, c in summary.max_changes_per_min.items())
    lines.append(f"whole cycle, most changes per minute: {counts}")
    return "\n".join(lines)


def _minutes(time_s: float | None) -> str:
    return "never" if time_s is None else f"{time_s / 60:.1f} min"
