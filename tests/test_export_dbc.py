"""``bms-gateway export-dbc``: the export round trip, for every built-in profile.

Frames our encoder produced from one fixed set of values (tests/frame_values.py) are decoded by cantools with
the exported DBC (loaded with ``strict=True``), and every signal must give back the value the field carries:
within half a scale step, after the field's own range (``min``/``max`` and its integer range) has saturated it.
The expected values are worked out here from the profile's declarations, not by our decoder.

Field kinds this file knows must round-trip; a field of a kind added to the engine later is left out of the
DBC with a comment, and the test checks exactly that, so a known kind can never pass by being skipped.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path
from typing import Any, Final

import cantools  # a dev dependency: this must-show test fails rather than skips without it
import pytest
from frame_values import fixed_values

from gateway.cli import main
from gateway.cli.export_dbc import MISSING_CANTOOLS, build_database
from gateway.profiles import Profile, builtin_profile_names, load_profile
from gateway.profiles.spec import FieldSpec
from gateway.values import Value

KNOWN_KINDS: Final = frozenset({"value", "flags", "pair", "text", "text_value", "constant", "invalid"})
"""The field kinds this test (and export-dbc) knows; by name, so a renamed kind shows up as unknown."""
PAIR_RAISED, PAIR_CLEARED = 0b01, 0b10  # SMA: per 2-bit pair, lower bit = raised, upper bit = cleared
PAD_CHARS: Final = {"nul": "\x00", "space": " "}

# Every kind and byte order, with layouts no built-in profile may have yet: big-endian signed with an offset,
# 4-byte, 1-byte signed, a multi-flag bit, constants (bit, big-endian signed), nul-padded text, SMA-style
# alarm pairs, invalid markers (unsigned and signed), a value that would send the marker when missing.
KITCHEN_SINK: Final = """
name: kitchen-sink
description: every field kind and byte order
inverters: [test bench]
sources: [tests/test_export_dbc.py]
transport: can
bitrate: 250000
byte_order: little
failsafe: {silence_after_s: 60}
frames:
  - id: 0x400
    name: mixed
    period_s: 0.5
    dlc: 8
    fields:
      - {name: current, offset: 0, size: 2, signed: true, value: current_a, scale: 0.1}
      - {name: temperature_be, offset: 2, size: 2, signed: true, byte_order: big, value: temperature_c,
         scale: 0.1, value_offset: -40}
      - {name: capacity_u32, offset: 4, size: 4, value: remaining_capacity_ah, scale: 0.01}
  - id: 0x401
    name: bits_and_text
    period_s: 1.0
    dlc: 8
    fields:
      - {name: alarm_any, offset: 0, bit: 0, flags: [charge_enable, discharge_enable]}
      - {name: enable_charge, offset: 0, bit: 5, flags: [charge_enable]}
      - {name: fixed_bit, offset: 0, bit: 6, constant: 1}
      - {name: soc_s8, offset: 1, size: 1, signed: true, value: soc_pct}
      - {name: marker_be, offset: 2, size: 2, signed: true, byte_order: big, constant: -2}
      - {name: tag, offset: 4, size: 4, text: AB, pad: nul}
  - id: 0x404
    name: texts
    period_s: 1.0
    dlc: 8
    fields:
      - {name: where, offset: 0, size: 8, text_value: max_cell_name}
  - id: 0x403
    name: sma_style
    period_s: 1.0
    dlc: 8
    fields:
      - {name: general_alarm, offset: 0, bit: 0, pair: [comm_alarm]}
      - {name: high_voltage_alarm, offset: 0, bit: 2, pair: [charge_enable, discharge_enable]}
      - {name: low_voltage_alarm, offset: 0, bit: 6, pair: [discharge_enable]}
      - {name: unused_u16, offset: 2, size: 2, invalid: true}
      - {name: unused_s16, offset: 4, size: 2, signed: true, invalid: true}
      - {name: soh_or_invalid, offset: 6, size: 2, value: soh_pct, invalid_when_missing: true}
