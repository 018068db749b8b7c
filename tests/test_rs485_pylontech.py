"""Pylontech ASCII: real frames decode to what they carry, hand-built golden answers, error codes, addresses,
modules, and fuzzing: nothing on the line crashes the responder or gets an answer that could pass for data."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rs485_fixtures import limits, reading

from gateway.errors import FrameError
from gateway.model import Alarm
from gateway.rs485.profile import load_rs485_profile
from gateway.rs485.pylontech_ascii import (
    PylontechResponder,
    ReturnCode,
    build_frame,
    build_request,
    decode_frame,
    frame_checksum,
    length_field,
    parse_frame,
)
from gateway.rs485.values import BatteryView, battery_view

DATA: Final = Path(__file__).parent / "data" / "pylontech_rs485_frames.json"
FRAMES: Final[dict[str, Any]] = json.loads(DATA.read_text(encoding="utf-8"))["frames"]
CAPTURES_0X47: Final[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "data" / "pylontech_0x47_captures.json").read_text(encoding="utf-8")
)["frames"]
SPEC: Final = load_rs485_profile("pylontech-rs485").pylontech
assert SPEC is not None


def response(name: str) -> bytes:
    return str(FRAMES[name]["response"]).encode("ascii")


def view(*readings: Any, comm_alarm: bool = False, **limit_overrides: Any) -> BatteryView:
    return battery_view(readings or (reading(),), limits(**limit_overrides), comm_alarm=comm_alarm, base_address=2)


def ask(cid2: int, info: bytes = b"", *, address: int = 2, battery: BatteryView | None = None) -> bytes | None:
    responder = PylontechResponder(SPEC, 2)
    return responder.respond(build_request(address, cid2, info), battery if battery is not None else view())


def answer_info(cid2: int, info: bytes = b"", **kwargs: Any) -> str:
    raw = ask(cid2, info, **kwargs)
    assert raw is not None
    frame = parse_frame(raw)
    assert (frame.version, frame.cid1, frame.cid2) == (0x20, 0x46, ReturnCode.OK)
    return frame.info.hex().upper()


# --- checksums ----------------------------------------------------------------------------------------------


def test_length_field() -> None:
    # LCHKSUM = -(sum of LENID's nibbles) mod 16: 4 → C, 18 = 0x012 → -(1+2) → D, 0 → 0, 0x07A → -(7+10) → F.
    assert length_field(0) == 0x0000
    assert length_field(4) == 0xC004
    assert length_field(18) == 0xD012
    assert length_field(122) == 0xF07A  # the US3000 capture's LENGTH


def test_frame_checksum() -> None:
    # "200246000000": 0x32+0x30+0x30+0x32+0x34+0x36+6×0x30 = 0x24E; -0x24E mod 65536 = 0xFDB2 (the 0x4F capture).
    assert frame_checksum(b"200246000000") == 0xFDB2


# --- real frames ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FRAMES))
def test_real_frames_pass_our_checks_and_rebuild_byte_for_byte(name: str) -> None:
    raw = response(name)
    frame = parse_frame(raw)
    assert build_frame(frame.version, frame.address, frame.cid1, frame.cid2, frame.info) == raw


def test_us3000_analog_values() -> None:
    out = decode_frame(response("analog_values_0x42_single_pack_us3000"), SPEC, request_cid2=0x42)
    assert (out["version"], out["address"], out["return_code"]) == (0x20, 2, 0)
    fields = out["fields"]
    assert fields["info_flag"] == 0x11
    assert fields["module_selector"] == 2  # one pack asked: its address
    (module,) = fields["modules"]
    # 0CC5 = 3269 mV, 0CC3 = 3267, 0CC4 = 3268, 0CC6 = 3270, 0CC7 = 3271.
    assert module["cell_voltages"] == (
        3.269, 3.267, 3.269, 3.268, 3.268, 3.270, 3.269, 3.268, 3.271, 3.269, 3.270, 3.270, 3.269, 3.270, 3.270,
    )  # fmt: skip
    # 0B37 = 2871 → (2871 − 2731) / 10 = 14.0 °C; 0B23 = 2851 → 12.0; 0B2D = 2861 → 13.0.
    assert module["temperatures"] == (14.0, 12.0, 12.0, 13.0, 13.0)
    assert module["current"] == -3.2  # FFE0 = −32 × 0.1 A
    assert module["voltage"] == 49.037  # BF8D = 49037 mV
    assert module["remaining_capacity_short"] == 65.535  # FFFF: saturated, the 3-byte fields follow
    assert module["user_defined_count"] == 4
    assert module["cycle_count"] == 27  # 001B
    assert module["remaining_capacity"] == 48.1  # 00BBE4 = 48100 mAh
    assert module["total_capacity"] == 74.0  # 012110 = 74000 mAh: a US3000


def test_three_module_stack() -> None:
    fields = decode_frame(response("analog_values_0x42_three_modules"), SPEC, request_cid2=0x42)["fields"]
    assert fields["module_selector"] == 3  # INFO FF: the module count
    modules = fields["modules"]
    assert len(modules) == 3
    first = modules[0]
    assert first["cell_voltages"][:3] == (3.303, 3.304, 3.302)  # 0CE7, 0CE8, 0CE6
    assert first["temperatures"] == (23.0, 22.0, 22.0, 22.0, 22.0)  # 0B91 = 2961, 0B87 = 2951
    assert (first["current"], first["voltage"]) == (-2.6, 49.545)  # FFE6, C189
    # "user defined" 02: 2-byte capacities only. 82DC = 33500 mAh, C350 = 50000 mAh (US2000), 001F = 31.
    assert (first["user_defined_count"], first["remaining_capacity_short"]) == (2, 33.5)
    assert (first["total_capacity_short"], first["cycle_count"]) == (50.0, 31)
    assert "remaining_capacity" not in first
    assert [m["current"] for m in modules] == [-2.6, -2.5, -2.7]  # FFE6, FFE7, FFE5
    assert [m["voltage"] for m in modules] == [49.545, 49.52, 49.504]  # C189, C170, C160


def test_management_info() -> None:
    fields = decode_frame(response("management_info_0x92"), SPEC, request_cid2=0x92)["fields"]
    assert fields["module_selector"] == 2
    assert fields["charge_voltage_limit"] == 28.4  # 6EF0 = 28400 mV (a 24 V pack)
    assert fields["discharge_voltage_limit"] == 23.2  # 5AA0 = 23200 mV
    assert fields["charge_current_limit"] == 55.5  # 022B = 555 × 0.1 A
    assert fields["discharge_current_limit"] == 55.5  # FDD5 = −555: sent negative, read back as a limit
    assert fields["status"] == {
        "charge_enable": True,  # C0: b7
        "discharge_enable": True,  # b6
        "force_charge": False,
        "full_charge_request": False,
    }


def test_protocol_version() -> None:
    out = decode_frame(response("protocol_version_0x4f"), SPEC, request_cid2=0x4F)
    assert (out["version"], out["info"], out["fields"]) == (0x20, "", {})


def test_decode_request_and_errors() -> None:
    out = decode_frame(build_request(2, 0x42, b"\xff"), SPEC)
    assert (out["kind"], out["command"], out["pack"]) == ("request", "analog_values", "all")
    error = decode_frame(build_frame(0x20, 2, 0x46, ReturnCode.CHECKSUM_ERROR), SPEC, request_cid2=0x42)
    assert (error["return_name"], "fields" in error) == ("checksum_error", False)
    with pytest.raises(FrameError) as caught:
        decode_frame(b"~2002464F0000FDB3\r", SPEC)
    assert caught.value.fault == "bad checksum"


# --- golden answers, built by hand ---------------------------------------------------------------------------
# The reference pack (tests/rs485_fixtures.py): cells 3.301 ... 3.315 V and 3.290 V, 52.900 V, −12.3 A,
# SOC 55 %, 280 Ah, 42 cycles, MOS 31.5 °C, sensors 24.0 / 25.5 °C, OVP 3.65 / UVPR 3.00 / UVP 2.80 V,
# charge 0…45 °C, discharge −20…60 °C; limits CVL 55.20 V, CCL 90.0 A, DCL 135.0 A, DVL 49.60 V.


def test_golden_protocol_version() -> None:
    assert ask(0x4F) == b"~200246000000FDB2\r"  # the same bytes as the real battery's answer


def test_golden_manufacturer_info() -> None:
    name = b"JK-BMS".hex().upper() + "00" * 4  # 10 bytes
    manufacturer = b"PYLON".hex().upper() + "00" * 15  # 20 bytes
    assert answer_info(0x51) == name + "0100" + manufacturer


def test_golden_analog_values() -> None:
    cells = "0CE5 0CE6 0CE7 0CE8 0CE9 0CEA 0CEB 0CEC 0CED 0CEE 0CEF 0CF0 0CF1 0CF2 0CF3 0CDA"
    expected = (
        "11"  # INFOFLAG
        "02"  # the pack's address
        "10"
        + cells.replace(" ", "")  # 16 cells, mV
        + "03"  # 3 temperatures: MOS first, then the sensors, 0.1 K
        "0BE6"  # 31.5 °C = 3046
        "0B9B"  # 24.0 °C = 2971
        "0BAA"  # 25.5 °C = 2986
        "FF85"  # −12.3 A = −123
        "CEA4"  # 52900 mV
        "FFFF"  # 154 Ah does not fit 2 bytes of mAh
        "04"  # the 3-byte capacities follow
        "FFFF"  # 280 Ah neither
        "002A"  # 42 cycles
        "025990"  # 154000 mAh
        "0445C0"  # 280000 mAh
    )
    assert answer_info(0x42, b"\x02") == expected
    assert answer_info(0x42) == expected  # INFO may be left out
    assert answer_info(0x42, b"\x02\x01") == expected  # and given in 2 bytes (pylontech 0.1.3 does)


def test_golden_alarm_info() -> None:
    expected = (
        "1102"
        "10" + "00" * 16  # 16 cells, all normal
        + "03" + "000000"  # 3 sensors, all normal
        "00" "00" "00"  # charge current, module voltage, discharge current: normal
        "00"  # status 1: no protection
        "0E"  # status 2: b3 module power in use, b2 discharge MOSFET on, b1 charge MOSFET on
        "40"  # status 3: b6 discharging
        "00" "00"  # status 4 and 5: no failed cell
    )  # fmt: skip
    assert answer_info(0x44, b"\x02") == expected


def test_golden_alarm_info_with_alarms() -> None:
    low = reading(
        cell_voltages_v=(2.79, *reading().state.cell_voltages_v[1:8], 2.75, *reading().state.cell_voltages_v[9:]),
        alarms=frozenset({Alarm.CELL_UNDER_VOLTAGE, Alarm.DISCHARGE_OVER_CURRENT}),
    )
    info = answer_info(0x44, b"\x02", battery=view(low))
    assert info[6:38] == "01" + "00" * 7 + "01" + "00" * 7  # cells 1 and 9 below UVP
    assert info[46:52] == "000002"  # discharge current above its limit
    assert info[52:54] == "12"  # status 1: b4 discharge over current, b1 cell under voltage
    assert info[-4:] == "0000"  # status 4 and 5: a cell below UVP is no failed cell (see the next test)


def test_golden_alarm_info_failed_cells() -> None:
    # V3.3 §3.5 p.19: status 4 b0-b7 = cells 1-8, status 5 b0-b7 = cells 9-16, "1: error": "cell voltage > 4.2V
    # (battery charge MOS off) or cell voltage < 1V (battery shut down by itself)", "supposed to be a failure".
    # Cell 2 at 4.25 V → status 4 b1; cell 10 at 0.90 V → status 5 b1. Cells 1 and 9 exactly at 4.2 and 1.0 V,
    # cell 3 at UVP (2.75 V): not beyond the document's limits, no error.
    cells = list(reading().state.cell_voltages_v)
    cells[0], cells[1], cells[2], cells[8], cells[9] = 4.20, 4.25, 2.75, 1.00, 0.90
    info = answer_info(0x44, b"\x02", battery=view(reading(cell_voltages_v=tuple(cells))))
    assert info[-4:] == "0202"


def test_golden_system_parameters() -> None:
    expected = (
        "11"  # INFOFLAG, as the real batteries send it (test_system_parameters_info_flag_as_real_batteries)
        "0E42"  # cell high voltage limit: OVP 3650 mV
        "0BB8"  # cell low voltage limit: UVPR 3000 mV
        "0AF0"  # cell under voltage limit: UVP 2800 mV
        "0C6D"  # charge high temperature: 45 °C = 3181
        "0AAB"  # charge low temperature: 0 °C = 2731
        "0384"  # charge current limit: 90.0 A
        "D7A0"  # module high voltage: CVL 55200 mV
        "C1C0"  # module low voltage: DVL 49600 mV
        "AF00"  # module under voltage: 16 × 2.8 V = 44800 mV
        "0D03"  # discharge high temperature: 60 °C = 3331
        "09E3"  # discharge low temperature: −20 °C = 2531
        "FABA"  # discharge current limit: −135.0 A
    )
    assert answer_info(0x47) == expected


@pytest.mark.parametrize("name", sorted(CAPTURES_0X47))
def test_system_parameters_info_flag_as_real_batteries(name: str) -> None:
    # A US5000 (python-pylontech #31) and a US2000C (#10) both answer 0x47 with INFOFLAG 0x11 (the first byte
    # of INFO), followed by the layout the profile sends; ours carries the same INFOFLAG.
    raw = str(CAPTURES_0X47[name]["response"]).encode("ascii")
    captured = decode_frame(raw, SPEC, request_cid2=0x47)["fields"]
    assert parse_frame(raw).info[0] == 0x11 == captured["info_flag"]
    assert captured["cell_high_voltage_limit"] == 3.65  # 0E42: the rest of the layout lines up
    assert answer_info(0x47)[:2] == "11"


def test_golden_management_info() -> None:
    # Address, CVL 55200 mV, DVL 49600 mV, CCL 900, DCL −1350 (0.1 A), status C0: charge and discharge enabled.
    assert answer_info(0x92, b"\x02") == "02D7A0C1C00384FABAC0"
    assert ask(0x92, b"\x02") == b"~20024600B01402D7A0C1C00384FABAC0F91A\r"


def test_golden_management_info_force_and_full_charge() -> None:
    # V3.3 §3.6 p.20-21: b7 charge enable, b6 discharge enable, b5 "charge immediately" (SOC 5~9 %), b4
    # "charge immediately" (SOC 9~13 %), b3 full charge request; "We suggest inverter to use both charge
    # immediately bit": force charge sets both b5 and b4.
    battery = view(discharge_enable=False, force_charge=True, full_charge_request=True)
    assert answer_info(0x92, b"\x02", battery=battery)[-2:] == "B8"  # b7, b5, b4, b3
    assert answer_info(0x92, b"\x02", battery=view(force_charge=True))[-2:] == "F0"  # b7, b6, b5, b4


def test_system_alarms_carry_no_cell_imbalance() -> None:
    # A cell imbalance is no protection: no alarm or protection bit of 0x62 (protection 2 b3 "system" included).
    imbalance = reading(alarms=frozenset({Alarm.CELL_VOLTAGE_DIFFERENCE}))
    assert answer_info(0x62, battery=view(imbalance)) == "00000000"
    internal = reading(alarms=frozenset({Alarm.INTERNAL_COMMUNICATION}))
    assert answer_info(0x62, battery=view(internal)) == "00000008"  # a real BMS fault still is one


def test_golden_serial_number() -> None:
    assert answer_info(0x93, b"\x02") == "02" + b"JK0123456789ABCD".hex().upper()


def test_golden_system_commands() -> None:
    assert answer_info(0x60) == (
        b"JK-BMS".hex().upper() + "00" * 4
        + b"PYLON".hex().upper() + "00" * 15
        + "0100"  # software version
        + "01"  # one module
        + b"JK0123456789ABCD".hex().upper()
    )  # fmt: skip
    system = answer_info(0x61)
    assert system[:18] == "CEA4FB3237002A002A"  # 52900 mV, −1230 × 10 mA, 55 %, 42 and 42 cycles
    assert system[18:22] == "6464"  # SOH 100 % (not carried by the JK: the default), average and lowest
    assert system[22:38] == "0CF3010F0CDA0110"  # highest cell 3315 mV: module 1 cell 15; lowest: cell 16
    assert answer_info(0x62) == "00000000"
    assert answer_info(0x63) == "D7A0C1C003840546C0"  # DCL positive here


# --- stale data ------------------------------------------------------------------------------------------------


def test_stale_view_stops_charge_and_discharge() -> None:
    from gateway.limits import failsafe_limits

    stale = battery_view((reading(),), failsafe_limits(limits(), 0.0, "stale"), comm_alarm=True, base_address=2)
    assert answer_info(0x92, b"\x02", battery=stale) == "02D7A0C1C00000000000"
    assert answer_info(0x63, battery=stale) == "D7A0C1C00000000000"
    assert answer_info(0x62, battery=stale)[:4] == "0008"  # alarm 2 b3: communication lost
    assert answer_info(0x47, battery=stale)[22:26] == "0000"  # charge current limit 0


# --- errors and addresses --------------------------------------------------------------------------------------


def _reframe(body: str) -> bytes:
    """``~body CHKSUM CR`` with a correct CHKSUM over ``body``."""
    return b"~" + body.encode() + b"%04X" % frame_checksum(body.encode()) + b"\r"


def _error_code(raw: bytes | None) -> int:
    assert raw is not None
    frame = parse_frame(raw)
    assert frame.info == b""  # an error answer carries no data
    return frame.cid2


def test_bad_checksum_gets_02() -> None:
    request = bytearray(build_request(2, 0x42, b"\x02"))
    request[-2] = ord("0") if request[-2] != ord("0") else ord("1")
    assert _error_code(PylontechResponder(SPEC, 2).respond(bytes(request), view())) == ReturnCode.CHECKSUM_ERROR


def test_bad_length_checksum_gets_03() -> None:
    raw = _reframe("20024642100202")  # LENID 2 needs LCHKSUM E, not 1
    assert _error_code(PylontechResponder(SPEC, 2).respond(raw, view())) == ReturnCode.LENGTH_CHECKSUM_ERROR


def test_unknown_command_gets_04() -> None:
    assert _error_code(ask(0x4D)) == ReturnCode.INVALID_CID2
    assert _error_code(ask(0x61, address=3, battery=view(reading(), reading()))) == ReturnCode.INVALID_CID2


def test_format_errors_get_05() -> None:
    assert _error_code(PylontechResponder(SPEC, 2).respond(_reframe("20024642C00402"), view())) == 5
    assert _error_code(ask(0x42, b"\x02\x01\x00")) == ReturnCode.COMMAND_FORMAT_ERROR
    assert _error_code(PylontechResponder(SPEC, 2).respond(_reframe("20024642E0020G"), view())) == 5


def test_lower_case_hex_is_accepted() -> None:
    raw = _reframe("20024642E00202".lower()).replace(b"E002", b"e002")
    raw = _reframe(raw[1:-5].decode())
    assert ask(0x42, b"\x02") == PylontechResponder(SPEC, 2).respond(raw, view())


@pytest.mark.parametrize("address", [1, 3, 0x12, 0xFF])
def test_other_addresses_are_silent(address: int) -> None:
    assert ask(0x42, b"\x02", address=address) is None
    request = bytearray(build_request(address, 0x42))
    request[-2] ^= 1  # even a bad checksum: not ours to complain about
    assert PylontechResponder(SPEC, 2).respond(bytes(request), view()) is None


def test_address_zero_only_for_version_and_manufacturer() -> None:
    assert parse_frame(ask(0x4F, address=0) or b"").address == 0
    assert parse_frame(ask(0x51, address=0) or b"").cid2 == ReturnCode.OK
    assert ask(0x42, address=0) is None
    assert ask(0x92, b"\x02", address=0) is None


def test_other_device_types_are_silent() -> None:
    assert PylontechResponder(SPEC, 2).respond(build_frame(0x20, 2, 0x4A, 0x42, b"\x02"), view()) is None


def test_silent_view_answers_nothing() -> None:
    assert PylontechResponder(SPEC, 2).respond(build_request(2, 0x4F), None) is None


# --- modules ---------------------------------------------------------------------------------------------------


def _stack() -> BatteryView:
    second = reading(
        current_a=-10.0, soc_pct=53.0, cell_voltages_v=tuple(v - 0.01 for v in reading().state.cell_voltages_v)
    )
    return view(reading(), second)


def test_every_pack_answers_on_its_own_address() -> None:
    stack = _stack()
    first = decode_frame(ask(0x42, b"\x02", battery=stack) or b"", SPEC, request_cid2=0x42)["fields"]
    second = decode_frame(ask(0x42, b"\x03", address=3, battery=stack) or b"", SPEC, request_cid2=0x42)["fields"]
    assert (first["module_selector"], first["modules"][0]["current"]) == (2, -12.3)
    assert (second["module_selector"], second["modules"][0]["current"]) == (3, -10.0)
    assert second["modules"][0]["cell_voltages"][0] == 3.291
    assert ask(0x42, address=4, battery=stack) is None  # no third pack


def test_info_ff_answers_with_every_module() -> None:
    fields = decode_frame(ask(0x42, b"\xff", battery=_stack()) or b"", SPEC, request_cid2=0x42)["fields"]
    assert fields["module_selector"] == 2  # the module count
    assert [m["current"] for m in fields["modules"]] == [-12.3, -10.0]
    alarms = decode_frame(ask(0x44, b"\xff", battery=_stack()) or b"", SPEC, request_cid2=0x44)["fields"]
    assert len(alarms["modules"]) == 2


def test_each_module_gets_its_share_of_the_limits() -> None:
    share = decode_frame(ask(0x92, b"\x03", address=3, battery=_stack()) or b"", SPEC, request_cid2=0x92)["fields"]
    assert (share["charge_current_limit"], share["discharge_current_limit"]) == (45.0, 67.5)
    system = decode_frame(ask(0x63, battery=_stack()) or b"", SPEC, request_cid2=0x63)["fields"]
    assert (system["charge_current_limit"], system["discharge_current_limit"]) == (90.0, 135.0)


# --- fuzz ------------------------------------------------------------------------------------------------------

_FUZZ: Final = settings(
    max_examples=int(os.environ.get("BMS_FUZZ_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
_RESPONDER: Final = PylontechResponder(SPEC, 2)
_VIEW: Final = view()
_VALID: Final = [build_request(2, cid2, info) for cid2, info in ((0x42, b"\x02"), (0x92, b"\x02"), (0x4F, b""))]


def _check_reply(raw: bytes) -> None:
    """Never an exception; an answer carrying data only to a request that passes every check."""
    reply = _RESPONDER.respond(raw, _VIEW)
    if reply is None:
        return
    frame = parse_frame(reply)  # whatever we send is a valid frame
    try:
        request = parse_frame(raw)
    except FrameError:
        assert frame.cid2 != ReturnCode.OK and frame.info == b"", (raw, reply)
        return
    if frame.cid2 == ReturnCode.OK:
        assert request.cid1 == 0x46 and request.address in (0, 2) and request.cid2 in SPEC.commands


@_FUZZ
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(raw: bytes) -> None:
    _check_reply(raw)


@_FUZZ
@given(st.sampled_from(_VALID), st.data())
def test_fuzz_corrupted_and_truncated_requests(valid: bytes, data: st.DataObject) -> None:
    raw = bytearray(valid)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(raw) - 1))
        action = data.draw(st.sampled_from(["flip", "replace", "drop", "insert"]))
        if action == "flip":
            raw[at] ^= 1 << data.draw(st.integers(0, 7))
        elif action == "replace":
            raw[at] = data.draw(st.sampled_from(b"0123456789ABCDEFabcdef~\r\x00\xff"))
        elif action == "drop" and len(raw) > 1:
            del raw[at]
        else:
            raw.insert(at, data.draw(st.integers(0, 255)))
    _check_reply(bytes(raw))
    _check_reply(bytes(raw[: data.draw(st.integers(0, len(raw)))]))


@_FUZZ
@given(
    st.integers(0, 0xFF),
    st.integers(0, 0xFF),
    st.integers(0, 0xFF),
    st.integers(0, 0xFF),
    st.binary(max_size=40),
)
def test_fuzz_well_formed_foreign_frames(version: int, address: int, cid1: int, cid2: int, info: bytes) -> None:
    _check_reply(build_frame(version, address, cid1, cid2, info))
