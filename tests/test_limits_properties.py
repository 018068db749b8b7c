"""Property tests of the limits engine over arbitrary states and settings (issue 4, "Must show").

Safety: CCL ≤ min(user cap, BMS max charge current); CCL = 0 whenever the highest cell ≥ cell OVP, the charge MOS
is off, a charge-blocking alarm is active, a fitted battery sensor is outside the charge window [UTP, OTP], or the
data is stale; DCL likewise on its side; CVL ≤ cells × OVP; DVL ≥ cells × UVP; no limit negative or NaN; an
enable bit implies a non-zero limit. Liveness: a healthy mid-SOC pack at 25 °C gets at least half its ceilings.

Each property runs on single calls (``compute_limits(memory=None)``) and on sequences through ``LimitsEngine``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway.chemistry import PRESETS, infer_chemistry
from gateway.limits import LimitsEngine, LimitsSettings, compute_limits
from gateway.model import Alarm, BatteryState, Chemistry, Limits, PackReading, ProtectionSettings, Side

MAX_AGE_S = 10.0
BLOCKERS = frozenset({"alarm", "mos", "invalid", "failsafe", "enforcement"})
"""Limiters that block a side outright."""
PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CHEMISTRIES = st.one_of(st.none(), st.sampled_from(list(Chemistry)))


@dataclass(frozen=True)
class Case:
    bms: ProtectionSettings
    tuning: LimitsSettings


# --- strategies -------------------------------------------------------------------------------------------------


def optional(strategy: st.SearchStrategy[float]) -> st.SearchStrategy[float | None]:
    return st.one_of(st.none(), strategy)


@st.composite
def protection_settings(draw: st.DrawFn, cell_count: int) -> ProtectionSettings:
    """Any plausible BMS settings: UVP < OVP, OVP 2.0 … 4.4 V, currents 0 … 500 A, windows maybe not carried."""
    ovp = draw(st.floats(2.0, 4.4))
    uvp = draw(st.floats(1.5, ovp - 0.1))
    ovpr = ovp - draw(st.floats(0.0, 0.5))
    uvpr = uvp + draw(st.floats(0.0, 0.5))
    c_utp = draw(optional(st.floats(-40.0, 20.0)))
    c_otp = draw(optional(st.floats(25.0, 80.0)))
    d_utp = draw(optional(st.floats(-40.0, 10.0)))
    d_otp = draw(optional(st.floats(30.0, 90.0)))
    return ProtectionSettings(
        measured_at_s=0.0,
        cell_count=cell_count,
        capacity_ah=draw(optional(st.floats(1.0, 1000.0))),
        battery_type=draw(CHEMISTRIES),
        cell_ovp_v=ovp,
        cell_ovpr_v=ovpr,
        cell_uvp_v=uvp,
        cell_uvpr_v=uvpr,
        max_charge_current_a=draw(st.floats(0.0, 500.0)),
        max_discharge_current_a=draw(st.floats(0.0, 500.0)),
        balance_start_v=draw(optional(st.floats(2.0, 4.5))),
        charge_utp_c=c_utp,
        charge_utpr_c=draw(optional(st.floats(-40.0, 30.0))),
        charge_otp_c=c_otp,
        charge_otpr_c=draw(optional(st.floats(20.0, 80.0))),
        discharge_utp_c=d_utp,
        discharge_utpr_c=draw(optional(st.floats(-40.0, 20.0))),
        discharge_otp_c=d_otp,
        discharge_otpr_c=draw(optional(st.floats(25.0, 90.0))),
        mos_otp_c=draw(optional(st.floats(40.0, 120.0))),
        mos_otpr_c=draw(optional(st.floats(30.0, 110.0))),
    )


def tunings() -> st.SearchStrategy[LimitsSettings]:
    return st.builds(
        LimitsSettings,
        max_charge_current_a=st.floats(0.0, 1000.0),
        max_discharge_current_a=st.floats(0.0, 1000.0),
        bms_current_fraction=st.floats(0.0, 1.0, exclude_min=True),
        chemistry=CHEMISTRIES,
        temperature_margin_c=st.floats(0.0, 5.0),
    )


def sometimes(draw: st.DrawFn) -> bool:
    """True one time in four: each hazard is drawn rarely, so that it is often the only one."""
    return draw(st.integers(0, 3)) == 0


@st.composite
def states(draw: st.DrawFn, case: Case, now_s: float) -> BatteryState:
    """Any live state of a pack with ``case.bms`` settings, measured at most 30 s before ``now_s``.

    Each feature is benign (mid-range cells, temperatures mid-window, MOS on, no alarm, fresh) three times in
    four and arbitrary otherwise: cells from 0.3 V below UVP to 0.3 V above OVP (UVP and OVP themselves
    included), temperatures None, extreme or at the window edges, any alarms, either MOS state, up to 30 s old.
    """
    bms, tuning = case.bms, case.tuning
    ovp, uvp = bms.cell_ovp_v, bms.cell_uvp_v
    mid, span = (ovp + uvp) / 2, ovp - uvp
    benign_cell = st.floats(mid - 0.1 * span, mid + 0.1 * span)
    any_cell = st.one_of(st.floats(uvp - 0.3, ovp + 0.3), st.sampled_from([uvp, ovp, uvp + 0.1, ovp - 0.1]))
    cells = tuple(draw(any_cell if sometimes(draw) else benign_cell) for _ in range(bms.cell_count))

    c_low, c_high = window(bms, tuning, Side.CHARGE)
    d_low, d_high = window(bms, tuning, Side.DISCHARGE)
    centre = (max(c_low, d_low) + min(c_high, d_high)) / 2
    edges = [c_low, c_high, d_low, d_high]
    any_temperature = st.one_of(
        st.none(), st.floats(-60.0, 130.0), st.sampled_from([*edges, -273.0, 25.0, 200.0, math.nan])
    )
    n_sensors = draw(st.integers(0, 4)) if sometimes(draw) else draw(st.integers(1, 4))
    temperatures = tuple(
        draw(any_temperature) if sometimes(draw) else draw(st.floats(centre - 3.0, centre + 3.0))
        for _ in range(n_sensors)
    )
    alarms = draw(st.frozensets(st.sampled_from(list(Alarm)), max_size=4)) if sometimes(draw) else frozenset()
    age = draw(st.one_of(st.floats(0.0, 30.0), st.just(MAX_AGE_S))) if sometimes(draw) else draw(st.floats(0.0, 2.0))
    mos_c = draw(optional(st.floats(-40.0, 150.0))) if sometimes(draw) else draw(st.floats(0.0, 40.0))
    return BatteryState(
        measured_at_s=now_s - age,
        cell_voltages_v=cells,
        pack_voltage_v=sum(cells),
        current_a=draw(st.floats(-500.0, 500.0)) if sometimes(draw) else draw(st.floats(-1.0, 1.0)),
        soc_pct=draw(st.floats(0.0, 100.0)),
        mos_temperature_c=mos_c,
        battery_temperatures_c=temperatures,
        charge_mos_on=not sometimes(draw),
        discharge_mos_on=not sometimes(draw),
        balancer_on=draw(st.booleans()),
        alarms=alarms,
    )


def pack(state: BatteryState, bms: ProtectionSettings) -> PackReading:
    return PackReading("prop:pack", state, ProtectionSettings(**{**_fields(bms), "measured_at_s": state.measured_at_s}))


def _fields(obj: object) -> dict[str, object]:
    return {name: getattr(obj, name) for name in obj.__slots__}  # type: ignore[attr-defined]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    n = draw(st.integers(1, 32))
    return Case(draw(protection_settings(n)), draw(tunings()))


# --- the oracle -------------------------------------------------------------------------------------------------


def window(bms: ProtectionSettings, tuning: LimitsSettings, side: Side) -> tuple[float, float]:
    """The BMS's temperature window of ``side``, or the chemistry default where the BMS does not carry it: with
    the BMS's battery type and its OVP implying different chemistries, the narrower of both defaults."""
    inferred = infer_chemistry(bms.cell_ovp_v)
    chemistries = [tuning.chemistry] if tuning.chemistry else [c for c in (bms.battery_type, inferred) if c]
    presets = [PRESETS[c] for c in chemistries]
    if side is Side.CHARGE:
        low, high, defaults = bms.charge_utp_c, bms.charge_otp_c, [p.charge_window_c for p in presets]
    else:
        low, high, defaults = bms.discharge_utp_c, bms.discharge_otp_c, [p.discharge_window_c for p in presets]
    default = (max(d[0] for d in defaults), min(d[1] for d in defaults))
    return (default[0] if low is None else low, default[1] if high is None else high)