inverter_frames:
  - id: 0x402
    name: inverter_view
    period_s: 1.0
    dlc: 4
    fields:
      - {name: voltage_be, offset: 0, size: 2, byte_order: big, value: inverter_voltage_v, scale: 0.01}
      - {name: cvl, offset: 2, size: 2, value: inverter_charge_voltage_setpoint_v, scale: 0.1, min: 41, max: 50}
"""


def expected_signals(field: FieldSpec, values: dict[str, Value]) -> dict[str, tuple[float, float]] | None:
    """Signal name → (value the signal must decode to, tolerance); None for a kind this test does not know."""
    kind = str(field.kind)
    if kind == "value":
        assert field.value is not None
        value = values[field.value]
        assert isinstance(value, int | float)
        low_raw, high_raw = field.clamp_range  # the declared range: integer range narrowed by min/max
        low, high = low_raw * field.scale + field.value_offset, high_raw * field.scale + field.value_offset
        # Rounded to the nearest count: within half a count; rounded down (rounding: floor): within one.
        tolerance = field.scale if field.rounding == "floor" else field.scale / 2
        return {field.name: (min(max(float(value), low), high), tolerance + 1e-6)}
    if kind == "flags":
        return {field.name: (float(any(values[flag] for flag in field.flags)), 0.0)}
    if kind == "pair":
        raised = any(values[flag] for flag in field.flags)
        return {field.name: (float(PAIR_RAISED if raised else PAIR_CLEARED), 0.0)}
    if kind == "constant":
        assert field.constant is not None
        return {field.name: (float(field.constant), 0.0)}
    if kind == "invalid":  # all ones unsigned, the most negative number signed
        bits = 8 * field.size
        return {field.name: (float(-(1 << (bits - 1)) if field.signed else (1 << bits) - 1), 0.0)}
    if kind == "text":
        assert field.text is not None
        padded = field.text + PAD_CHARS[field.pad] * (field.size - len(field.text))
        return {f"{field.name}_{index}": (float(ord(char)), 0.0) for index, char in enumerate(padded)}
    if kind == "text_value":
        assert field.value is not None
        text = str(values[field.value])[: field.size]
        padded = text + PAD_CHARS[field.pad] * (field.size - len(text))
        return {f"{field.name}_{index}": (float(ord(char)), 0.0) for index, char in enumerate(padded)}
    return None


def round_trip_mismatches(profile: Profile, db: Any, values: dict[str, Value]) -> list[str]:
    """Every way the DBC ``db`` fails to decode ``profile``'s frames for ``values``; [] when it round-trips."""
    problems: list[str] = []
    for codec in (*profile.frames, *profile.inverter_frames):
        where = f"{profile.name} {codec.label}"
        try:
            message = db.get_message_by_frame_id(codec.can_id)
        except KeyError:
            problems.append(f"{where}: no message in the DBC")
            continue
        if message.length != codec.dlc:
            problems.append(f"{where}: DBC length {message.length}, dlc {codec.dlc}")
        data = codec.encode(values)
        decoded = message.decode(data, decode_choices=False, scaling=True, allow_truncated=False)
        expected: dict[str, tuple[float, float]] = {}
        for field in codec.spec.fields:
            signals = expected_signals(field, values)
            if signals is None:
                assert str(field.kind) not in KNOWN_KINDS
                if field.name not in (message.comment or ""):
                    problems.append(f"{where}: field '{field.name}' of kind {field.kind} skipped without a comment")
                continue
            expected.update(signals)
        if set(decoded) != set(expected):
            problems.append(f"{where}: signals {sorted(decoded)}, fields want {sorted(expected)}")
        for name, (want, tolerance) in expected.items():
            got = decoded.get(name)
            if got is not None and abs(float(got) - want) > tolerance:
                problems.append(f"{where} {name}: decoded {got}, encoded {want}")
    return problems


def export(profile: str, path: Path) -> Any:
    """``export-dbc PROFILE -o path`` through the CLI, then the file loaded strictly."""
    assert main(["export-dbc", profile, "-o", str(path)]) == 0
    return cantools.database.load_file(str(path), strict=True)


