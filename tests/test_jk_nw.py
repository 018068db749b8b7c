"""The JK NW codec against the five real replies, plus its edge rules and errors.

The frames and their expected values live in ``tests/data/jk_nw_frames.json`` (see ``jk_frames.py``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest
from jk_frames import (
    REPLIES,
    REPLY_BY_ID,
    REQUESTS,
    Reply,
    payload_of,
    sum16,
    with_current_raw,
    with_temperatures,
    without_protocol_version,
    wrap,
)

from gateway.bms import jk_nw
from gateway.bms.jk_nw_codec import (
    JkNwReply,
    current_from_raw,
    current_to_raw,
    decode_reply,
    encode_payload,
    encode_reply,
)
from gateway.bms.jk_nw_frame import Source, build_frame, read_all_request
from gateway.bms.jk_nw_model import to_reading
from gateway.bms.jk_nw_tags import FieldValue
from gateway.errors import FrameError
from gateway.model import Alarm, Chemistry, PackReading
from gateway.secret import Secret

PASSWORD = "123456"
REPLY_IDS = [reply.id for reply in REPLIES]


def _decoded(reply: Reply) -> JkNwReply:
    return decode_reply(reply.frame)


def _with_fields(reply: JkNwReply, **changes: FieldValue) -> JkNwReply:
    """A copy of ``reply`` with some fields replaced (wire order kept)."""
    fields = dict(reply.fields)
    for name in changes:
        assert name in fields, name
    fields.update(changes)
    return JkNwReply(
        fields=MappingProxyType(fields),
        command=reply.command,
        source=reply.source,
        frame_type=reply.frame_type,
        terminal=reply.terminal,
        record_number=reply.record_number,
    )


# --- the expected values of the real replies ----------------------------------------------------------------

# JSON key -> codec field name, for keys whose value must equal the decoded field as is.
SAME_VALUE: dict[str, str] = {
    "cell_voltages_v": "cell_voltages_v",
    "mosfet_temp_c": "mos_temperature_c",
    "temp1_c": "temperature_1_c",
    "temp2_c": "temperature_2_c",
    "total_voltage_v": "pack_voltage_v",
    "current_a": "current_a",
    "soc_pct": "soc_pct",
    "temp_sensor_count": "temperature_sensor_count",
    "cycles": "cycle_count",
    "total_cycle_capacity_raw": "cycle_capacity_ah",
    "cell_count_8a": "cell_count",
    "warnings_bitmask": "warnings",
    "status_bitmask": "status",
    "total_ovp_v": "pack_ovp_v",
    "total_uvp_v": "pack_uvp_v",
    "cell_ovp_v": "cell_ovp_v",
    "cell_ovpr_v": "cell_ovpr_v",
    "cell_ovp_delay_s": "cell_ovp_delay_s",
    "cell_uvp_v": "cell_uvp_v",
    "cell_uvpr_v": "cell_uvpr_v",
    "cell_uvp_delay_s": "cell_uvp_delay_s",
    "cell_diff_protect_v": "cell_delta_protect_v",
    "discharge_ocp_a": "max_discharge_current_a",
    "discharge_ocp_delay_s": "discharge_ocp_delay_s",
    "charge_ocp_a": "max_charge_current_a",
    "charge_ocp_delay_s": "charge_ocp_delay_s",
    "balance_start_v": "balance_start_v",
    "balance_trigger_delta_v": "balance_trigger_v",
    "balance_switch": "balancer_switch",
    "mos_otp_c": "mos_otp_c",
    "mos_otpr_c": "mos_otpr_c",
    "box_otp_c": "box_otp_c",
    "box_otpr_c": "box_otpr_c",
    "temp_diff_protect_c": "temperature_delta_protect_c",
    "charge_otp_c": "charge_otp_c",
    "discharge_otp_c": "discharge_otp_c",
    "charge_utp_c": "charge_utp_c",
    "charge_utpr_c": "charge_utpr_c",
    "discharge_utp_c": "discharge_utp_c",
    "discharge_utpr_c": "discharge_utpr_c",
    "cell_count_setting_a9": "cell_count_setting",
    "capacity_setting_ah": "capacity_ah",
    "charge_mos_switch": "charge_mos_switch",
    "discharge_mos_switch": "discharge_mos_switch",
    "current_calibration_ma": "current_calibration_ma",
    "board_address": "board_address",
    "battery_type": "battery_type",
    "sleep_wait_s": "sleep_wait_s",
    "low_soc_alarm_pct": "low_soc_alarm_pct",
    "dedicated_charger": "dedicated_charger_switch",
    "device_id": "device_id",
    "manufacture_date": "manufacture_date",
    "runtime_minutes": "runtime_min",
    "software_version": "software_version",
    "start_current_cal": "start_current_calibration",
    "actual_capacity_ah": "actual_capacity_ah",
    "manufacturer": "manufacturer",
    "protocol_version": "protocol_version",
}


def _check_cell_count(decoded: JkNwReply, expected: Any) -> None:
    cells = decoded["cell_voltages_v"]
    assert isinstance(cells, tuple)
    assert len(cells) == expected


def _check_current_raw(decoded: JkNwReply, expected: Any) -> None:
    version = decoded.get_number("protocol_version")
    current = decoded.get_number("current_a")
    assert isinstance(version, int)
    assert current is not None
    assert current_to_raw(current, version) == expected
    assert current_from_raw(expected, version) == current


def _check_password(decoded: JkNwReply, expected: Any) -> None:
    password = decoded["password"]
    assert isinstance(password, Secret)
    assert password.reveal() == expected


# JSON key -> a check, for keys that are not one decoded field compared as is.
SPECIAL: dict[str, Callable[[JkNwReply, Any], None]] = {
    "cell_count_in_79": _check_cell_count,
    "current_raw": _check_current_raw,
    "password": _check_password,
}
# Codec field names that SPECIAL checks.
SPECIAL_FIELDS = {"password"}


def test_mapping_table_covers_every_expected_key() -> None:
    assert not set(SAME_VALUE) & set(SPECIAL)
    for reply in REPLIES:
        unmapped = set(reply.expected) - set(SAME_VALUE) - set(SPECIAL)
        assert not unmapped, f"frame {reply.id}: expected keys with no check: {sorted(unmapped)}"


def test_mapping_table_checks_every_decoded_field() -> None:
    """The reverse direction: no field the codec decodes goes unchecked by the JSON."""
    checked = set(SAME_VALUE.values()) | SPECIAL_FIELDS
    for reply in REPLIES:
        assert set(_decoded(reply).fields) == checked, reply.id


@pytest.mark.parametrize("reply", REPLIES, ids=REPLY_IDS)
def test_real_reply_decodes_to_every_expected_value(reply: Reply) -> None:
    decoded = _decoded(reply)
    for key, expected in reply.expected.items():
        if key in SPECIAL:
            SPECIAL[key](decoded, expected)
            continue
        value = decoded[SAME_VALUE[key]]
        if isinstance(expected, list):
            expected = tuple(expected)
        assert value == expected, f"frame {reply.id}: {key} -> {SAME_VALUE[key]} = {value!r}, want {expected!r}"
        assert not isinstance(value, Secret)


def test_reply_header_fields() -> None:
    for reply in REPLIES:
        decoded = _decoded(reply)
        assert decoded.source == Source.BMS
        assert decoded.frame_type == jk_nw.FrameType.REPLY
        assert decoded.terminal == 0
        assert decoded.record_number == 0
    # Frame E answers a "read register 0x00" request (command 0x03) and echoes that command.
    assert [_decoded(r).command for r in REPLIES] == [6, 6, 6, 6, 3]


# --- envelope: checksums, requests, round trip --------------------------------------------------------------


@pytest.mark.parametrize("frame", [r.frame for r in REQUESTS] + [r.frame for r in REPLIES])
def test_real_frame_envelope_is_consistent(frame: bytes) -> None:
    assert frame[:2] == b"\x4e\x57"
    assert int.from_bytes(frame[2:4], "big") == len(frame) - 2
    assert frame[-5] == 0x68
    assert frame[-4:-2] == b"\x00\x00"
    assert sum(frame[:-4]) & 0xFFFF == int.from_bytes(frame[-2:], "big")
    assert jk_nw.checksum(frame[:-4]) == int.from_bytes(frame[-2:], "big")


def test_request_checksum_matches_the_value_the_source_states() -> None:
    stated = REQUESTS[0].expected["checksum"]
    match = re.match(r"0x([0-9A-Fa-f]{4})\b", stated)
    assert match, stated
    assert int(match.group(1), 16) == int.from_bytes(REQUESTS[0].frame[-2:], "big")


def test_read_all_requests_match_the_captures() -> None:
    pc, gps = REQUESTS
    assert "0x03 (PC)" in pc.expected["kind"]
    assert "0x02 (GPS)" in gps.expected["kind"]
    assert read_all_request() == pc.frame
    assert read_all_request(Source.PC) == pc.frame
    assert read_all_request(Source.GPS) == gps.frame


def test_request_is_not_a_reply() -> None:
    envelope = jk_nw.parse_envelope(read_all_request())
    assert envelope.command == jk_nw.Command.READ_ALL
    assert envelope.frame_type == jk_nw.FrameType.REQUEST
    assert envelope.payload == b"\x00"
    with pytest.raises(FrameError, match="not a reply") as info:
        decode_reply(read_all_request())
    assert info.value.fault == "not a reply"


@pytest.mark.parametrize("reply", REPLIES, ids=REPLY_IDS)
def test_encode_of_decode_gives_the_frame_back(reply: Reply) -> None:
    assert encode_reply(_decoded(reply)) == reply.frame


def test_build_frame_matches_independent_wrapping() -> None:
    for reply in REPLIES:
        payload = payload_of(reply.frame)
        assert build_frame(reply.frame[8], 0, 1, payload) == reply.frame
        assert wrap(payload, header_from=reply.frame) == reply.frame


# --- current ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "current_a"),
    [(0x87D0, 20.0), (0x07D0, -20.0), (0x80D0, 2.08), (0x0045, -0.69), (0x81C5, 4.53), (0x0000, 0.0)],
)
def test_current_protocol_version_1(raw: int, current_a: float) -> None:
    assert current_from_raw(raw, 1) == current_a
    assert current_to_raw(current_a, 1) == raw


@pytest.mark.parametrize(("raw", "current_a"), [(11000, -10.0), (9500, 5.0), (10000, 0.0), (10069, -0.69)])
def test_current_protocol_version_0(raw: int, current_a: float) -> None:
    assert current_from_raw(raw, 0) == current_a
    assert current_to_raw(current_a, 0) == raw


def test_current_direction_bit_with_zero_magnitude_reads_zero() -> None:
    assert current_from_raw(0x8000, 1) == 0.0


@pytest.mark.parametrize("reply", REPLIES, ids=REPLY_IDS)
def test_reply_reencoded_as_protocol_version_0_keeps_its_current(reply: Reply) -> None:
    decoded = _decoded(reply)
    current = decoded["current_a"]
    assert isinstance(current, float)
    frame = encode_reply(_with_fields(decoded, protocol_version=0))
    assert frame[-10:-9] == b"\x00", "tag 0xC0 is last: its byte is just before the trailer"
    raw = current_to_raw(current, 0)
    assert 10000 - raw == round(current * 100)
    assert bytes((0x84, *raw.to_bytes(2, "big"))) in frame
    again = decode_reply(frame)
    assert again["protocol_version"] == 0
    assert again["current_a"] == current


def test_reply_without_tag_c0_reads_the_current_as_version_0() -> None:
    # The vendor table: "0xC0 … Default value 0x00" (syssi docs/protocol-design-uart-ttl-gps-port.md, row 0xC0);
    # version 0 reads the current as (10000 − raw) × 0.01 A, e.g. 11000 → −10 A, 9500 → +5 A (row 0x84).
    for raw, current_a in ((10000, 0.0), (9500, 5.0), (11000, -10.0)):
        frame = without_protocol_version(with_current_raw(REPLY_BY_ID["B"].frame, raw))
        reply = decode_reply(frame)
        assert "protocol_version" not in reply.fields
        assert not reply.protocol_version_stated
        assert reply.protocol_version == 0
        assert reply["current_a"] == current_a


def test_a_reply_with_tag_c0_says_so() -> None:
    reply = _decoded(REPLY_BY_ID["B"])
    assert reply.protocol_version_stated
    assert reply.protocol_version == 1


# --- temperatures -------------------------------------------------------------------------------------------


# Decoding as the sources have it: the vendor table says "101 is −1 (100 benchmark)" (syssi/esphome-jk-bms
# docs/protocol-design-uart-ttl-gps-port.md, row 0x80), and real BMSs send 100 at about 0 °C
# (Louisvdw/dbus-serialbattery #354: the JK app shows "−0 °C" where raw 100 was read as 100 °C; #339: 0x64 is
# not 100 °C; syssi/esphome-jk-bms #685 "below 0 it became 100"). So 100 and up are at or below freezing.
@pytest.mark.parametrize(
    ("raw", "celsius"),
    [(0, 0), (1, 1), (29, 29), (99, 99), (100, 0), (101, -1), (120, -20), (140, -40)],
)
def test_temperature_decodes_as_the_vendor_table_and_field_reports_say(raw: int, celsius: int) -> None:
    wire = bytes((0x80, *raw.to_bytes(2, "big")))
    assert decode_reply(build_frame(6, 0, 1, wire))["mos_temperature_c"] == celsius


@pytest.mark.parametrize("reply", REPLIES, ids=REPLY_IDS)
def test_real_reply_at_raw_100_reads_0_c_on_every_sensor(reply: Reply) -> None:
    # A real reply whose three temperature fields are patched by position to 100: a pack at the freezing point.
    state = to_reading(decode_reply(with_temperatures(reply.frame, 100)), 1.0, "p").state
    assert state.mos_temperature_c == 0.0
    assert all(t in (0.0, None) for t in state.battery_temperatures_c)
    assert 0.0 in state.battery_temperatures_c


# Encoding (the simulator's side) puts out what a real BMS would: 0 °C as 100, as in the reports above.
@pytest.mark.parametrize(("celsius", "raw"), [(99, 99), (29, 29), (1, 1), (0, 100), (-1, 101), (-40, 140)])
def test_temperature_encodes_as_a_real_bms_sends_it(celsius: int, raw: int) -> None:
    wire = bytes((0x80, *raw.to_bytes(2, "big")))
    assert encode_payload({"mos_temperature_c": celsius}) == wire
    # ... and a whole reply carries them in the place of tag 0x80 (right after the cell block).
    base = _decoded(REPLY_BY_ID["A"])
    frame = encode_reply(_with_fields(base, mos_temperature_c=celsius, temperature_2_c=celsius))
    cells_end = 11 + 2 + frame[12]
    assert frame[cells_end : cells_end + 3] == wire
    assert frame[cells_end + 6 : cells_end + 9] == bytes((0x82, *raw.to_bytes(2, "big")))
    decoded = decode_reply(frame)
    assert decoded["mos_temperature_c"] == celsius
    assert decoded["temperature_2_c"] == celsius


def test_temperature_above_99_c_cannot_be_encoded() -> None:
    # Raw 100 means 0 °C, so +100 °C has no code: refuse rather than send the freezing point.
    with pytest.raises(ValueError, match="99"):
        encode_payload({"mos_temperature_c": 100})


def test_protection_temperatures_are_plain_and_signed() -> None:
    # 0x9E..0xA4 carry plain °C (no offset rule); 0xA5..0xA8 are signed int16.
    decoded = decode_reply(build_frame(6, 0, 1, b"\x9e\x00\x65\xa5\xff\xec\xa8\x00\x05"))
    assert decoded["mos_otp_c"] == 101
    assert decoded["charge_utp_c"] == -20
    assert decoded["discharge_utpr_c"] == 5


# --- errors -------------------------------------------------------------------------------------------------


def _frame_a() -> bytes:
    return REPLY_BY_ID["A"].frame


def _reseal(frame: bytes | bytearray) -> bytes:
    """``frame`` with its checksum recomputed, everything else unchanged."""
    body = bytes(frame[:-4])
    return body + b"\x00\x00" + sum16(body).to_bytes(2, "big")


def _bad_start() -> bytes:
    return b"\x4e\x58" + _frame_a()[2:]


def _length_field_too_large() -> bytes:
    frame = bytearray(_frame_a())
    frame[2:4] = b"\xff\xff"
    return bytes(frame)


def _length_field_too_small() -> bytes:
    frame = bytearray(_frame_a())
    frame[2:4] = (10).to_bytes(2, "big")
    return bytes(frame)


def _longer_than_length_field() -> bytes:
    return _frame_a() + b"\x00"


def _truncated() -> bytes:
    return _frame_a()[:-1]


def _header_only() -> bytes:
    return _frame_a()[:3]


def _bad_end_marker() -> bytes:
    frame = bytearray(_frame_a())
    frame[-5] = 0x69
    return _reseal(frame)


def _bad_checksum() -> bytes:
    frame = bytearray(_frame_a())
    frame[-1] ^= 0x01
    return bytes(frame)


def _bad_value_byte_checksum() -> bytes:
    frame = bytearray(_frame_a())
    frame[20] ^= 0x10  # inside the cell block; the checksum no longer matches
    return bytes(frame)


def _not_a_reply() -> bytes:
    return wrap(payload_of(_frame_a()), frame_type=0x00)


def _upload_frame() -> bytes:
    return wrap(payload_of(_frame_a()), frame_type=0x02)


@pytest.mark.parametrize(
    ("make", "fault"),
    [
        (_bad_start, "bad start"),
        (_length_field_too_large, "bad length"),
        (_length_field_too_small, "bad length"),
        (_longer_than_length_field, "bad length"),
        (_truncated, "truncated"),
        (_header_only, "truncated"),
        (_bad_end_marker, "bad end marker"),
        (_bad_checksum, "bad checksum"),
        (_bad_value_byte_checksum, "bad checksum"),
        (_not_a_reply, "not a reply"),
        (_upload_frame, "not a reply"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
def test_typed_errors(make: Callable[[], bytes], fault: str) -> None:
    frame = make()
    with pytest.raises(FrameError) as info:
        decode_reply(frame)
    assert info.value.fault == fault
    assert fault in str(info.value)


def test_unknown_tag_names_its_offset() -> None:
    payload = payload_of(_frame_a())
    at = 2 + payload[1] + 3  # after the cell block and the 3-byte field of tag 0x80
    assert payload[at] == 0x81
    bad = payload[:at] + b"\x88\x00\x00" + payload[at:]
    frame = build_frame(6, 0, 1, bad)
    assert sum16(frame[:-4]) == int.from_bytes(frame[-2:], "big")  # so the envelope is not the fault
    with pytest.raises(FrameError, match=r"unknown tag: 0x88 at offset \d+") as info:
        decode_reply(frame)
    assert info.value.fault == "unknown tag"
    found = re.search(r"offset (\d+)", str(info.value))
    assert found is not None
    offset = int(found.group(1))
    assert offset == 11 + at
    assert frame[offset] == 0x88


@pytest.mark.parametrize(
    ("payload", "fault"),
    [
        (b"\x79", "truncated"),
        (b"\x79\x06\x01\x0c\x80", "truncated"),
        (b"\x79\x04\x01\x0c\x80\x02", "bad cell block"),
        (b"\x79\x06\x01\x0c\x80\x01\x0c\x80", "bad cell number"),
        (b"\x79\x03\x02\x0c\x80", "bad cell number"),
        (b"\x83\x14", "truncated"),
        (b"\x85\x10\x85\x11", "duplicate tag"),
        (b"\x79\x03\x01\x0c\xe4\x79\x03\x01\x0c\xe4", "duplicate tag"),
        (b"\x84\x00\x10\xc0\x02", "unsupported protocol version"),
    ],
)
def test_malformed_fields(payload: bytes, fault: str) -> None:
    with pytest.raises(FrameError) as info:
        decode_reply(build_frame(6, 0, 1, payload))
    assert info.value.fault == fault


def test_to_reading_needs_the_live_fields() -> None:
    only_cells = decode_reply(build_frame(6, 0, 1, b"\x79\x03\x01\x0c\x80"))
    with pytest.raises(FrameError, match="missing field"):
        to_reading(only_cells, 1.0, "p")
    no_cells = decode_reply(build_frame(6, 0, 1, b"\x85\x10"))
    with pytest.raises(FrameError, match="missing field"):
        to_reading(no_cells, 1.0, "p")


# --- to the domain model ------------------------------------------------------------------------------------


def _reading(reply_id: str, measured_at_s: float = 123.5) -> PackReading:
    return to_reading(_decoded(REPLY_BY_ID[reply_id]), measured_at_s, f"jk-{reply_id}")


def test_to_reading_frame_a() -> None:
    reading = _reading("A")
    state, settings, device = reading.state, reading.settings, reading.device
    assert reading.pack_id == "jk-A"
    assert reading.measured_at_s == 123.5
    assert settings.measured_at_s == 123.5
    assert state.cell_count == 14
    assert state.cell_voltages_v == tuple(REPLY_BY_ID["A"].expected["cell_voltages_v"])
    assert state.pack_voltage_v == 53.59
    assert state.current_a == 2.08
    assert state.soc_pct == 15.0
    assert state.cycle_count == 4
    assert state.cycle_capacity_ah == 0.0
    assert state.mos_temperature_c == 29.0
    assert state.battery_temperatures_c == (30.0, 28.0)
    # status 0x07: charge MOS, discharge MOS and balancer all on
    assert state.charge_mos_on
    assert state.discharge_mos_on
    assert state.balancer_on
    assert state.alarms == frozenset()
    assert state.runtime_s == 57856 * 60
    assert settings.cell_count == 14
    assert settings.capacity_ah == 14.0
    assert settings.battery_type is Chemistry.LI_ION
    assert (settings.cell_ovp_v, settings.cell_ovpr_v) == (4.05, 4.0)
    assert (settings.cell_uvp_v, settings.cell_uvpr_v) == (3.05, 3.1)
    assert (settings.max_charge_current_a, settings.max_discharge_current_a) == (5.0, 7.0)
    assert (settings.pack_ovp_v, settings.pack_uvp_v) == (56.7, 42.7)
    assert (settings.cell_ovp_delay_s, settings.cell_uvp_delay_s) == (5.0, 5.0)
    assert settings.cell_delta_protect_v == 0.3
    assert (settings.charge_ocp_delay_s, settings.discharge_ocp_delay_s) == (5.0, 3.0)
    assert (settings.balance_start_v, settings.balance_trigger_v) == (3.3, 0.008)
    assert settings.balancer_enabled is True
    assert (settings.charge_otp_c, settings.discharge_otp_c) == (70.0, 70.0)
    assert (settings.charge_utp_c, settings.charge_utpr_c) == (-20.0, -10.0)
    assert (settings.discharge_utp_c, settings.discharge_utpr_c) == (-20.0, -10.0)
    assert (settings.mos_otp_c, settings.mos_otpr_c) == (90.0, 70.0)
    assert (settings.box_otp_c, settings.box_otpr_c) == (100.0, 100.0)
    assert settings.charge_mos_switch is True
    assert settings.discharge_mos_switch is True
    assert device.model == "BT3072020120000200521001"
    assert device.software_version == "H6.X__S6.1.3S__"
    assert device.manufacture_date == "2101"


def test_to_reading_frame_c_discharging() -> None:
    state = _reading("C").state
    assert state.current_a == -0.69
    assert state.power_w == round(51.21 * -0.69, 2)
    assert state.cell_count == 16
    # status 0x03: both MOSFETs on, balancer idle
    assert (state.charge_mos_on, state.discharge_mos_on, state.balancer_on) == (True, True, False)
    assert state.battery_temperatures_c == (16.0, 16.0)
    assert state.cycle_capacity_ah == 1280.0


def test_to_reading_frame_d_keeps_dead_cells_in_their_slots() -> None:
    reading = _reading("D")
    state = reading.state
    assert state.cell_count == 13
    assert state.cell_voltages_v[:3] == (0.0, 0.0, 4.148)
    assert state.min_cell_v == 0.0
    # status 0x08 is only the "battery dropped" flag: no MOSFET on, balancer idle
    assert (state.charge_mos_on, state.discharge_mos_on, state.balancer_on) == (False, False, False)
    assert reading.settings.cell_count == 13
    assert reading.settings.charge_mos_switch is False


@pytest.mark.parametrize("reply", REPLIES, ids=REPLY_IDS)
def test_to_reading_status_bits_and_json(reply: Reply) -> None:
    reading = to_reading(_decoded(reply), 5.0, "p")
    status = reply.expected["status_bitmask"]
    assert reading.state.charge_mos_on == bool(status & 1)
    assert reading.state.discharge_mos_on == bool(status & 2)
    assert reading.state.balancer_on == bool(status & 4)
    assert reading.state.cell_voltages_v == tuple(reply.expected["cell_voltages_v"])
    assert reading.state.current_a == reply.expected["current_a"]
    out = reading.to_json()
    json.dumps(out)
    assert out["state"]["cell_count"] == reply.expected["cell_count_8a"]
    assert out["settings"]["battery_type"] == "li_ion"


def test_warning_bits_become_alarms() -> None:
    base = _decoded(REPLY_BY_ID["A"])
    warnings = 1 << 0 | 1 << 10 | 1 << 11 | 1 << 13 | 1 << 15
    frame = encode_reply(_with_fields(base, warnings=warnings))
    state = to_reading(decode_reply(frame), 1.0, "p").state
    assert state.alarms == {
        Alarm.LOW_CAPACITY,
        Alarm.CELL_OVER_VOLTAGE,
        Alarm.CELL_UNDER_VOLTAGE,
        Alarm.PROTECTION_309_B,
    }


def test_unfitted_temperature_sensor_is_none() -> None:
    base = _decoded(REPLY_BY_ID["A"])
    reply = decode_reply(encode_reply(_with_fields(base, temperature_sensor_count=1)))
    assert to_reading(reply, 1.0, "p").state.battery_temperatures_c == (30.0, None)


# --- password redaction -------------------------------------------------------------------------------------


@pytest.mark.parametrize("reply", REPLIES, ids=REPLY_IDS)
def test_password_never_shows(reply: Reply) -> None:
    decoded = _decoded(reply)
    password = decoded["password"]
    assert isinstance(password, Secret)
    assert password.reveal() == PASSWORD
    texts = [str(decoded), repr(decoded), f"{decoded}", f"{decoded!r}", str(decoded.fields)]
    for name, value in decoded.fields.items():
        texts += [str(value), repr(value), f"{value}", f"{value!r}", f"{name}={value}"]
    for text in texts:
        assert PASSWORD not in text
    reading = to_reading(decoded, 1.0, "p")
    for text in (str(reading), repr(reading), f"{reading}", json.dumps(reading.to_json())):
        assert PASSWORD not in text