def must_block(side: Side, r: PackReading, tuning: LimitsSettings, now_s: float) -> list[str]:
    """Every reason the issue gives for this side's current to be 0 (empty: none applies)."""
    state, bms = r.state, r.settings
    why = []
    if now_s - state.measured_at_s > MAX_AGE_S:
        why.append("stale")
    if side is Side.CHARGE:
        if max(state.cell_voltages_v) >= bms.cell_ovp_v:
            why.append("highest cell ≥ OVP")
        if not state.charge_mos_on:
            why.append("charge MOS off")
    else:
        if min(state.cell_voltages_v) <= bms.cell_uvp_v:
            why.append("lowest cell ≤ UVP")
        if not state.discharge_mos_on:
            why.append("discharge MOS off")
    if any(a.blocks & side for a in state.alarms):
        why.append("blocking alarm")
    low, high = window(bms, tuning, side)
    fitted = [t for t in state.battery_temperatures_c if t is not None and math.isfinite(t)]
    if any(t < low or t > high for t in fitted):
        why.append(f"battery temperature outside {low:g}…{high:g} °C")
    return why


def usable(r: PackReading, now_s: float) -> bool:
    return now_s - r.state.measured_at_s <= MAX_AGE_S


def check_safety(out: Limits, r: PackReading, tuning: LimitsSettings, now_s: float) -> None:
    bms, n = r.settings, r.settings.cell_count
    for name in ("charge_voltage_limit_v", "charge_current_limit_a", "discharge_current_limit_a"):
        value = getattr(out, name)
        assert math.isfinite(value) and value >= 0.0, (name, value)
    assert out.charge_current_limit_a <= min(tuning.max_charge_current_a, bms.max_charge_current_a)
    assert out.discharge_current_limit_a <= min(tuning.max_discharge_current_a, bms.max_discharge_current_a)
    for side, limit, enable in (
        (Side.CHARGE, out.charge_current_limit_a, out.charge_enable),
        (Side.DISCHARGE, out.discharge_current_limit_a, out.discharge_enable),
    ):
        if why := must_block(side, r, tuning, now_s):
            assert limit == 0.0, (side, why, limit)
            assert not enable, (side, why)
    assert out.charge_voltage_limit_v <= n * bms.cell_ovp_v
    assert not out.charge_enable or out.charge_current_limit_a > 0.0
    assert not out.discharge_enable or out.discharge_current_limit_a > 0.0


