"""Several packs as one battery, the pure parts: the aggregate (gateway.battery) and the system limits
(gateway.limits.system), with the four packs of ``multipack_fixtures`` and numbers worked out by hand there."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest
from multipack_fixtures import FOUR, TUNING, four_at

from gateway.battery import BATTERY_ID, SETTINGS_RULES, Extreme, aggregate, aggregate_settings, pack_labels
from gateway.limits import compute_limits
from gateway.limits.settings import CurrentSharing, LimitsSettings
from gateway.limits.system import PackLimits, system_limits
from gateway.model import Alarm, LimitReason, Limits, PackReading, ProtectionSettings
from gateway.packs import battery_at
from gateway.values import published_values

NOW_S = 100.0
IDS = tuple(f"jk-modbus:bus#{unit}" for unit in FOUR)


def own_limits(readings: list[PackReading]) -> list[PackLimits]:
    """Each pack's limits from its own engine, as the runtime computes them."""
    labels = pack_labels([r.pack_id for r in readings])
    return [PackLimits(labels[r.pack_id], r, compute_limits(r, TUNING, None, r.measured_at_s).limits) for r in readings]


# --- the aggregate ---------------------------------------------------------------------------------------


def test_four_packs_aggregate_to_the_hand_worked_battery() -> None:
    battery = aggregate(four_at(NOW_S))
    state, settings = battery.reading.state, battery.reading.settings
    assert battery.reading.pack_id == BATTERY_ID
    assert battery.online == IDS and battery.module_count == 4
    assert state.pack_voltage_v == pytest.approx(52.81)
    assert state.current_a == pytest.approx(70.0)
    assert state.soc_pct == pytest.approx(54.0)
    assert settings.capacity_ah == pytest.approx(980.0)
    assert state.remaining_capacity_ah == pytest.approx(529.2)
    assert (state.max_cell_v, state.min_cell_v) == (3.350, 3.280)
    assert battery.extremes.max_cell == Extreme(3.350, IDS[1], 7)
    assert battery.extremes.min_cell == Extreme(3.280, IDS[2], 3)
    assert battery.extremes.max_temperature == Extreme(30.0, IDS[2], 1)
    assert battery.extremes.min_temperature == Extreme(19.0, IDS[3], 2)
    assert battery.extremes.max_mos_temperature == Extreme(35.0, IDS[2], None)
    assert state.mos_temperature_c == 35.0
    # The most restrictive setting per field: the lowest max charge current, the highest UVP.
    assert settings.max_charge_current_a == 100.0 and settings.cell_uvp_v == 2.80
    assert settings.cell_ovp_v == 3.65 and settings.cell_count == 16

    values = published_values(battery.reading, own_limits(four_at(NOW_S))[0].limits, module_count=4)
    assert values["temperature_c"] == pytest.approx(24.75)
    assert (values["max_temperature_c"], values["min_temperature_c"]) == (30.0, 19.0)
    assert (values["max_cell_v"], values["min_cell_v"]) == (3.350, 3.280)
    assert values["capacity_ah"] == pytest.approx(980.0)
    assert values["module_count"] == 4


def test_one_pack_is_the_battery_unchanged() -> None:
    (reading,) = four_at(NOW_S)[:1]
    battery = aggregate([reading])
    assert battery.reading is reading
    assert battery.module_count == 1


def test_alarms_merge_and_mos_states_need_every_pack() -> None:
    first, second, *_ = four_at(NOW_S)
    second = replace(
        second, state=replace(second.state, alarms=frozenset({Alarm.CELL_OVER_VOLTAGE}), charge_mos_on=False)
    )
    state = aggregate([first, second]).reading.state
    assert state.alarms == {Alarm.CELL_OVER_VOLTAGE}
    assert state.charge_mos_on is False and state.discharge_mos_on is True


def test_soc_is_plain_mean_when_a_capacity_is_unknown() -> None:
    first, second, *_ = four_at(NOW_S)
    second = replace(second, settings=replace(second.settings, capacity_ah=None))
    battery = aggregate([first, second])
    assert battery.reading.state.soc_pct == pytest.approx(55.0)  # (60 + 50) / 2
    assert battery.reading.settings.capacity_ah is None


