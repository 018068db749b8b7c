"""The peers' charge features (issue 21), on the limits engine: tail-current end of absorption, re-bulk by cell
voltage, the inverter voltage offset and the SOC-based CCL reduction; and their config keys.

Reference pack as in ``test_limits_table`` (``limits_fixtures``): 16S LiFePO4 280 Ah, OVP 3.65 V, bulk 3.45 V,
float 3.375 V, charge ceiling 90 A; the engine's OVP headroom makes the highest CVL 16 × 3.60 = 57.6 V.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from limits_fixtures import CHARGE_CEILING_A, TUNING, cells_at, lifepo4_settings, reading

from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.limits import EngineResult, LimitsEngine, LimitsSettings, compute_limits

# --- tail current ------------------------------------------------------------------------------------------------


def absorb(tuning: LimitsSettings, current_a: float, until_s: float, *, cells: object = 3.45) -> list[EngineResult]:
    """Bulk at t = 0, then at bulk every 10 s until ``until_s`` with ``current_a`` flowing in."""
    engine = LimitsEngine(tuning)
    results = [engine.update(reading(3.30, now_s=0.0, soc_pct=99.0, current_a=40.0), 0.0)]
    now = 10.0
    while now <= until_s:
        results.append(engine.update(reading(cells, now_s=now, soc_pct=99.0, current_a=current_a), now))  # type: ignore[arg-type]
        now += 10.0
    return results


TAIL = replace(TUNING, tail_current_c=0.02, tail_time_s=60.0)
"""0.02 C of 280 Ah: 5.6 A for 60 s."""


def test_a_tail_current_ends_absorption_after_the_tail_time() -> None:
    results = absorb(TAIL, current_a=5.0, until_s=120.0)
    # Absorption from t = 10; the tail timer counts from there: 60 s of it at t = 70 (not after 900 s balanced).
    assert results[6].limits.charge_phase == "absorption"  # t = 60
    assert results[7].limits.charge_phase == "float"  # t = 70
    events = [e for r in results for e in r.events]
    assert "charge: float, the current 5.0 A at or below the tail current 5.6 A for 60 s" in events


def test_without_a_tail_current_absorption_waits_for_its_balanced_time() -> None:
    # The same low current with the feature off (the default): float only after 900 s balanced.
    results = absorb(TUNING, current_a=5.0, until_s=300.0)
    assert TUNING.tail_current_c is None
    assert all(r.limits.charge_phase == "absorption" for r in results[1:])


@pytest.mark.parametrize(
    ("current_a", "cells", "why"),
    [
        pytest.param(6.0, 3.45, "6 A is above 0.02 C of 280 Ah", id="above the tail current"),
        pytest.param(-5.0, 3.45, "a load, not a full pack", id="discharging"),
        pytest.param(2.0, cells_at(3.45, cell3=3.42), "30 mV apart: the balancer still works", id="unbalanced"),
    ],
)
def test_the_tail_timer_does_not_run(current_a: float, cells: object, why: str) -> None:
    results = absorb(TAIL, current_a=current_a, until_s=300.0, cells=cells)
    assert all(r.limits.charge_phase == "absorption" for r in results[1:]), why


def test_a_current_burst_restarts_the_tail_timer() -> None:
    engine = LimitsEngine(TAIL)
    engine.update(reading(3.30, now_s=0.0, soc_pct=99.0, current_a=40.0), 0.0)
    for now, amps in [(10.0, 5.0), (20.0, 5.0), (30.0, 5.0), (40.0, 5.0), (50.0, 20.0)]:
        engine.update(reading(3.45, now_s=now, soc_pct=99.0, current_a=amps), now)
    phases = [
        engine.update(reading(3.45, now_s=now, soc_pct=99.0, current_a=5.0), now).limits.charge_phase
        for now in (60.0, 70.0, 80.0, 90.0, 100.0, 110.0)
    ]
    # 20 A at t = 50 restarted it: 60 s more from t = 50, float at t = 110.
    assert phases == ["absorption"] * 5 + ["float"]


def test_without_a_capacity_the_tail_current_is_off() -> None:
    engine = LimitsEngine(TAIL)
    no_capacity = lifepo4_settings(capacity_ah=None)
    for now in (0.0, *range(10, 310, 10)):
        result = engine.update(reading(3.45, now_s=float(now), soc_pct=99.0, settings=no_capacity), float(now))
    assert result.limits.charge_phase == "absorption"


# --- re-bulk below a cell voltage ------------------------------------------------------------------------------------


def floating(tuning: LimitsSettings) -> LimitsEngine:
    engine = LimitsEngine(replace(tuning, absorption_s=20.0))
    for now in (0.0, 10.0, 20.0, 30.0):
        last = engine.update(reading(3.45, now_s=now, soc_pct=99.0), now)
    assert last.limits.charge_phase == "float"
    return engine


def test_float_rebulks_when_the_highest_cell_falls_below_the_rebulk_voltage() -> None:
    engine = floating(replace(TUNING, rebulk_cell_v=3.30))
    # SOC 95 % (above the 80 % rule), delta 0: only the voltage rule can re-bulk.
    held = engine.update(reading(cells_at(3.29, cell5=3.30), now_s=40.0, soc_pct=95.0), 40.0)
    assert held.limits.charge_phase == "float"  # the highest cell at 3.30 V is not below 3.30 V
    result = engine.update(reading(3.29, now_s=50.0, soc_pct=95.0), 50.0)
    assert result.limits.charge_phase == "bulk"
    assert result.events == ("charge: re-bulk, highest cell 3.290 V below 3.300 V",)
    assert result.limits.charge_voltage_limit_v == pytest.approx(55.2)


def test_without_a_rebulk_voltage_float_stays() -> None:
    engine = floating(TUNING)
    assert TUNING.rebulk_cell_v is None
    assert engine.update(reading(3.20, now_s=40.0, soc_pct=95.0), 40.0).limits.charge_phase == "float"


def test_float_rebulks_after_the_full_charge_interval_in_float() -> None:
    # The days rule is charging.full_charge_interval_days (no second key): float from t = 30 s; 2 days later,
    # with the pack resting at float (SOC 99 %, delta 0), one re-bulk.
    engine = floating(replace(TUNING, full_charge_interval_days=2.0))
    two_days_s = 2 * 86400.0
    assert engine.update(reading(3.375, now_s=two_days_s, soc_pct=99.0), two_days_s).limits.charge_phase == "float"
    result = engine.update(reading(3.375, now_s=two_days_s + 30.0, soc_pct=99.0), two_days_s + 30.0)
    assert result.limits.charge_phase == "bulk"
    assert result.events == ("charge: re-bulk, 2 days in float (charging.full_charge_interval_days)",)
    # Off with the key off: float for ever.
    engine = floating(replace(TUNING, full_charge_interval_days=None))
    assert engine.update(reading(3.375, now_s=1e7, soc_pct=99.0), 1e7).limits.charge_phase == "float"


def test_a_rebulk_voltage_at_or_above_float_is_ignored_not_a_loop() -> None:
    # A derived float of 3.375 V with rebulk_cell_v 3.40 V (a config with no float_cell_v to check it against):
    # every float would re-bulk at once; the engine ignores the rule instead.
    engine = floating(replace(TUNING, rebulk_cell_v=3.40))
    assert engine.update(reading(3.375, now_s=40.0, soc_pct=95.0), 40.0).limits.charge_phase == "float"


# --- inverter voltage offset ---------------------------------------------------------------------------------------


def test_a_positive_offset_raises_cvl_and_dvl_sent() -> None:
    base = compute_limits(reading(3.30), TUNING, None, 0.0).limits
    shifted = compute_limits(reading(3.30), replace(TUNING, inverter_voltage_offset_v=0.4), None, 0.0).limits
    assert base.charge_voltage_limit_v == pytest.approx(55.2)
    assert shifted.charge_voltage_limit_v == pytest.approx(55.6)
    assert shifted.discharge_voltage_limit_v == pytest.approx(base.discharge_voltage_limit_v + 0.4)
    assert shifted.reasons["charge_voltage_limit_v"].reason == "bulk 3.450 V × 16 (+0.4 V inverter offset)"


def test_a_negative_offset_lowers_them() -> None:
    shifted = compute_limits(reading(3.30), replace(TUNING, inverter_voltage_offset_v=-0.3), None, 0.0).limits
    assert shifted.charge_voltage_limit_v == pytest.approx(54.9)
    assert shifted.reasons["charge_voltage_limit_v"].reason.endswith("(−0.3 V inverter offset)")


@pytest.mark.parametrize("offset_v", [-2.0, -0.4, 0.4, 1.0, 2.0])
@pytest.mark.parametrize(
    "cells", [pytest.param(3.30, id="bulk"), pytest.param(3.62, id="blocked at a pack above OVP - headroom")]
)
def test_the_offset_never_means_more_than_ovp_less_the_headroom_at_the_battery(offset_v: float, cells: float) -> None:
    # Cells at 3.62 V block charging: CVL goes to the pack voltage (57.92 V), capped at 16 × (3.65 − 0.05) = 57.6 V.
    # The offset is added after that cap: what the inverter reaches (sent − offset) is at most 57.6 V.
    sent = compute_limits(reading(cells), replace(TUNING, inverter_voltage_offset_v=offset_v), None, 0.0).limits
    assert sent.charge_voltage_limit_v - offset_v <= 57.6 + 1e-9
    assert sent.discharge_voltage_limit_v <= sent.charge_voltage_limit_v


def test_a_stale_reading_keeps_the_offset() -> None:
    engine = LimitsEngine(replace(TUNING, inverter_voltage_offset_v=0.4))
    fresh = engine.update(reading(3.30, now_s=0.0), 0.0).limits
    stale = engine.update(reading(3.30, now_s=100.0, age_s=60.0), 100.0).limits
    assert stale.charge_current_limit_a == 0.0
    assert stale.charge_voltage_limit_v == pytest.approx(fresh.charge_voltage_limit_v)
    assert stale.discharge_voltage_limit_v == pytest.approx(fresh.discharge_voltage_limit_v)


# --- SOC-based CCL reduction ---------------------------------------------------------------------------------------

TAPER = replace(TUNING, soc_ccl_taper=((95.0, 0.5), (98.0, 0.2)))


@pytest.mark.parametrize(
    ("soc_pct", "want_a"),
    [
        pytest.param(94.9, CHARGE_CEILING_A, id="below the first step: the ceiling"),
        pytest.param(95.0, 45.0, id="from 95 %: half of 90 A"),
        pytest.param(97.9, 45.0, id="97.9 %: still half"),
        pytest.param(98.0, 18.0, id="from 98 %: a fifth"),
        pytest.param(100.0, 18.0, id="100 %: a fifth"),
    ],
)
def test_soc_taper_steps(soc_pct: float, want_a: float) -> None:
    result = compute_limits(reading(3.30, soc_pct=soc_pct), TAPER, None, 0.0).limits
    assert result.charge_current_limit_a == pytest.approx(want_a)
    assert result.discharge_current_limit_a == pytest.approx(135.0)  # the discharge side is untouched


def test_soc_taper_names_itself_and_is_off_by_default() -> None:
    result = compute_limits(reading(3.30, soc_pct=96.0), TAPER, None, 0.0).limits
    assert result.reasons["charge_current_limit_a"].limiter == "soc_taper"
    assert result.reasons["charge_current_limit_a"].reason == "SOC 96 % from 95 %: 0.5 × 90.0 A"
    assert TUNING.soc_ccl_taper is None
    assert compute_limits(reading(3.30, soc_pct=99.0), TUNING, None, 0.0).limits.charge_current_limit_a == 90.0


# --- config ----------------------------------------------------------------------------------------------------------

MINIMAL = {
    "bms": {"port": "/dev/ttyUSB0"},
    "inverter": {"profile": "pylontech-can", "can": {"interface": "socketcan", "channel": "can0"}},
}


def config(**sections: dict[str, object]) -> object:
    return parse_config({**MINIMAL, **sections})


def test_the_config_keys_reach_the_engine() -> None:
    from gateway.config import limits_tuning

    parsed = config(
        limits={"soc_ccl_taper": {98: 0.2, 95: 0.5}},
        charging={
            "tail_current_c": 0.02,
            "tail_time_s": 120,
            "rebulk_cell_v": 3.30,
            "inverter_voltage_offset_v": -0.2,
        },
    )
    tuning = limits_tuning(parsed.limits, parsed.charging)  # type: ignore[attr-defined]
    assert tuning.soc_ccl_taper == ((95.0, 0.5), (98.0, 0.2))  # sorted by SOC
    assert (tuning.tail_current_c, tuning.tail_time_s) == (0.02, 120.0)
    assert (tuning.rebulk_cell_v, tuning.inverter_voltage_offset_v) == (3.30, -0.2)


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        pytest.param(
            {"limits": {"soc_ccl_taper": {95: 0.2, 98: 0.5}}},
            "limits.soc_ccl_taper: the fraction rises from 0.2 at SOC 95 % to 0.5 at 98 %",
            id="rising fraction",
        ),
        pytest.param({"limits": {"soc_ccl_taper": {95: 0}}}, "at SOC 95: expected", id="fraction 0"),
        pytest.param({"limits": {"soc_ccl_taper": [95, 0.5]}}, "expected a mapping of SOC %", id="a list"),
        pytest.param(
            {"charging": {"rebulk_cell_v": 3.40, "float_cell_v": 3.375}},
            "charging.rebulk_cell_v: must be below charging.float_cell_v",
            id="rebulk above float",
        ),
        pytest.param({"charging": {"inverter_voltage_offset_v": 3}}, "from -2 to 2", id="offset too large"),
        pytest.param({"charging": {"tail_current_c": 0.5}}, "tail_current_c", id="tail 0.5 C"),
    ],
)
def test_bad_values_are_refused(sections: dict[str, dict[str, object]], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config(**sections)
    assert message in str(caught.value)


def test_a_rising_taper_has_a_hint() -> None:
    with pytest.raises(ConfigError) as caught:
        config(limits={"soc_ccl_taper": {95: 0.2, 98: 0.5}})
    assert caught.value.hint is not None and "smaller fractions" in caught.value.hint