@pytest.mark.parametrize("name", builtin_profile_names())
def test_every_builtin_profile_round_trips_through_its_exported_dbc(name: str, tmp_path: Path) -> None:
    profile = load_profile(name)
    db = export(name, tmp_path / f"{name}.dbc")
    assert round_trip_mismatches(profile, db, fixed_values(profile)) == []
    assert len(db.messages) == len(profile.frames) + len(profile.inverter_frames)
    (bus,) = db.buses
    assert f"profile {profile.name}" in bus.comment and "Sources:" in bus.comment
    assert bus.baudrate == profile.bitrate
    for codec in profile.frames:
        message = db.get_message_by_frame_id(codec.can_id)
        assert message.senders == ["Battery"]
        # Request mode (Growatt): no period of its own.
        assert message.cycle_time == (round(codec.period_s * 1000) if codec.period_s > 0 else None)
    for codec in profile.inverter_frames:
        assert db.get_message_by_frame_id(codec.can_id).senders == ["Inverter"]


def test_every_field_kind_and_byte_order_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "kitchen-sink.yaml"
    path.write_text(KITCHEN_SINK, encoding="utf-8")
    profile = load_profile(str(path))
    assert {str(field.kind) for codec in profile.frames for field in codec.spec.fields} == KNOWN_KINDS
    db = export(str(path), tmp_path / "kitchen-sink.dbc")
    values = fixed_values(profile)
    assert round_trip_mismatches(profile, db, values) == []
    # The conventions spelled out: Motorola signals start at the MSB (bit 7 of their first byte).
    mixed = db.get_message_by_name("mixed")
    temperature = mixed.get_signal_by_name("temperature_be")
    assert (temperature.start, temperature.length, temperature.byte_order) == (23, 16, "big_endian")
    assert temperature.is_signed and (temperature.scale, temperature.offset) == (0.1, -40)
    assert temperature.unit == "°C"  # through cp1252 and back
    current = mixed.get_signal_by_name("current")
    assert (current.start, current.byte_order, current.is_signed, current.unit) == (0, "little_endian", True, "A")
    cvl = db.get_message_by_name("inverter_view").get_signal_by_name("cvl")
    assert (cvl.minimum, cvl.maximum) == (41, 50)  # the profile's clamp range
    assert cvl.receivers == ["Battery"]
    bits = db.get_message_by_name("bits_and_text")
    assert bits.get_signal_by_name("alarm_any").length == 1
    assert [bits.get_signal_by_name(f"tag_{i}").start for i in range(4)] == [32, 40, 48, 56]
    pair = db.get_message_by_name("sma_style").get_signal_by_name("high_voltage_alarm")
    assert (pair.start, pair.length, dict(pair.choices)) == (2, 2, {1: "raised", 2: "cleared"})
    # The clamp matters here: 55.0 V is above cvl's max, so it went out as 50.0 V.
    data = profile.inverter_frames[0].encode(values)
    assert db.decode_message(0x402, data)["cvl"] == pytest.approx(50.0)