def check_dvl(out: Limits, r: PackReading) -> None:
    dvl = out.discharge_voltage_limit_v
    assert math.isfinite(dvl) and dvl >= 0.0
    assert dvl >= r.settings.cell_count * r.settings.cell_uvp_v, dvl


# --- single calls -----------------------------------------------------------------------------------------------

NOW_S = 10_000.0


@PROPERTY_SETTINGS
@given(data=st.data(), case=cases())
def test_single_call_safety(data: st.DataObject, case: Case) -> None:
    r = pack(data.draw(states(case, NOW_S)), case.bms)
    out = compute_limits(r, case.tuning, None, NOW_S, max_age_s=MAX_AGE_S).limits
    check_safety(out, r, case.tuning, NOW_S)


@PROPERTY_SETTINGS
@given(data=st.data(), case=cases())
def test_single_call_dvl_usable(data: st.DataObject, case: Case) -> None:
    r = pack(data.draw(states(case, NOW_S)), case.bms)
    assume(usable(r, NOW_S))
    check_dvl(compute_limits(r, case.tuning, None, NOW_S, max_age_s=MAX_AGE_S).limits, r)


@PROPERTY_SETTINGS
@given(data=st.data(), case=cases())
def test_single_call_dvl_stale(data: st.DataObject, case: Case) -> None:
    state = data.draw(states(case, NOW_S))
    stale = replace(state, measured_at_s=NOW_S - MAX_AGE_S - data.draw(st.floats(0.001, 3600.0)))
    r = pack(stale, case.bms)
    assert not usable(r, NOW_S)
    check_dvl(compute_limits(r, case.tuning, None, NOW_S, max_age_s=MAX_AGE_S).limits, r)


# --- sequences --------------------------------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(data=st.data(), case=cases(), steps=st.lists(st.floats(0.1, 60.0), min_size=2, max_size=15))
def test_sequence_safety(data: st.DataObject, case: Case, steps: list[float]) -> None:
    engine = LimitsEngine(case.tuning, max_age_s=MAX_AGE_S)
    now = 0.0
    for dt in steps:
        now += dt
        r = pack(data.draw(states(case, now)), case.bms)
        out = engine.update(r, now).limits
        check_safety(out, r, case.tuning, now)
        if usable(r, now):
            check_dvl(out, r)


# --- liveness ---------------------------------------------------------------------------------------------------


