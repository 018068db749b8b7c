"""The JK-PB codec against the real captures (``data/jk_pb_frames.json``), its round trip through the model for
every scenario, the read plan, the trigger exchange's framing and the request guard."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Mapping
from typing import Any, Final

import pytest
from jk_pb_data import (
    DUMP,
    DUMP_BY_NAME,
    FRAME_BY_TYPE,
    FRAMES_UNIT,
    PASSCODES,
    TRIGGER_FRAMES,
    modbus_crc,
    with_frame_sum,
)

from gateway.alarms import ALARM_TABLE
from gateway.bms import jk_modbus
from gateway.bms.jk_modbus_frames import (
    MAX_READ_WORDS,
    Read,
    encode_frame,
    is_permitted_request,
    parse_frame,
    read_plan,
    scan_trigger_reply,
    trigger_ack,
    trigger_request,
)
from gateway.bms.jk_modbus_image import BlockImage, decode, encode_image, image_from_registers, registers_from_image
from gateway.bms.jk_modbus_model import POLL_PLAN, to_device, to_settings, to_state, values_from_reading
from gateway.bms.jk_modbus_tables import BLOCKS, INFO, LIVE, SETTINGS, Block, Kind
from gateway.errors import FrameError
from gateway.model import Alarm, BatteryState, PackReading, ProtectionSettings
from gateway.plausibility import implausibility
from gateway.sim.scenarios import SCENARIOS
from gateway.sim.scenarios import Step as ScenarioStep

Convert = Callable[[Any], Any]


def same(value: Any) -> Any:
    return value


def hex_int(text: str) -> int:
    return int(text, 16)


def first(count: int) -> Convert:
    return lambda values: tuple(values[:count])


def scaled(divisor: int) -> Convert:
    """A raw value in the capture's unit (mV, mA, 0.1 °C) → the codec's unit."""
    return lambda raw: raw / divisor


# --- what each capture's "expected" keys are called here -----------------------------------------------------

LIVE_KEYS: Final[dict[str, tuple[str, Convert]]] = {
    "cell_present_mask": ("cell_present_bitmap", hex_int),
    "cell_avg_v": ("average_cell_v", same),
    "cell_delta_v": ("cell_delta_v", same),
    "max_cell_nbr": ("max_cell_index", same),
    "min_cell_nbr": ("min_cell_index", same),
    "mos_temp_c": ("mos_temperature_c", same),
    "total_voltage_v": ("pack_voltage_v", same),
    "power_w": ("power_w", same),
    "current_a": ("current_a", same),
    "temp1_c": ("temperature_1_c", same),
    "temp2_c": ("temperature_2_c", same),
    "alarms": ("alarm_bitmap", lambda v: hex_int(v) if isinstance(v, str) else v),
    "balance_current_a": ("balance_current_a", same),
    "balance_state": ("balance_state", same),
    "soc_pct": ("soc_pct", same),
    "remaining_ah": ("remaining_capacity_ah", same),
    "full_charge_ah": ("full_charge_capacity_ah", same),
    "cycles": ("cycle_count", same),
    "cycle_capacity_ah": ("cycle_capacity_ah", same),
    "soh_pct": ("soh_pct", same),
    "precharge": ("precharge_on", same),
    "user_alarm": ("user_alarm", same),
    "runtime_s": ("runtime_s", same),
    "charge_mos": ("charge_mos_on", same),
    "discharge_mos": ("discharge_mos_on", same),
    "user_alarm2": ("user_alarm_2", same),
    "temp_sensor_mask": ("temperature_sensor_bits", hex_int),
    "heating": ("heating_on", same),
    "batvol_0_01": ("pack_voltage_2_v", same),
    "batvol_0_01v": ("pack_voltage_2_v", same),
    "heat_current_a": ("heater_current_a", same),
    "sys_ticks_0_1s": ("system_ticks_s", scaled(10)),
    "sys_run_ticks_0_1s": ("system_ticks_s", scaled(10)),
    "temp3_c": ("temperature_3_c", same),
    "temp4_c": ("temperature_4_c", same),
    "temp5_c": ("temperature_5_c", same),
    "rtc_ticks_s_since_2020": ("rtc_s", same),
}
"""Array keys (cells, wire resistances) are checked on their own: the captures list only the cells present."""

SETTINGS_FRAME_KEYS: Final[dict[str, tuple[str, Convert]]] = {
    "VolSmartSleep": ("smart_sleep_v", scaled(1000)),
    "VolCellUV": ("cell_uvp_v", scaled(1000)),
    "VolCellUVPR": ("cell_uvpr_v", scaled(1000)),
    "VolCellOV": ("cell_ovp_v", scaled(1000)),
    "VolCellOVPR": ("cell_ovpr_v", scaled(1000)),
    "VolBalanTrig": ("balance_trigger_v", scaled(1000)),
    "VolSOC100": ("soc_100_v", scaled(1000)),
    "VolSOC0": ("soc_0_v", scaled(1000)),
    "VolCellRCV": ("request_charge_v", scaled(1000)),
    "VolCellRFV": ("request_float_v", scaled(1000)),
    "VolSysPwrOff": ("power_off_v", scaled(1000)),
    "CurBatCOC": ("max_charge_current_a", scaled(1000)),
    "TIMBatCOCPDly": ("charge_ocp_delay_s", same),
    "TIMBatCOCPRDly": ("charge_ocp_recovery_s", same),
    "CurBatDcOC": ("max_discharge_current_a", scaled(1000)),
    "TIMBatDcOCPDly": ("discharge_ocp_delay_s", same),
    "TIMBatDcOCPRDly": ("discharge_ocp_recovery_s", same),
    "TIMBatSCPRDly": ("scp_recovery_s", same),
    "CurBalanMax": ("max_balance_current_a", scaled(1000)),
    "TMPBatCOT": ("charge_otp_c", scaled(10)),
    "TMPBatCOTPR": ("charge_otpr_c", scaled(10)),
    "TMPBatDcOT": ("discharge_otp_c", scaled(10)),
    "TMPBatDcOTPR": ("discharge_otpr_c", scaled(10)),
    "TMPBatCUT": ("charge_utp_c", scaled(10)),
    "TMPBatCUTPR": ("charge_utpr_c", scaled(10)),
    "TMPMosOT": ("mos_otp_c", scaled(10)),
    "TMPMosOTPR": ("mos_otpr_c", scaled(10)),
    "CellCount": ("cell_count", same),
    "BatChargeEN": ("charge_switch", same),
    "BatDisChargeEN": ("discharge_switch", same),
    "BalanEN": ("balancer_switch", same),
    "CapBatCell": ("capacity_ah", scaled(1000)),
    "SCPDelay": ("scp_delay_us", same),
    "VolStartBalan": ("balance_start_v", scaled(1000)),
    "DevAddr": ("device_address", same),
    "TIMProdischarge": ("precharge_time_s", same),
    "CtrlBits": ("control_bits", hex_int),
    "TMPBatOTA": ("heating_start_c", same),
    "TMPBatOTAR": ("heating_stop_c", same),
    "TIMSmartSleep": ("smart_sleep_h", same),
}

SETTINGS_DUMP_KEYS: Final[dict[str, tuple[str, Convert]]] = {
    "smart_sleep_v": ("smart_sleep_v", same),
    "soc100_v": ("soc_100_v", same),
    "soc0_v": ("soc_0_v", same),
    "rcv_v": ("request_charge_v", same),
    "rfv_v": ("request_float_v", same),
    "charge_ocpr_s": ("charge_ocp_recovery_s", same),
    "discharge_ocpr_s": ("discharge_ocp_recovery_s", same),
    "scpr_s": ("scp_recovery_s", same),
    "charge_en": ("charge_switch", same),
    "discharge_en": ("discharge_switch", same),
    "balance_en": ("balancer_switch", same),
    "control_bits": ("control_bits", hex_int),
    **{
        name: (name, same)
        for name in (
            "cell_uvp_v",
            "cell_uvpr_v",
            "cell_ovp_v",
            "cell_ovpr_v",
            "balance_trigger_v",
            "power_off_v",
            "max_charge_current_a",
            "charge_ocp_delay_s",
            "max_discharge_current_a",
            "discharge_ocp_delay_s",
            "max_balance_current_a",
            "charge_otp_c",
            "charge_otpr_c",
            "discharge_otp_c",
            "discharge_otpr_c",
            "charge_utp_c",
            "charge_utpr_c",
            "mos_otp_c",
            "mos_otpr_c",
            "cell_count",
            "capacity_ah",
            "scp_delay_us",
            "balance_start_v",
        )
    },
}

INFO_KEYS: Final[dict[str, tuple[str, Convert]]] = {
    "model": ("model", same),
    "hw": ("hardware_version", same),
    "sw": ("software_version", same),
    "odd_runtime_s": ("info_runtime_s", same),
    "power_on_times": ("power_on_count", same),
    # What the research notes call the serial number at 0x28 is the user-set device name (see jk_modbus.INFO).
    "serial": ("device_name", same),
    "serial_prefix": ("device_name", same),
}


def assert_values(
    values: Mapping[str, Any], expected: Mapping[str, Any], keys: Mapping[str, tuple[str, Convert]]
) -> int:
    """Every expected key that ``keys`` maps decodes to its value; returns how many were checked."""
    checked = 0
    for key, want in expected.items():
        if key not in keys:
            continue
        name, convert = keys[key]
        assert name in values, f"{key} ({name}) not decoded"
        assert values[name] == pytest.approx(convert(want), abs=1e-9), key
        checked += 1
    return checked


def dump_image(block: Block, *names: str) -> BlockImage:
    return image_from_registers(block, [(DUMP_BY_NAME[n].address, DUMP_BY_NAME[n].words) for n in names])


# --- the real trigger frames --------------------------------------------------------------------------------


def test_the_captured_frames_are_what_the_notes_say() -> None:
    # Checked with the test's own arithmetic before the codec sees them.
    for frame in TRIGGER_FRAMES:
        assert len(frame.frame) == 300
        assert frame.frame[:4] == bytes.fromhex("55 AA EB 90")
        assert with_frame_sum(frame.frame) == frame.frame
        assert frame.ack[0] == FRAMES_UNIT and modbus_crc(frame.ack[:6]) == frame.ack[6:]
    assert sorted(FRAME_BY_TYPE) == [1, 2, 3]


def test_status_frame_decodes_to_every_listed_value() -> None:
    captured = FRAME_BY_TYPE[2]
    image = parse_frame(captured.frame)
    assert image.block is LIVE and image.byteorder == "little"
    values = decode(image)
    expected = captured.expected
    cells = len(expected["cell_voltages_v"])
    assert values["cell_voltages_v"][:cells] == pytest.approx(expected["cell_voltages_v"])
    assert values["wire_resistances_ohm"][:cells] == pytest.approx(expected["wire_res_ohm"])
    checked = assert_values(values, expected, LIVE_KEYS)
    assert checked == len(expected) - 2  # every key but the two arrays


def test_settings_frame_decodes_to_every_listed_value() -> None:
    captured = FRAME_BY_TYPE[1]
    image = parse_frame(captured.frame)
    assert image.block is SETTINGS
    assert assert_values(decode(image), captured.expected, SETTINGS_FRAME_KEYS) == len(captured.expected)


def test_about_frame_decodes_to_every_listed_value() -> None:
    captured = FRAME_BY_TYPE[3]
    image = parse_frame(captured.frame)
    assert image.block is INFO
    values = decode(image)
    assert assert_values(values, captured.expected, INFO_KEYS) == len(captured.expected)
    assert values["serial_number"] == "40119491480"
    assert values["manufacture_date"] == "240914"


def test_frames_make_a_plausible_reading() -> None:
    state = to_state(decode(parse_frame(FRAME_BY_TYPE[2].frame)), 12.5)
    settings = to_settings(decode(parse_frame(FRAME_BY_TYPE[1].frame)), 12.0)
    device = to_device(decode(parse_frame(FRAME_BY_TYPE[3].frame)))
    reading = PackReading("jk-modbus:test#3", state, settings, device)
    assert implausibility(reading) is None
    assert state.measured_at_s == 12.5 and state.cell_count == 16
    assert state.pack_voltage_v == pytest.approx(52.695)
    assert state.soc_pct == 55 and state.soh_pct == 100
    assert state.remaining_capacity_ah == pytest.approx(155.219)
    assert state.cycle_count == 62
    assert state.mos_temperature_c == pytest.approx(20.3)
    assert state.battery_temperatures_c == pytest.approx((19.5, 19.8, 20.3, 19.4, 19.9))
    assert state.charge_mos_on and state.discharge_mos_on and not state.balancer_on
    assert state.alarms == frozenset()
    assert state.runtime_s == 48570884
    assert (settings.cell_uvp_v, settings.cell_uvpr_v, settings.cell_ovp_v, settings.cell_ovpr_v) == pytest.approx(
        (2.7, 2.901, 3.65, 3.444)
    )
    assert (settings.max_charge_current_a, settings.max_discharge_current_a) == (60.0, 100.0)
    assert settings.cell_count == 16 and settings.capacity_ah == 280.0
    assert settings.charge_otp_c == 35.0 and settings.charge_utp_c == 5.0 and settings.discharge_otp_c == 35.0
    assert settings.balance_trigger_v == pytest.approx(0.005)
    assert settings.balancer_enabled is True and settings.charge_mos_switch is True
    for name in jk_modbus.SETTINGS_NOT_CARRIED:
        assert getattr(settings, name) is None, name
    assert device.model == "JK_PB2A16S20P"
    assert (device.hardware_version, device.software_version) == ("15A", "15.41")
    assert device.serial_number == "40119491480"


def test_frames_drop_every_passcode() -> None:
    for captured in TRIGGER_FRAMES:
        image = parse_frame(captured.frame)
        values = decode(image)
        for passcode in PASSCODES:
            assert passcode.encode() not in image.data
            assert all(passcode not in str(v) for v in values.values())
        assert not {"device_passcode", "passcode", "setup_passcode"} & values.keys()
    assert b"136913" in FRAME_BY_TYPE[3].frame  # the capture does carry one


# --- the real FC03 register dump ----------------------------------------------------------------------------


def test_dump_live_block_decodes_to_every_listed_value() -> None:
    values = decode(dump_image(LIVE, "RT_A", "RT_C"))
    expected = DUMP_BY_NAME["RT_A"].expected
    assert values["cell_voltages_v"][:16] == pytest.approx(expected["cell_voltages_v"])
    assert values["wire_resistances_ohm"][:16] == pytest.approx(expected["wire_res_ohm"])
    assert assert_values(values, expected, LIVE_KEYS) == len(expected) - 2
    rt_c = DUMP_BY_NAME["RT_C"].expected
    assert assert_values(values, rt_c, LIVE_KEYS) == len(rt_c)


def test_the_read_at_0x1278_decodes_only_under_the_byte_offset_rule() -> None:
    shifted = DUMP_BY_NAME["RT_B"]
    assert shifted.address == 0x1278
    values = decode(image_from_registers(LIVE, [(shifted.address, shifted.words)]))
    # Word 9 of that reply is byte offset 0x78 + 2·9 = 0x8A, the MOS temperature; word 13 is the low word
    # of the pack voltage (0x90..0x93).
    assert shifted.expected["mos_temp_word_index"] == 9 and shifted.expected["total_voltage_low_word_index"] == 13
    assert values["mos_temperature_c"] == pytest.approx(23.1)
    assert values["pack_voltage_v"] == pytest.approx(50.923)
    assert shifted.words[13] == 50923 & 0xFFFF
    # Everything it covers agrees with the read from the block base.
    base = decode(dump_image(LIVE, "RT_A"))
    assert {k: base[k] for k in values} == values
    # Taken as word addresses (0x1278 = word 0x78 = byte 0xF0) the same words would be the RTC and sensors.
    assert 0x78 * 2 == 0xF0 and "cell_voltages_v" not in values


def test_dump_settings_decode_to_every_listed_value() -> None:
    values = decode(dump_image(SETTINGS, "SETTINGS_1", "PACKED_BIT"))
    expected = DUMP_BY_NAME["SETTINGS_1"].expected
    assert assert_values(values, expected, SETTINGS_DUMP_KEYS) == len(expected)
    assert assert_values(values, DUMP_BY_NAME["PACKED_BIT"].expected, SETTINGS_DUMP_KEYS) == 1
    assert values["control_bits"] >> 9 & 1  # charging float mode, as the app showed


def test_dump_read_at_0x1064_starts_with_the_mos_otp() -> None:
    shifted = DUMP_BY_NAME["SETTINGS_2"]
    values = decode(image_from_registers(SETTINGS, [(shifted.address, shifted.words)]))
    assert assert_values(values, shifted.expected, SETTINGS_DUMP_KEYS) == len(shifted.expected)
    assert "charge_utpr_c" not in values  # byte 0x60: before the read


def test_dump_info_decodes_and_drops_the_passcodes() -> None:
    image = dump_image(INFO, "INFO")
    values = decode(image)
    expected = DUMP_BY_NAME["INFO"].expected
    assert assert_values(values, expected, INFO_KEYS) == len(expected)
    assert values["serial_number"] == expected["serial_prefix"]
    raw = b"".join(w.to_bytes(2, "big") for w in DUMP_BY_NAME["INFO"].words)
    assert b"LZet3NuV4MXr" in raw and b"1234" in raw  # the reply carried them ...
    assert b"LZet3NuV4MXr" not in image.data and b"1234" not in image.data  # ... the image does not


def test_dump_makes_a_plausible_reading() -> None:
    state = to_state(decode(dump_image(LIVE, "RT_A", "RT_C")), 1.0)
    settings = to_settings(decode(dump_image(SETTINGS, "SETTINGS_1", "SETTINGS_2", "PACKED_BIT")), 1.0)
    reading = PackReading("jk-modbus:dump#1", state, settings, to_device(decode(dump_image(INFO, "INFO"))))
    assert implausibility(reading) is None
    assert state.cell_voltages_v == (3.183,) * 16
    assert state.pack_voltage_v == pytest.approx(50.923)
    assert state.current_a == 0.0 and state.soc_pct == 59 and state.soh_pct == 100
    assert state.remaining_capacity_ah == pytest.approx(184.041) and state.cycle_count == 0
    assert state.battery_temperatures_c == pytest.approx((21.6, 21.6, 23.1, 21.6, 21.8))
    assert settings.max_charge_current_a == 40.0 and settings.max_discharge_current_a == 200.0
    assert settings.capacity_ah == 314.0 and settings.balance_start_v == pytest.approx(3.0)
    assert reading.device.serial_number == "50314490295"


def test_the_simulator_side_serves_the_dump_back_word_for_word() -> None:
    for read in DUMP:
        block = jk_modbus.block_at(read.address)
        assert block is not None
        data = image_from_registers(block, [(read.address, read.words)]).data
        offset = read.address - block.base
        served = registers_from_image(data, offset, len(read.words))
        if block is INFO:
            continue  # its passcodes are zeroed (checked above); test_jk_modbus_driver replays the raw dump
        assert served == read.words, read.name


# --- round trip: model → registers or frame → model, every scenario -----------------------------------------

SCENARIO_TIMES_S: Final = (0.5, 3.5, 15.5, 30.0, 55.0, 80.0, 100.0, 159.5, 1234.5)


def _carried_state(state: BatteryState, capacity_ah: float | None) -> BatteryState:
    """What a JK-PB reports of ``state``: alarms it has a bit for; SOH, balance current, remaining capacity
    always (the simulator fills in what the scenario leaves open)."""
    return dataclasses.replace(
        state,
        soh_pct=100.0 if state.soh_pct is None else state.soh_pct,
        balance_current_a=state.balance_current_a or 0.0,
        remaining_capacity_ah=(capacity_ah or 0.0) * state.soc_pct / 100
        if state.remaining_capacity_ah is None
        else state.remaining_capacity_ah,
        alarms=frozenset(a for a in state.alarms if ALARM_TABLE[a].pb_bit is not None),
    )


def _carried_settings(settings: ProtectionSettings) -> ProtectionSettings:
    values: dict[str, Any] = {}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if field.name in jk_modbus.SETTINGS_NOT_CARRIED:
            values[field.name] = None
        elif value is None:
            values[field.name] = 0.0  # carried, left open by the scenario: sent as 0
        else:
            values[field.name] = value
    return ProtectionSettings(**values)


def assert_close(actual: Any, expected: Any) -> None:
    """Dataclasses equal field by field, floats to 1e-6 (remaining capacity is rounded to mAh on the wire)."""
    for field in dataclasses.fields(expected):
        got, want = getattr(actual, field.name), getattr(expected, field.name)
        if isinstance(want, float | tuple):
            assert got == pytest.approx(want, abs=1e-6), field.name
        else:
            assert got == want, field.name


def _scenario_steps() -> list[tuple[str, float, ScenarioStep]]:
    return [(name, t, s.step(t)) for name, s in sorted(SCENARIOS.items()) for t in SCENARIO_TIMES_S]


@pytest.mark.parametrize("via", ["registers", "frames"])
@pytest.mark.parametrize(("scenario", "t_s", "step"), _scenario_steps(), ids=lambda v: str(v)[:20])
def test_round_trip_of_every_scenario(scenario: str, t_s: float, step: ScenarioStep, via: str) -> None:
    reading = step.reading
    values = values_from_reading(reading)
    images: dict[Block, BlockImage] = {}
    for block in BLOCKS:
        if via == "registers":
            data = encode_image(block, values[block])
            reads = [(r.address, registers_from_image(data, r.address - block.base, r.count)) for r in POLL_PLAN[block]]
            images[block] = image_from_registers(block, reads)
        else:
            images[block] = parse_frame(encode_frame(block, values[block]))
    state = to_state(decode(images[LIVE]), reading.state.measured_at_s)
    settings = to_settings(decode(images[SETTINGS]), reading.settings.measured_at_s)
    device = to_device(decode(images[INFO]))
    assert_close(state, _carried_state(reading.state, reading.settings.capacity_ah))
    assert_close(settings, _carried_settings(reading.settings))
    assert device.model == jk_modbus.SIMULATOR_DEVICE.model  # the scenario's is longer than the 16-byte field
    assert device.manufacture_date == reading.device.manufacture_date
    assert implausibility(PackReading("x", state, settings, device)) is None


def test_round_trip_keeps_alarms_and_missing_sensors() -> None:
    base = SCENARIOS["normal-charge"].step(10.0).reading
    alarms = frozenset(a for a, spec in ALARM_TABLE.items() if spec.pb_bit is not None)
    state = dataclasses.replace(
        base.state, alarms=alarms | {Alarm.LOW_CAPACITY}, battery_temperatures_c=(None, 21.5), mos_temperature_c=None
    )
    values = values_from_reading(dataclasses.replace(base, state=state))
    decoded = to_state(decode(parse_frame(encode_frame(LIVE, values[LIVE]))), 0.0)
    assert decoded.alarms == alarms  # LOW_CAPACITY has no JK-PB bit
    assert decoded.battery_temperatures_c == (None, 21.5)
    assert decoded.mos_temperature_c is None


# --- the read plan ------------------------------------------------------------------------------------------


def test_poll_plan_reads_at_most_64_words_and_covers_what_the_model_needs() -> None:
    polled = {LIVE: jk_modbus.LIVE_POLLED, SETTINGS: jk_modbus.SETTINGS_POLLED, INFO: jk_modbus.INFO_POLLED}
    for block, reads in POLL_PLAN.items():
        covered: set[int] = set()
        for read in reads:
            assert 1 <= read.count <= MAX_READ_WORDS
            assert (read.address - block.base) % 2 == 0
            covered |= set(range(read.address - block.base, read.address - block.base + 2 * read.count))
        for name in polled[block]:
            spec = block.by_name[name]
            assert set(range(spec.offset, spec.end)) <= covered, name
    assert POLL_PLAN[LIVE] == (Read(0x1200, 34), Read(0x128A, 58))
    assert len(POLL_PLAN[SETTINGS]) == 2


def test_poll_plan_never_asks_for_a_passcode() -> None:
    for block, reads in POLL_PLAN.items():
        for read in reads:
            start, end = read.address - block.base, read.address - block.base + 2 * read.count
            for spec in block.fields:
                if spec.kind is Kind.SECRET:
                    # The info serial number ends at 0x5A, so its word also holds the passcode's first byte,
                    # which the image zeroes; never more than that one byte.
                    overlap = max(0, min(end, spec.end) - max(start, spec.offset))
                    assert overlap <= 1, (spec.name, read)


@pytest.mark.parametrize("max_words", [1, 2, 7, 16, 40, 64])
def test_read_plan_chunks_every_field_of_a_block(max_words: int) -> None:
    for block in BLOCKS:
        names = [f.name for f in block.fields if f.kind is not Kind.SECRET and (f.size + 1) // 2 <= max_words]
        reads = read_plan(block, names, max_words=max_words)
        assert all(1 <= r.count <= max_words for r in reads)
        starts = [r.address for r in reads]
        assert starts == sorted(starts)
        assert all(a.address + 2 * a.count <= b.address for a, b in itertools.pairwise(reads))
        data = bytes(range(256)) * 2
        image = image_from_registers(
            block, [(r.address, registers_from_image(data, r.address - block.base, r.count)) for r in reads]
        )
        assert set(names) <= set(decode(image))


def test_read_plan_rejects_secrets_unknown_names_and_long_fields() -> None:
    with pytest.raises(ValueError, match="no readable field setup_passcode"):
        read_plan(INFO, ["setup_passcode"])
    with pytest.raises(ValueError, match="no readable field nope"):
        read_plan(LIVE, ["nope"])
    with pytest.raises(ValueError, match="longer than 16 words"):
        read_plan(LIVE, ["cell_voltages_v"], max_words=16)


# --- images and their errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reads", "message"),
    [
        ([(0x11FE, [1, 2])], "bad address: 2 registers from 0x11FE leave the live block 0x1200–0x13FF"),
        ([(0x13FF, [1])], "bad address: 1 registers from 0x13FF leave the live block 0x1200–0x13FF"),
        ([(0x1200, [])], "empty reply: no registers from 0x1200"),
        ([(0x1200, [0x10000])], "bad register: word 0 of the read at 0x1200 is not 16 bits"),
        ([(0x1200, [1, -1])], "bad register: word 1 of the read at 0x1200 is not 16 bits"),
    ],
)
def test_bad_register_reads_are_frame_errors(reads: list[tuple[int, list[int]]], message: str) -> None:
    with pytest.raises(FrameError) as caught:
        image_from_registers(LIVE, reads)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f[:299], "bad length: 299 bytes, a trigger frame has 300"),
        (lambda f: b"\x55\xaa\xeb\x91" + f[4:], "bad start: expected 55 AA EB 90, got 55 AA EB 91"),
        (lambda f: f[:-1] + bytes(((f[-1] + 1) % 256,)), "bad checksum: frame says 0x22, computed 0x21"),
        (lambda f: with_frame_sum(f[:4] + b"\x07" + f[5:]), "unknown frame type: 0x07"),
    ],
)
def test_bad_frames_are_frame_errors(change: Callable[[bytes], bytes], message: str) -> None:
    with pytest.raises(FrameError) as caught:
        parse_frame(change(FRAME_BY_TYPE[2].frame))
    assert str(caught.value) == message


def test_model_mapping_errors() -> None:
    with pytest.raises(FrameError, match=r"^no cells: the cell-present bitmap"):
        to_state({"cell_voltages_v": (3.3,) * 32, "cell_present_bitmap": 0}, 0.0)
    with pytest.raises(FrameError, match=r"^missing field: live block lacks pack_voltage_v \(0x1290\)$"):
        to_state({"cell_voltages_v": (3.3,) * 32, "cell_present_bitmap": 1}, 0.0)
    with pytest.raises(FrameError, match=r"^missing field: settings block lacks cell_ovp_v \(0x100C\)$"):
        to_settings({"cell_count": 16}, 0.0)


def test_encoding_refuses_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="out of range"):
        encode_image(LIVE, {"soc_pct": 256})
    with pytest.raises(ValueError, match="do not fit"):
        encode_image(INFO, {"model": "x" * 17})
    with pytest.raises(ValueError, match="has no field"):
        encode_image(LIVE, {"nope": 1})


def test_tables_are_sound() -> None:
    for block in BLOCKS:
        fields = sorted(block.fields, key=lambda f: f.offset)
        for a, b in itertools.pairwise(fields):
            assert a.end <= b.offset, (a.name, b.name)
        for spec in fields:
            assert spec.end <= jk_modbus.FRAME_DATA_LEN, spec.name  # every field also travels in a frame
    with pytest.raises(ValueError, match="overlap"):
        Block("bad", 0x1000, (jk_modbus.Field(0, Kind.U32, "a"), jk_modbus.Field(2, Kind.U16, "b")), 0, 9)
    with pytest.raises(ValueError, match="defined twice"):
        Block("bad", 0x1000, (jk_modbus.Field(0, Kind.U16, "a"), jk_modbus.Field(2, Kind.U16, "a")), 0, 9)


# --- the trigger exchange -----------------------------------------------------------------------------------


def test_trigger_requests_and_acks_are_the_documented_bytes() -> None:
    assert trigger_request(3, LIVE) == bytes.fromhex("03 10 16 20 00 01 02 00 00 CF 91")
    for frame in TRIGGER_FRAMES:
        block = jk_modbus.BLOCK_BY_FRAME_TYPE[frame.frame_type]
        assert trigger_ack(FRAMES_UNIT, block) == frame.ack
        request = trigger_request(FRAMES_UNIT, block)
        assert modbus_crc(request[:-2]) == request[-2:]
    assert jk_modbus.with_crc(bytes.fromhex("01 03 12 00 00 0A")) == bytes.fromhex("01 03 12 00 00 0A C0 B5")
    assert jk_modbus.crc16(b"123456789") == 0x4B37  # the CRC-16/MODBUS check value
    with pytest.raises(ValueError):
        trigger_request(0, LIVE)


def _reply(frame_type: int, unit: int = FRAMES_UNIT) -> bytes:
    captured = FRAME_BY_TYPE[frame_type]
    ack = captured.ack if unit == FRAMES_UNIT else trigger_ack(unit, jk_modbus.BLOCK_BY_FRAME_TYPE[frame_type])
    return captured.frame + b"\x00" + ack + b"\x00"


def test_scan_finds_frame_after_echo_and_noise() -> None:
    echo = trigger_request(FRAMES_UNIT, LIVE)
    for prefix in (b"", echo, b"\x00\xff\x55\xaa\xeb", echo + b"\x55\xaa\xeb\x90\x02"):
        image = scan_trigger_reply(prefix + _reply(2), FRAMES_UNIT, LIVE)
        assert image is not None and decode(image)["soc_pct"] == 55


def test_scan_waits_for_the_whole_reply() -> None:
    reply = _reply(2)
    for cut in (0, 4, 150, 300, 305):
        assert scan_trigger_reply(reply[:cut], FRAMES_UNIT, LIVE) is None
    assert scan_trigger_reply(reply[:309], FRAMES_UNIT, LIVE) is not None  # the last 00 is not needed


@pytest.mark.parametrize(
    ("buffer", "message"),
    [
        (b"", "no frame: 0 bytes without a 55 AA EB 90 frame"),
        (b"\x01\x02\x03", "no frame: 3 bytes without a 55 AA EB 90 frame"),
        (FRAME_BY_TYPE[2].frame[:150], "truncated: 150 of 300 frame bytes"),
        (FRAME_BY_TYPE[2].frame, "no acknowledgement: live frame without the FC16 reply naming its unit"),
    ],
)
def test_scan_final_says_what_is_missing(buffer: bytes, message: str) -> None:
    with pytest.raises(FrameError) as caught:
        scan_trigger_reply(buffer, FRAMES_UNIT, LIVE, final=True)
    assert str(caught.value) == message


def test_scan_rejects_bad_foreign_and_wrong_frames() -> None:
    bad = bytearray(_reply(2))
    bad[100] ^= 0xFF
    with pytest.raises(FrameError, match=r"^bad checksum"):
        scan_trigger_reply(bytes(bad), FRAMES_UNIT, LIVE)  # the ACK came: the reply is over
    assert scan_trigger_reply(bytes(bad[:300]), FRAMES_UNIT, LIVE) is None  # a good frame may still follow
    with pytest.raises(FrameError, match=r"^wrong unit: live frame acknowledged by unit 5, asked unit 3$"):
        scan_trigger_reply(_reply(2, unit=5), FRAMES_UNIT, LIVE)
    with pytest.raises(FrameError, match=r"^wrong frame type: asked for live \(0x02\), got 0x01$"):
        scan_trigger_reply(_reply(1), FRAMES_UNIT, LIVE, final=True)


# --- the request guard --------------------------------------------------------------------------------------


def test_only_reads_and_trigger_writes_are_permitted() -> None:
    for block in BLOCKS:
        assert is_permitted_request(trigger_request(7, block))
    assert is_permitted_request(jk_modbus.with_crc(bytes.fromhex("01 03 12 00 00 22")))
    forbidden = [
        "01 06 10 0C 0E 42",  # FC06: write cell OVP
        "01 10 10 0C 00 02 04 00 00 0E 42",  # FC16 to a setting
        "01 10 16 20 00 01 02 00 01",  # a trigger register, but a value other than 0
        "01 10 16 04 00 01 02 00 00",  # the shutdown command
        "01 10 16 20 00 02 04 00 00 00 00",  # two registers
        "01 05 00 00 FF 00",  # FC05 coil
        "01 04 12 00 00 01",  # FC04
    ]
    for text in forbidden:
        assert not is_permitted_request(jk_modbus.with_crc(bytes.fromhex(text))), text
    assert not is_permitted_request(trigger_request(1, LIVE)[:-1] + b"\x00")  # bad CRC
    assert not is_permitted_request(b"")


@pytest.mark.parametrize("unit", [0, 248, 255])
def test_no_request_to_the_broadcast_or_a_reserved_address(unit: int) -> None:
    # Modbus over Serial Line V1.02 §2.2: address 0 is the broadcast every unit obeys without answering,
    # 248-255 are reserved. The requests are built by hand: trigger_request itself refuses these units.
    trigger = f"{unit:02X} 10 16 20 00 01 02 00 00"  # the live-block trigger (0x1620, one word, 0)
    read = f"{unit:02X} 03 12 00 00 22"
    for text in (trigger, read):
        frame = jk_modbus.with_crc(bytes.fromhex(text))
        assert is_permitted_request(jk_modbus.with_crc(bytes.fromhex("01" + text[2:]))), text  # unit 1: fine
        assert not is_permitted_request(frame), text