@pytest.mark.parametrize(
    ("signal_line", "corrupted", "field"),
    [
        (r"SG_ temperature_be : 23\|16@0- \(0\.1,-40\)", "SG_ temperature_be : 23|16@0- (0.1,-41)", "temperature_be"),
        (r"SG_ temperature_be : 23\|16@0-", "SG_ temperature_be : 16|16@1-", "temperature_be"),  # byte order
        (r"SG_ current : 0\|16@1-", "SG_ current : 0|16@1+", "current"),  # sign
        (r"SG_ capacity_u32 : 32\|32@1\+ \(0\.01,0\)", "SG_ capacity_u32 : 32|32@1+ (0.1,0)", "capacity_u32"),
        (r"SG_ enable_charge : 5\|1@1\+", "SG_ enable_charge : 7|1@1+", "enable_charge"),  # a flag's bit
        (r"SG_ fixed_bit : 6\|1@1\+ \(1,0\)", "SG_ fixed_bit : 6|1@1+ (1,1)", "fixed_bit"),
        (r"SG_ marker_be : 23\|16@0-", "SG_ marker_be : 23|16@0+", "marker_be"),
        (r"SG_ tag_1 : 40\|8@1\+ \(1,0\)", "SG_ tag_1 : 40|8@1+ (1,1)", "tag_1"),
        (r"SG_ voltage_be : 7\|16@0\+", "SG_ voltage_be : 0|16@1+", "voltage_be"),
        (r"SG_ low_voltage_alarm : 6\|2@1\+", "SG_ low_voltage_alarm : 4|2@1+", "low_voltage_alarm"),
        (r"SG_ unused_s16 : 32\|16@1-", "SG_ unused_s16 : 32|16@1+", "unused_s16"),
        (r"SG_ soh_or_invalid : 48\|16@1\+ \(1,0\)", "SG_ soh_or_invalid : 48|16@1+ (2,0)", "soh_or_invalid"),
    ],
)
def test_a_wrong_dbc_fails_the_round_trip(signal_line: str, corrupted: str, field: str, tmp_path: Path) -> None:
    """The checker is not vacuous: one signal exported wrongly, of any known kind, is caught."""
    path = tmp_path / "kitchen-sink.yaml"
    path.write_text(KITCHEN_SINK, encoding="utf-8")
    profile = load_profile(str(path))
    dbc = tmp_path / "kitchen-sink.dbc"
    export(str(path), dbc)
    text, count = re.subn(signal_line, corrupted.replace("\\", "\\\\"), dbc.read_text(encoding="cp1252"))
    assert count == 1, f"{signal_line!r} not in the exported DBC"
    db = cantools.database.load_string(text, database_format="dbc", strict=True)
    problems = round_trip_mismatches(profile, db, fixed_values(profile))
    assert any(field in problem for problem in problems), problems


def test_a_field_kind_unknown_to_the_exporter_is_skipped_with_a_comment(tmp_path: Path) -> None:
    path = tmp_path / "kitchen-sink.yaml"
    path.write_text(KITCHEN_SINK, encoding="utf-8")
    profile = load_profile(str(path))
    codec = profile.frames[1]
    # A kind the engine may add later (an SMA-style 2-bit alarm pair, say), in byte 7, free in this frame.
    future = FieldSpec(name="alarm_pair", kind="alarm_pair", offset=7, size=1, bit=0)  # type: ignore[arg-type]
    spec = dataclasses.replace(codec.spec, fields=(*codec.spec.fields[:5], future))
    changed = dataclasses.replace(profile, frames=(profile.frames[0], dataclasses.replace(codec, spec=spec)))
    dbc = tmp_path / "future.dbc"
    dbc.write_text(build_database(changed).as_dbc_string(), encoding="cp1252")
    db = cantools.database.load_file(str(dbc), strict=True)
    message = db.get_message_by_frame_id(codec.can_id)
    assert "alarm_pair" not in [signal.name for signal in message.signals]
    assert "field 'alarm_pair' (alarm_pair, byte 7 bit 0)" in message.comment
    assert "fixed_bit" in [signal.name for signal in message.signals]  # the known fields are all there


def test_export_dbc_writes_to_stdout_by_default(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert main(["export-dbc", "pylontech-can"]) == 0
    out, err = capsysbinary.readouterr()
    assert out.startswith(b'VERSION "bms-gateway ')
    assert b"BO_ 849 limits: 8 Battery" in out
    assert err == b""


def test_export_dbc_unknown_profile_is_one_line_and_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export-dbc", "no-such-profile"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("bms-gateway: error: unknown profile 'no-such-profile'")


def test_export_dbc_without_cantools_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "cantools", None)  # `import cantools` now raises ImportError
    target = tmp_path / "out.dbc"
    assert main(["export-dbc", "pylontech-can", "-o", str(target)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == [f"bms-gateway: error: {MISSING_CANTOOLS}"]
    assert MISSING_CANTOOLS == "export-dbc needs cantools: pip install 'bms-gateway[tools]'"
    assert not target.exists()