def test_every_setting_has_a_rule_and_keeps_its_type() -> None:
    assert set(SETTINGS_RULES) == {f.name for f in fields(ProtectionSettings)}
    merged = aggregate_settings([r.settings for r in four_at(NOW_S)])
    for spec in fields(ProtectionSettings):
        value = getattr(merged, spec.name)
        first = getattr(FOUR[1].settings, spec.name)
        assert value is None or first is None or type(value) is type(first) or isinstance(value, float), spec.name


def test_duplicate_or_no_readings_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        aggregate([])
    reading = four_at(NOW_S)[0]
    with pytest.raises(ValueError, match="two readings of one pack"):
        aggregate([reading, reading])


def test_labels_use_the_unit_address_on_one_bus_else_the_id() -> None:
    assert pack_labels(IDS)[IDS[1]] == "pack #2"
    mixed = ("jk-modbus:/dev/a#1", "jk-modbus:/dev/b#1")
    assert pack_labels(mixed)[mixed[1]] == "pack jk-modbus:/dev/b#1"
    assert pack_labels(("jk-uart:/dev/x",))["jk-uart:/dev/x"] == "pack jk-uart:/dev/x"


def test_battery_at_leaves_out_packs_older_than_the_timeout() -> None:
    readings = four_at(NOW_S)
    latest = {r.pack_id: r for r in readings}
    latest[IDS[2]] = four_at(NOW_S - 6.0)[2]  # pack 3's newest reading is 6 s old
    battery = battery_at(latest, IDS, NOW_S, timeout_s=5.0)
    assert battery is not None
    assert battery.online == (IDS[0], IDS[1], IDS[3]) and battery.offline == (IDS[2],)
    assert battery.reading.state.current_a == pytest.approx(60.0)
    # Every pack stale: the packs that were online together with the newest reading stand for the battery.
    later = battery_at(latest, IDS, NOW_S + 60.0, timeout_s=5.0)
    assert later is not None and later.online == battery.online
    assert battery_at({}, IDS, NOW_S, timeout_s=5.0) is None


# --- the system limits -------------------------------------------------------------------------------------


def test_the_pack_with_the_lower_max_charge_current_sets_the_system_limit() -> None:
    limits = system_limits(own_limits(four_at(NOW_S)), TUNING)
    assert limits.charge_current_limit_a == 360.0  # 4 packs × pack 4's 0.9 × 100 A
    assert limits.discharge_current_limit_a == 720.0  # 4 × 0.9 × 200 A
    assert limits.charge_voltage_limit_v == 55.2
    assert limits.discharge_voltage_limit_v == 46.4  # pack 3: 16 × (UVP 2.80 + 0.10)
    assert limits.charge_enable and limits.discharge_enable
    assert limits.soc_pct == pytest.approx(54.0)
    charge = limits.reasons["charge_current_limit_a"]
    assert charge.reason == "pack #4: BMS max × 0.9: 90.0 A (4 packs × 90.0 A)"
    assert limits.reasons["discharge_voltage_limit_v"].reason.startswith("pack #3: discharge cut-off 2.900 V")

    # The same packs with pack 4 at the others' 150 A: the charge limit is 4 × 135 A.
    alike = four_at(NOW_S)
    alike[3] = replace(alike[3], settings=replace(alike[3].settings, max_charge_current_a=150.0))
    assert system_limits(own_limits(alike), TUNING).charge_current_limit_a == 540.0


def test_capacity_sharing_lets_the_small_pack_limit_the_battery() -> None:
    # Pack 3 has 140 of 980 Ah: it takes 1/7 of the current, so it reaches 135 A at 7 × 135 = 945 A; pack 4
    # (280 Ah, 90 A) reaches its limit at 90 × 980 / 280 = 315 A: the battery's limit.
    tuning = replace(TUNING, current_sharing=CurrentSharing.CAPACITY)
    limits = system_limits(own_limits(four_at(NOW_S)), tuning)
    assert limits.charge_current_limit_a == 315.0
    # Discharge: each 280 Ah pack takes 2/7 of the current and allows 180 A: 180 × 3.5 = 630 A, below the
    # 720 A that equal sharing would allow (which would overload the 280 Ah packs by 12.5 %).
    assert limits.discharge_current_limit_a == 630.0
    assert limits.reasons["charge_current_limit_a"].reason.endswith("(90.0 A at 280 of 980 Ah)")