@st.composite
def healthy_cases(draw: st.DrawFn) -> Case:
    """Plausible, safe LiFePO4 settings (recoveries inside their trips, OVP within the LiFePO4 maximum: the
    settings audit finds nothing unsafe) whose windows hold 25 °C comfortably, and caps of at least 5 A."""
    n = draw(st.integers(1, 32))
    ovp = draw(st.floats(3.55, 3.65))
    uvp = draw(st.floats(2.5, 3.0))
    mos_otp = draw(optional(st.floats(70.0, 100.0)))
    charge_utp = draw(st.floats(-10.0, 5.0))
    charge_otp = draw(st.floats(40.0, 60.0))
    discharge_utp = draw(st.floats(-30.0, 0.0))
    discharge_otp = draw(st.floats(45.0, 80.0))
    bms = ProtectionSettings(
        measured_at_s=0.0,
        cell_count=n,
        capacity_ah=draw(optional(st.floats(10.0, 1000.0))),
        battery_type=draw(st.sampled_from([None, Chemistry.LIFEPO4])),
        cell_ovp_v=ovp,
        cell_ovpr_v=draw(st.floats(3.35, ovp - 0.01)),
        cell_uvp_v=uvp,
        cell_uvpr_v=draw(st.floats(uvp + 0.01, 3.2)),
        max_charge_current_a=draw(st.floats(10.0, 500.0)),
        max_discharge_current_a=draw(st.floats(10.0, 500.0)),
        charge_utp_c=draw(optional(st.just(charge_utp))),
        charge_utpr_c=draw(optional(st.floats(charge_utp + 0.5, 10.0))),
        charge_otp_c=draw(optional(st.just(charge_otp))),
        charge_otpr_c=draw(optional(st.floats(35.0, charge_otp - 0.5))),
        discharge_utp_c=draw(optional(st.just(discharge_utp))),
        discharge_utpr_c=draw(optional(st.floats(discharge_utp + 0.5, 5.0))),
        discharge_otp_c=draw(optional(st.just(discharge_otp))),
        discharge_otpr_c=draw(optional(st.floats(40.0, discharge_otp - 0.5))),
        mos_otp_c=mos_otp,
        mos_otpr_c=None if mos_otp is None else draw(st.floats(55.0, mos_otp - 5.0)),
    )
    tuning = LimitsSettings(
        max_charge_current_a=draw(st.floats(5.0, 1000.0)),
        max_discharge_current_a=draw(st.floats(5.0, 1000.0)),
        bms_current_fraction=draw(st.floats(0.5, 1.0)),
    )
    return Case(bms, tuning)


def ceilings(case: Case) -> tuple[float, float]:
    t, b = case.tuning, case.bms
    fraction = t.bms_current_fraction
    return (
        min(t.max_charge_current_a, fraction * b.max_charge_current_a),
        min(t.max_discharge_current_a, fraction * b.max_discharge_current_a),
    )


@st.composite
def healthy_states(draw: st.DrawFn, case: Case, now_s: float) -> BatteryState:
    """Cells 3.30 V ± 10 mV, SOC 50 %, 25 °C, MOS 30 °C, no alarms, both MOS on, a current within the limits."""
    n = case.bms.cell_count
    cells = tuple(draw(st.lists(st.floats(3.29, 3.31), min_size=n, max_size=n)))
    charge_ceiling, discharge_ceiling = ceilings(case)
    return BatteryState(
        measured_at_s=now_s - draw(st.floats(0.0, 2.0)),
        cell_voltages_v=cells,
        pack_voltage_v=sum(cells),
        current_a=draw(st.floats(-0.4 * discharge_ceiling, 0.4 * charge_ceiling)),
        soc_pct=50.0,
        mos_temperature_c=30.0,
        battery_temperatures_c=(25.0,) * draw(st.integers(1, 4)),
        charge_mos_on=True,
        discharge_mos_on=True,
    )


def check_liveness(out: Limits, case: Case) -> None:
    charge_ceiling, discharge_ceiling = ceilings(case)
    assert out.charge_current_limit_a >= 0.5 * charge_ceiling, (out.charge_current_limit_a, charge_ceiling)
    assert out.discharge_current_limit_a >= 0.5 * discharge_ceiling, (out.discharge_current_limit_a, discharge_ceiling)
    assert out.charge_enable and out.discharge_enable, out.reasons


