"""Deeply discharged cells (security audit M4): a recovery current below the chemistry's recovery threshold, 0 A
below its no-charge threshold, no discharging in either case, and the alarm ``cell_deeply_discharged``.

Reference pack (``limits_fixtures``): 16S LiFePO4 280 Ah, ceilings 90 A charge / 135 A discharge, so the default
recovery current is 0.05 C × 280 Ah = 14 A. LiFePO4 recovers below 2.5 V (released at 2.6 V) and gets no charge at
or below 2.0 V (released at 2.1 V).
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from limits_fixtures import (
    CHARGE_CEILING_A,
    NOW_S,
    TUNING,
    cells_at,
    li_ion_settings,
    lifepo4_settings,
    lto_settings,
    reading,
)
from telemetry_fixtures import SETTINGS, NullSink, stamped

from gateway.chemistry import PRESETS
from gateway.clock import FakeClock
from gateway.config import limits_tuning, parse_config
from gateway.errors import ConfigError
from gateway.limits import EngineResult, LimitsEngine, LimitsSettings, compute_limits
from gateway.limits.limiters import DEEP_DISCHARGE, DEEP_DISCHARGE_RELEASE_GAP_V
from gateway.limits.persist import memory_from_json, memory_to_json
from gateway.limits.system import PackLimits, system_limits
from gateway.model import Chemistry, Limits, PackReading
from gateway.plausibility import implausibility
from gateway.profiles import load_profile
from gateway.runtime import ControlLoop
from gateway.sim.cell_model import Cell, PackModel, make_pack
from gateway.telemetry import mqtt as mqtt_module
from gateway.telemetry.ha_discovery import topic_payloads
from gateway.telemetry.status_doc import CELL_DEEPLY_DISCHARGED, status_document

RECOVERY_A = 0.05 * 280.0  # the default 0.05 C of the fixtures' 280 Ah


def once(r: PackReading, tuning: LimitsSettings = TUNING) -> Limits:
    """One call without memory (no latch, no ramp) at NOW_S."""
    return compute_limits(r, tuning, None, NOW_S).limits


def assert_deeply_discharged(out: Limits) -> None:
    """Discharging stopped, and the alarm raised (the flag the status and MQTT alarms are made from)."""
    assert out.discharge_current_limit_a == 0.0 and not out.discharge_enable
    assert out.cell_deeply_discharged


# --- the thresholds, per chemistry -------------------------------------------------------------------------------


@pytest.mark.parametrize("chemistry", list(Chemistry))
def test_the_thresholds_are_never_looser_than_the_chemistry_table(chemistry: Chemistry) -> None:
    preset = PRESETS[chemistry]
    # Recovery starts no lower than the chemistry's absolute minimum (what the table had before), and no-charge
    # lies below it; both are distinct from the CVL trim floor, which is a charge-voltage lever, not a cell limit.
    assert preset.recovery_charge_below_cell_v >= preset.absolute_min_cell_v
    assert preset.no_charge_below_cell_v < preset.recovery_charge_below_cell_v
    assert preset.cvl_trim_floor_cell_v > preset.recovery_charge_below_cell_v


# --- one reading -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("volts", [2.0, 1.5, 0.6], ids=["2.0 V", "1.5 V", "0.6 V"])
def test_a_lifepo4_cell_at_or_below_2_0_v_gets_no_charge(volts: float) -> None:
    r = reading(cells_at(3.30, cell3=volts))
    # Plausibility takes the reading (cells from 0.5 V): only the engine stands between the cell and the charger.
    assert implausibility(r) is None
    out = once(r)
    assert out.charge_current_limit_a == 0.0 and not out.charge_enable
    assert_deeply_discharged(out)
    reason = out.reasons["charge_current_limit_a"]
    assert reason.limiter == DEEP_DISCHARGE
    assert f"cell 3 at {volts:.3f} V" in reason.reason and "no charging until it reaches 2.100 V" in reason.reason


@pytest.mark.parametrize("volts", [2.4, 2.05, 2.5], ids=["2.4 V", "2.05 V", "2.5 V"])
def test_a_lifepo4_cell_at_or_below_2_5_v_gets_at_most_the_recovery_current(volts: float) -> None:
    out = once(reading(cells_at(3.30, cell3=volts)))
    assert out.charge_current_limit_a == pytest.approx(RECOVERY_A) and out.charge_enable
    assert_deeply_discharged(out)
    assert out.reasons["charge_current_limit_a"].reason.endswith(
        "recovery charge 14.0 A (0.05 C of 280 Ah) until it reaches 2.600 V"
    )


def test_the_recovery_current_follows_the_setting_the_capacity_and_the_caps() -> None:
    deep = cells_at(3.30, cell3=2.4)
    assert once(reading(deep), replace(TUNING, recovery_current_c=0.02)).charge_current_limit_a == pytest.approx(5.6)
    # A user cap below the recovery current wins; 0 C means no charging at all until a person looks.
    assert once(reading(deep), replace(TUNING, max_charge_current_a=10.0)).charge_current_limit_a == 10.0
    assert once(reading(deep), replace(TUNING, recovery_current_c=0.0)).charge_current_limit_a == 0.0
    # Without the pack's capacity there is no recovery current to compute: fail closed.
    out = once(reading(deep, settings=lifepo4_settings(capacity_ah=None)))
    assert out.charge_current_limit_a == 0.0
    assert "without the pack's capacity" in out.reasons["charge_current_limit_a"].reason
    # A healthy cell just above the threshold is not touched.
    healthy = once(reading(cells_at(3.30, cell3=2.51)))
    assert healthy.charge_current_limit_a == CHARGE_CEILING_A and not healthy.cell_deeply_discharged


@pytest.mark.parametrize(
    ("settings", "cells", "volts", "want_a"),
    [
        pytest.param(li_ion_settings(), 14, 2.9, RECOVERY_A, id="li-ion 2.9 V: recovery (below 3.0 V)"),
        pytest.param(li_ion_settings(), 14, 2.0, 0.0, id="li-ion 2.0 V: no charge"),
        pytest.param(lto_settings(), 20, 1.45, RECOVERY_A, id="lto 1.45 V: recovery (below 1.5 V)"),
        pytest.param(lto_settings(), 20, 0.9, 0.0, id="lto 0.9 V: no charge"),
    ],
)
def test_li_ion_and_lto_have_their_own_thresholds(settings: object, cells: int, volts: float, want_a: float) -> None:
    other = 3.7 if cells == 14 else 2.3
    out = once(reading(cells_at(other, cells, cell2=volts), settings=settings))  # type: ignore[arg-type]
    assert out.charge_current_limit_a == pytest.approx(want_a)
    assert_deeply_discharged(out)


def test_a_li_ion_cell_above_its_recovery_threshold_charges_normally() -> None:
    out = once(reading(cells_at(3.7, 14, cell2=3.05), settings=li_ion_settings()))
    assert out.charge_current_limit_a == CHARGE_CEILING_A and not out.cell_deeply_discharged


# --- through the engine: the recovery current lifts the cell ---------------------------------------------------

STEP_S = 10.0
NOISE_V = (0.015, -0.015)
"""The BMS's reading of the weak cell wobbles by ± 15 mV, alternating: a cell sitting at 2.5 V must not make the
limit flap."""


def test_the_recovery_current_lifts_the_cell_and_normal_charging_resumes_with_hysteresis() -> None:
    # 16 cells of 280 Ah at 20 % SOC; cell 3 left at -0.4 % of its capacity: 2.40 V at rest (the model's LiFePO4
    # curve extrapolates below 0 %). An obedient charger takes exactly the CCL it is told.
    healthy = make_pack(cell_count=16, capacity_ah=280.0, runner=None, soc_pct=20.0)
    weak = Cell(280.0, 280.0 * -0.004, healthy.cells[2].resistance_ohm)
    pack = PackModel((*healthy.cells[:2], weak, *healthy.cells[3:]))
    engine = LimitsEngine(TUNING)
    current_a = 0.0
    rows: list[tuple[float, float, EngineResult]] = []
    for step in range(400):
        now = NOW_S + step * STEP_S
        cells = list(pack.cell_voltages_v(current_a))
        cells[2] += NOISE_V[step % 2]
        result = engine.update(reading(tuple(round(v, 3) for v in cells), now_s=now, current_a=current_a), now)
        rows.append((now, min(cells), result))
        current_a = result.limits.charge_current_limit_a
        pack = pack.step(current_a, STEP_S)

    flags = [r.limits.cell_deeply_discharged for _, _, r in rows]
    assert flags[0], "a 2.4 V cell is deeply discharged from the first reading"
    released = flags.index(False)
    assert not any(flags[released:]), "no flapping: once released, never deeply discharged again"
    recovery, normal = rows[:released], rows[released:]
    # While recovering: at most the recovery current, no discharging, and the cell lifted by it.
    assert all(r.limits.charge_current_limit_a <= RECOVERY_A for _, _, r in recovery)
    assert all(r.limits.discharge_current_limit_a == 0.0 for _, _, r in recovery)
    # The wobble took the cell above 2.5 V and back under it many times: the limit held at the recovery current.
    crossings = sum(1 for (_, a, _), (_, b, _) in itertools.pairwise(recovery) if (a > 2.5) != (b > 2.5))
    assert crossings >= 5
    # Released only at 2.6 V (2.5 V + the gap), with one log line each way.
    threshold = PRESETS[Chemistry.LIFEPO4].recovery_charge_below_cell_v + DEEP_DISCHARGE_RELEASE_GAP_V
    assert normal[0][1] >= threshold > recovery[-1][1]
    events = [e for _, _, r in rows for e in r.events if "deep discharge" in e]
    assert len(events) == 2 and events[1].startswith("deep discharge over")
    # Normal charging resumes through the hold and ramp: the ceiling within a minute.
    resumed_at = normal[0][0]
    assert any(r.limits.charge_current_limit_a == CHARGE_CEILING_A and t - resumed_at <= 60 for t, _, r in normal)


def test_the_deep_discharge_latch_survives_a_restart() -> None:
    engine = LimitsEngine(TUNING)
    engine.update(reading(cells_at(3.30, cell3=1.9)), NOW_S)
    assert engine.memory is not None
    # Restarted with the saved memory, a cell that relaxed to 2.05 V is still not charged (released at 2.1 V).
    restored = memory_from_json(memory_to_json(engine.memory, NOW_S), NOW_S + 1)
    out = compute_limits(reading(cells_at(3.30, cell3=2.05), now_s=NOW_S + 1), TUNING, restored, NOW_S + 1).limits
    assert out.charge_current_limit_a == 0.0 and out.cell_deeply_discharged


def test_several_packs_each_one_at_most_its_recovery_current() -> None:
    deep = reading(cells_at(3.30, cell3=2.4))
    packs = [
        PackLimits("pack #1", deep, once(deep)),
        PackLimits("pack #2", (healthy := reading()), once(healthy)),
    ]
    battery = system_limits(packs, TUNING)
    # Two equal packs share equally: 2 × 14 A puts 14 A into the deeply discharged one; the battery carries the flag.
    assert battery.charge_current_limit_a == pytest.approx(2 * RECOVERY_A)
    assert battery.discharge_current_limit_a == 0.0 and battery.cell_deeply_discharged


# --- the alarm on status and MQTT, through the control loop --------------------------------------------------


def test_the_alarm_reaches_status_and_mqtt_and_goes_out_urgently() -> None:
    clock = FakeClock(start_s=NOW_S)
    loop = ControlLoop(load_profile("pylontech-can"), NullSink(), clock, SETTINGS)
    loop.on_readings((stamped(reading(cells_at(3.30, cell3=2.4)), clock.monotonic()),))
    loop.tick()
    deep = loop.snapshot()
    assert deep.limits is not None and deep.limits.charge_current_limit_a <= RECOVERY_A
    assert CELL_DEEPLY_DISCHARGED in status_document(deep)["alarms"]
    assert CELL_DEEPLY_DISCHARGED in topic_payloads(deep)["alarms"]
    calm = replace(deep, limits=replace(deep.limits, cell_deeply_discharged=False), pack_limits={})
    assert CELL_DEEPLY_DISCHARGED not in status_document(calm)["alarms"]
    assert mqtt_module._urgent_key(deep) != mqtt_module._urgent_key(calm)


# --- the setting ------------------------------------------------------------------------------------------------

BASE = {
    "bms": {"port": "/dev/ttyUSB0"},
    "inverter": {"profile": "pylontech-can", "can": {"interface": "virtual", "channel": "vcan0"}},
}


def test_limits_recovery_current_c_is_a_setting_with_bounds() -> None:
    config = parse_config(BASE, "test")
    assert limits_tuning(config.limits, config.charging).recovery_current_c == 0.05
    config = parse_config({**BASE, "limits": {"recovery_current_c": 0.02}}, "test")
    assert limits_tuning(config.limits, config.charging).recovery_current_c == 0.02
    with pytest.raises(ConfigError, match=r"limits\.recovery_current_c: expected a number from 0 to 0\.1"):
        parse_config({**BASE, "limits": {"recovery_current_c": 0.5}}, "test")