def test_auto_sharing_shares_by_capacity_once_the_packs_differ() -> None:
    # Battery-safety audit P6: equal sharing (the old default) of 100/100/70 Ah packs put 119 A into a 100 A
    # pack. auto (the default) shares by capacity when the largest pack exceeds the smallest by more than 10 %:
    # here 280 against 140 Ah, so the battery's CCL is capacity sharing's 315 A, not equal sharing's 360 A.
    default = LimitsSettings(max_charge_current_a=1000.0, max_discharge_current_a=1000.0)
    assert default.current_sharing is CurrentSharing.AUTO
    assert system_limits(own_limits(four_at(NOW_S)), default).charge_current_limit_a == 315.0
    # Alike packs (within 10 %): equal, 4 × the smallest.
    alike = [replace(p, settings=replace(p.settings, capacity_ah=280.0)) for p in four_at(NOW_S)]
    assert system_limits(own_limits(alike), default).charge_current_limit_a == 360.0


def test_any_pack_that_blocks_a_side_makes_it_zero() -> None:
    packs = own_limits(four_at(NOW_S))
    blocked = replace(
        packs[1].limits,
        charge_current_limit_a=0.0,
        charge_enable=False,
        reasons={**packs[1].limits.reasons, "charge_enable": LimitReason("cell_voltage", "cell 7 at 3.55 V")},
    )
    packs[1] = replace(packs[1], limits=blocked)
    limits = system_limits(packs, TUNING)
    assert (limits.charge_current_limit_a, limits.charge_enable) == (0.0, False)
    assert limits.reasons["charge_enable"] == LimitReason("cell_voltage", "pack #2: cell 7 at 3.55 V")
    assert limits.discharge_current_limit_a == 720.0 and limits.discharge_enable


def test_a_pack_that_missed_the_poll_loses_its_share_but_keeps_its_block_and_voltages() -> None:
    packs = own_limits(four_at(NOW_S))
    counted, missed = [packs[0], packs[1], packs[3]], [packs[2]]
    limits = system_limits(counted, TUNING, uncounted=missed)
    assert limits.charge_current_limit_a == 270.0  # 3 × 90 A
    assert limits.discharge_current_limit_a == 540.0  # 3 × 180 A
    assert limits.discharge_voltage_limit_v == 46.4, "pack 3 may still be connected: its DVL holds"
    assert limits.reasons["charge_current_limit_a"].reason.endswith("; without pack #3")
    blocking = replace(missed[0], limits=replace(missed[0].limits, discharge_enable=False))
    assert system_limits(counted, TUNING, uncounted=[blocking]).discharge_current_limit_a == 0.0


def test_offline_packs_reduce_by_the_configured_fraction_and_the_user_cap_bounds_the_total() -> None:
    packs = own_limits(four_at(NOW_S))
    online = [packs[0], packs[1], packs[3]]
    assert system_limits(online, TUNING, offline=["pack #3"]).charge_current_limit_a == 270.0
    reduced = system_limits(online, replace(TUNING, offline_current_fraction=0.5), offline=["pack #3"])
    assert (reduced.charge_current_limit_a, reduced.discharge_current_limit_a) == (135.0, 270.0)
    assert "× 0.5 without pack #3" in reduced.reasons["charge_current_limit_a"].reason
    assert reduced.discharge_voltage_limit_v == 44.8, "an offline pack's limits no longer apply"
    capped = system_limits(packs, replace(TUNING, max_charge_current_a=300.0))
    assert capped.charge_current_limit_a == 300.0
    assert capped.reasons["charge_current_limit_a"] == LimitReason(
        "user_cap", "user cap 300 A for the battery (packs allow 360.0 A)"
    )


def test_one_pack_gets_its_own_limits_and_flags_are_merged() -> None:
    packs = own_limits(four_at(NOW_S))
    assert system_limits(packs[:1], TUNING) is packs[0].limits
    forcing = replace(packs[2], limits=replace(packs[2].limits, force_charge=True, full_charge_request=True))
    limits: Limits = system_limits([packs[0], forcing], TUNING)
    assert limits.force_charge and limits.full_charge_request
    with pytest.raises(ValueError):
        system_limits([], TUNING)