@PROPERTY_SETTINGS
@given(data=st.data(), case=healthy_cases())
def test_liveness_single_call(data: st.DataObject, case: Case) -> None:
    r = pack(data.draw(healthy_states(case, NOW_S)), case.bms)
    out = compute_limits(r, case.tuning, None, NOW_S, max_age_s=MAX_AGE_S).limits
    check_liveness(out, case)
    check_safety(out, r, case.tuning, NOW_S)


@PROPERTY_SETTINGS
@given(data=st.data(), case=healthy_cases(), steps=st.lists(st.floats(0.5, 30.0), min_size=2, max_size=20))
def test_liveness_sequence(data: st.DataObject, case: Case, steps: list[float]) -> None:
    engine = LimitsEngine(case.tuning, max_age_s=MAX_AGE_S)
    now = 0.0
    for dt in steps:
        now += dt
        r = pack(data.draw(healthy_states(case, now)), case.bms)
        out = engine.update(r, now).limits
        check_liveness(out, case)
        check_safety(out, r, case.tuning, now)


# --- known engine bugs: minimal examples ------------------------------------------------------------------------


def _healthy_pack(mos_c: float = 30.0) -> PackReading:
    bms = ProtectionSettings(
        measured_at_s=NOW_S,
        cell_count=16,
        capacity_ah=280.0,
        battery_type=Chemistry.LIFEPO4,
        cell_ovp_v=3.65,
        cell_ovpr_v=3.40,
        cell_uvp_v=2.80,
        cell_uvpr_v=3.00,
        max_charge_current_a=100.0,
        max_discharge_current_a=150.0,
    )
    state = BatteryState(
        measured_at_s=NOW_S,
        cell_voltages_v=(3.30,) * 16,
        pack_voltage_v=52.8,
        current_a=0.0,
        soc_pct=50.0,
        mos_temperature_c=mos_c,
        battery_temperatures_c=(25.0,),
        charge_mos_on=True,
        discharge_mos_on=True,
    )
    return PackReading("prop:pack", state, bms)


def _healthy(cap_a: float, mos_c: float = 30.0) -> tuple[Limits, PackReading]:
    r = _healthy_pack(mos_c)
    tuning = LimitsSettings(max_charge_current_a=cap_a, max_discharge_current_a=cap_a)
    return compute_limits(r, tuning, None, NOW_S, max_age_s=MAX_AGE_S).limits, r


def test_published_current_never_exceeds_the_cap() -> None:
    out, _ = _healthy(5.875)
    assert out.charge_current_limit_a <= 5.875
    assert out.discharge_current_limit_a <= 5.875


def test_published_current_never_exceeds_a_cap_a_hair_below_the_grid() -> None:
    # Found by the sequence property: 5.999999999999986 A used to be published as 6.0 A.
    cap_a = 6.0 - 1.4e-14
    out, _ = _healthy(cap_a)
    assert out.charge_current_limit_a <= cap_a
    assert out.discharge_current_limit_a <= cap_a


def test_type_and_ovp_disagreeing_takes_the_narrower_temperature_window() -> None:
    # Found by the sequence property: a pack typed LiFePO4 with an LTO-like OVP (3.0 V) charged at -1 °C,
    # because the lower-bulk chemistry (LTO, which charges down to -20 °C) supplied the temperature defaults.
    healthy = _healthy_pack()
    assert healthy.settings.battery_type is Chemistry.LIFEPO4
    bms = replace(healthy.settings, cell_count=7, cell_ovp_v=3.0, cell_ovpr_v=2.9, cell_uvp_v=2.0, cell_uvpr_v=2.1)
    state = replace(healthy.state, cell_voltages_v=(2.4,) * 7, pack_voltage_v=16.8, battery_temperatures_c=(-1.0,))
    tuning = LimitsSettings(max_charge_current_a=10.0, max_discharge_current_a=10.0)
    out = compute_limits(PackReading("prop:pack", state, bms), tuning, None, NOW_S, max_age_s=MAX_AGE_S).limits
    assert out.charge_current_limit_a == 0.0 and not out.charge_enable  # LiFePO4: no charging below 0 °C
    assert out.discharge_current_limit_a > 0.0  # both chemistries discharge at -1 °C


def test_enable_implies_a_published_nonzero_limit_tiny_cap() -> None:
    out, _ = _healthy(0.004)
    assert not out.charge_enable or out.charge_current_limit_a > 0.0


def test_enable_implies_a_published_nonzero_limit_mos_taper() -> None:
    out, _ = _healthy(200.0, mos_c=71.9995)
    assert not out.charge_enable or out.charge_current_limit_a > 0.0
