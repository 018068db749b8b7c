"""Tests for gateway.profiles: validation messages, loading, freezing, and the codec's encoding rules.

Every invalid profile below is one small YAML file with one mistake; the test asserts the exact message.
The Pylontech bytes themselves are in test_pylontech_golden.py.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.errors import FrameError, ProfileError
from gateway.profiles import (
    CanFrameCodec,
    EncodeError,
    Profile,
    builtin_profile_names,
    load_profile,
    load_profile_text,
)
from gateway.values import TEXT_VALUES, VALUE_NAMES

REPO = Path(__file__).resolve().parents[1]

HEADER = """\
name: tiny
description: a test profile
transport: can
bitrate: 500000
failsafe: {silence_after_s: 60}
"""
CVL = "{name: charge_voltage_limit, offset: 0, size: 2, value: charge_voltage_limit_v, scale: 0.1}"


def one_frame(*fields: str, dlc: int = 8, can_id: str = "0x351") -> str:
    """A valid header plus one frame with ``fields`` (YAML flow mappings)."""
    lines = "".join(f"      - {field}\n" for field in fields)
    return HEADER + f"frames:\n  - id: {can_id}\n    period_s: 1.0\n    dlc: {dlc}\n    fields:\n{lines}"


F = "{path}: frame 0x351 field"  # the usual start of a field message

INVALID: list[tuple[str, str, str]] = [
    # (case id, YAML text, expected message; {path} is the file's path)
    (
        "yaml syntax",
        "name: [tiny\n",
        "{path}: YAML error at line 2 column 1: expected ',' or ']', but got '<stream end>'",
    ),
    (
        "duplicate yaml key",
        HEADER + "bitrate: 250000\n",
        "{path}: YAML error at line 6 column 1: duplicate key 'bitrate'",
    ),
    ("top level not a mapping", "- a\n- b\n", "{path}: top level must be a mapping, got list"),
    ("empty file", "", "{path}: top level must be a mapping, got null"),
    ("missing top key", HEADER.replace("bitrate: 500000\n", "") + "frames: []\n", "{path}: missing key 'bitrate'"),
    (
        "unknown top key, did you mean",
        HEADER + "frames: []\nbitrat: 1\n",
        "{path}: unknown key 'bitrat' (did you mean 'bitrate'?)",
    ),
    (
        "unknown top key, no close match",
        HEADER + "frames: []\ncolour: red\n",
        "{path}: unknown key 'colour' (valid: aliases, bitrate, byte_order, confirmed_by, description, extends,"
        " failsafe, frames, heartbeat, inverter_behaviour, inverter_frames, inverters, min_gap_s, mode, name, period_s,"
        " remove_frames, request, sources, transport)",
    ),
    (
        "unsupported transport",
        HEADER.replace("can", "rs485") + "frames: []\n",
        "{path}: transport 'rs485' not supported (valid: can)",
    ),
    (
        "byte order typo",
        HEADER + "byte_order: lil\nframes: []\n",
        "{path}: byte_order must be little or big, got 'lil'",
    ),
    (
        "silence not positive",
        HEADER.replace("60", "0") + "frames: []\n",
        "{path}: failsafe: silence_after_s must be > 0, got 0",
    ),
    (
        "heartbeat not an inverter frame",
        HEADER + "heartbeat: {id: 0x305, timeout_s: 10}\nframes: []\n",
        "{path}: heartbeat: id 0x305 is not one of the inverter_frames",
    ),
    (
        "heartbeat missing id",
        HEADER + "heartbeat: {timeout_s: 10}\nframes: []\n",
        "{path}: heartbeat: missing key 'id'",
    ),
    (
        "frame without id",
        HEADER + "frames:\n  - {period_s: 1.0, dlc: 8, fields: []}\n",
        "{path}: frames[0]: missing key 'id'",
    ),
    (
        "frame id beyond 11 bits",
        HEADER + "frames:\n  - {id: 0x800, period_s: 1.0, dlc: 8, fields: []}\n",
        "{path}: frames[0]: id 0x800 is not an 11-bit standard id (0x000-0x7ff)",
    ),
    (
        "frame key typo",
        HEADER + "frames:\n  - {id: 0x351, period: 1.0, dlc: 8, fields: []}\n",
        "{path}: frame 0x351: unknown key 'period' (did you mean 'period_s'?)",
    ),
    ("dlc above 8", one_frame(CVL, dlc=9), "{path}: frame 0x351: dlc must be 0-8, got 9"),
    (
        "duplicate frame id",
        HEADER + "frames:\n  - {id: 0x351, period_s: 1.0, dlc: 8, fields: []}\n"
        "  - {id: 0x351, period_s: 1.0, dlc: 2, fields: []}\n",
        "{path}: frame 0x351: duplicate frame id",
    ),
    (
        "inverter frame reuses a sent id",
        HEADER + "frames:\n  - {id: 0x351, period_s: 1.0, dlc: 8, fields: []}\n"
        "inverter_frames:\n  - {id: 0x351, period_s: 1.0, dlc: 8, fields: []}\n",
        "{path}: frame 0x351: duplicate frame id",
    ),
    (
        "field without name",
        one_frame("{offset: 0, size: 2, value: soc_pct}"),
        "{path}: frame 0x351 fields[0]: missing key 'name'",
    ),
    (
        "field key typo, did you mean",
        one_frame("{name: cvl, offset: 0, size: 2, value: charge_voltage_limit_v, scal: 0.1}"),
        F + " 'cvl': unknown key 'scal' (did you mean 'scale'?)",
    ),
    (
        "field without what it carries",
        one_frame("{name: cvl, offset: 0, size: 2}"),
        F + " 'cvl': needs exactly one of value, flags, pair, text, text_value, constant, invalid (has none)",
    ),
    (
        "field carrying two things",
        one_frame("{name: cvl, offset: 0, size: 2, value: soc_pct, constant: 1}"),
        F + " 'cvl': needs exactly one of value, flags, pair, text, text_value, constant, invalid"
        " (has value and constant)",
    ),
    (
        "key that does not apply",
        one_frame("{name: soc, offset: 0, size: 2, value: soc_pct, pad: space}"),
        F + " 'soc': key 'pad' does not apply to a value field",
    ),
    (
        "unknown value name",
        one_frame("{name: cvl, offset: 0, size: 2, value: charge_voltage_limit, scale: 0.1}"),
        F + " 'cvl': unknown value 'charge_voltage_limit' (did you mean 'charge_voltage_limit_v'?)",
    ),
    (
        "unknown value name, no close match",
        one_frame("{name: x, offset: 0, size: 2, value: banana}"),
        F + " 'x': unknown value 'banana'",
    ),
    (
        "flag given as a numeric value",
        one_frame("{name: ce, offset: 0, size: 1, value: charge_enable}"),
        F + " 'ce': 'charge_enable' is a flag, not a numeric value: carry it with flags: [charge_enable] and a bit",
    ),
    (
        "unknown flag name",
        one_frame("{name: ce, offset: 0, bit: 7, flags: [charge_enabled]}"),
        F + " 'ce': unknown value 'charge_enabled' (did you mean 'charge_enable'?)",
    ),
    (
        "numeric value given as a flag",
        one_frame("{name: ce, offset: 0, bit: 7, flags: [soc_pct]}"),
        F + " 'ce': 'soc_pct' is a numeric value, not a flag: carry it with value: soc_pct and a size",
    ),
    (
        "flags field without bit",
        one_frame("{name: ce, offset: 0, flags: [charge_enable]}"),
        F + " 'ce': a flags field needs 'bit' (0-7)",
    ),
    (
        "size not 1, 2 or 4",
        one_frame("{name: soc, offset: 0, size: 3, value: soc_pct}"),
        F + " 'soc': size 3 not one of 1, 2, 4",
    ),
    (
        "bit beyond 7",
        one_frame("{name: ce, offset: 0, bit: 8, flags: [charge_enable]}"),
        F + " 'ce': bit 8 not in 0-7",
    ),
    (
        "scale zero",
        one_frame("{name: soc, offset: 0, size: 2, value: soc_pct, scale: 0}"),
        F + " 'soc': scale must be > 0, got 0",
    ),
    (
        "scale negative",
        one_frame("{name: soc, offset: 0, size: 2, value: soc_pct, scale: -0.1}"),
        F + " 'soc': scale must be > 0, got -0.1",
    ),
    (
        "scale not a number",
        one_frame("{name: soc, offset: 0, size: 2, value: soc_pct, scale: tenth}"),
        F + " 'soc': scale must be a number, got 'tenth'",
    ),
    (
        "offset not an integer",
        one_frame("{name: soc, offset: 1.5, size: 2, value: soc_pct}"),
        F + " 'soc': offset must be an integer, got 1.5",
    ),
    (
        "min above max",
        one_frame("{name: soc, offset: 0, size: 2, value: soc_pct, min: 10, max: 5}"),
        F + " 'soc': min 10 is greater than max 5",
    ),
    (
        "min above the field's range",
        one_frame("{name: soc, offset: 0, size: 1, value: soc_pct, min: 300}"),
        F + " 'soc': min..max leaves no raw value in the field's range 0..255",
    ),
    (
        "text too long",
        one_frame("{name: maker, offset: 0, size: 8, text: PYLONTECH}"),
        F + " 'maker': text 'PYLONTECH' is 9 bytes, longer than size 8",
    ),
    (
        "text not ASCII",
        one_frame("{name: maker, offset: 0, size: 8, text: PYLÖN}"),
        F + " 'maker': text must be ASCII, got 'PYLÖN'",
    ),
    (
        "text that YAML reads as a boolean",
        one_frame("{name: answer, offset: 0, size: 2, text: NO}"),
        F + " 'answer': text must be a string, got False (quote it in the YAML)",
    ),
    (
        "pad typo",
        one_frame("{name: maker, offset: 0, size: 8, text: PYLON, pad: blank}"),
        F + " 'maker': pad must be nul or space, got 'blank'",
    ),
    (
        "constant out of range",
        one_frame("{name: c, offset: 0, size: 1, constant: 256}"),
        F + " 'c': constant 256 out of range 0..255",
    ),
    (
        "constant with both size and bit",
        one_frame("{name: c, offset: 0, size: 1, bit: 0, constant: 1}"),
        F + " 'c': a constant field needs exactly one of size, bit",
    ),
    (
        "bytes overlap",
        one_frame(
            CVL,
            "{name: charge_current_limit, offset: 1, size: 2, value: charge_current_limit_a, scale: 0.1}",
        ),
        F + " 'charge_current_limit': overlaps field 'charge_voltage_limit' (bytes 0-1)",
    ),
    (
        "bits overlap",
        one_frame(
            "{name: ce, offset: 0, bit: 7, flags: [charge_enable]}",
            "{name: de, offset: 0, bit: 7, flags: [discharge_enable]}",
        ),
        F + " 'de': overlaps field 'ce' (byte 0 bit 7)",
    ),
    (
        "bit inside a byte field",
        one_frame(CVL, "{name: ce, offset: 1, bit: 0, flags: [charge_enable]}"),
        F + " 'ce': overlaps field 'charge_voltage_limit' (bytes 0-1)",
    ),
    (
        "byte field over a bit",
        one_frame(
            "{name: ce, offset: 4, bit: 0, flags: [charge_enable]}",
            "{name: n, offset: 4, size: 1, value: module_count}",
        ),
        F + " 'n': overlaps field 'ce' (byte 4 bit 0)",
    ),
    (
        "field beyond the dlc",
        one_frame("{name: dvl, offset: 6, size: 2, value: discharge_voltage_limit_v, scale: 0.1}", dlc=6),
        F + " 'dvl': bytes 6-7 do not fit in dlc 6",
    ),
    (
        "bit field beyond the dlc",
        one_frame("{name: ce, offset: 2, bit: 7, flags: [charge_enable]}", dlc=2),
        F + " 'ce': byte 2 does not fit in dlc 2",
    ),
    (
        "duplicate field name",
        one_frame(CVL, CVL.replace("offset: 0", "offset: 2")),
        F + " 'charge_voltage_limit': duplicate field name",
    ),
]


@pytest.mark.parametrize(("text", "expected"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_invalid_profile_message(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ProfileError) as error:
        load_profile(str(path))
    assert str(error.value) == expected.format(path=path)


def test_valid_base_profile_loads() -> None:
    """The base the invalid cases start from is itself valid."""
    profile = load_profile_text(one_frame(CVL), "tiny.yaml")
    assert profile.frame(0x351).encode({"charge_voltage_limit_v": 55.2}) == bytes.fromhex("2802") + bytes(6)
    assert profile.heartbeat is None
    assert profile.inverter_frames == ()


def test_unknown_builtin_name() -> None:
    with pytest.raises(ProfileError) as error:
        load_profile("pylontech")
    assert str(error.value) == "unknown profile 'pylontech' (did you mean 'pylontech-can'?)"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ProfileError) as error:
        load_profile(str(path))
    assert str(error.value) == f"{path}: cannot read: No such file or directory"


# --- built-ins, loading by path, packaging ------------------------------------------------------------------


def test_builtin_names_include_pylontech() -> None:
    assert "pylontech-can" in builtin_profile_names()


@pytest.mark.parametrize("name", builtin_profile_names())
def test_every_builtin_loads_and_is_named_after_its_file(name: str) -> None:
    profile = load_profile(name)
    assert profile.name == name
    assert Path(profile.path).name == f"{name}.yaml"
    assert profile.value_names <= VALUE_NAMES | set(TEXT_VALUES)


def test_load_by_path_equals_builtin(tmp_path: Path) -> None:
    copy = tmp_path / "mine.yaml"
    copy.write_bytes((REPO / "profiles" / "pylontech-can.yaml").read_bytes())
    by_path = load_profile(str(copy))
    builtin = load_profile("pylontech-can")
    assert by_path.path == str(copy)
    assert [f.spec for f in by_path.frames] == [f.spec for f in builtin.frames]
    assert by_path.heartbeat == builtin.heartbeat


def test_pyproject_installs_every_gateway_package_and_the_profiles() -> None:
    """The explicit package list in pyproject.toml must not miss a subpackage added later."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    on_disk = {
        ".".join(path.parent.relative_to(REPO).parts)
        for path in (REPO / "gateway").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert on_disk <= set(setuptools["packages"]), "add these to [tool.setuptools] packages"
    assert "gateway.builtin_profiles" in setuptools["packages"]
    assert setuptools["package-dir"]["gateway.builtin_profiles"] == "profiles"
    assert setuptools["package-data"]["gateway.builtin_profiles"] == ["*.yaml"]


# --- frozen -------------------------------------------------------------------------------------------------


def test_profile_objects_are_frozen() -> None:
    profile = load_profile("pylontech-can")
    frame = profile.frames[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame.can_id = 0x123  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        frame.spec.fields[0].scale = 1  # type: ignore[misc]
    assert profile.heartbeat is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        profile.heartbeat.timeout_s = 1  # type: ignore[misc]
    assert isinstance(profile.frames, tuple)
    assert isinstance(frame.spec.fields, tuple)


# --- codec rules --------------------------------------------------------------------------------------------


def codec(*fields: str, dlc: int = 8, top: str = "") -> CanFrameCodec:
    return load_profile_text(one_frame(*fields, dlc=dlc) + top, "t.yaml").frames[0]


def test_big_endian_default_and_little_endian_override() -> None:
    frame = codec(
        "{name: v, offset: 0, size: 2, value: pack_voltage_v, scale: 0.01}",
        "{name: i, offset: 2, size: 2, signed: true, value: current_a, scale: 0.1, byte_order: little}",
        "{name: cap, offset: 4, size: 4, value: capacity_ah}",
        top="byte_order: big\n",
    )
    payload = frame.encode({"pack_voltage_v": 53.12, "current_a": -12.3, "capacity_ah": 280})
    # 5312 = 0x14C0 big-endian -> 14 c0; -123 = 0xFF85 little-endian -> 85 ff; 280 = 0x118 as u32 BE.
    assert payload == bytes.fromhex("14c0 85ff 00000118")
    assert frame.decode(payload) == {"v": 53.12, "i": -12.3, "cap": 280}


def test_value_offset_and_u32() -> None:
    frame = codec("{name: t, offset: 0, size: 1, value: max_temperature_c, value_offset: -50}")
    # Growatt/"Hybrid" style: raw = T + 50, so 23 °C -> 73 and -60 °C saturates at 0 (= -50 °C).
    assert frame.encode({"max_temperature_c": 23}) == bytes([73]) + bytes(7)
    assert frame.encode({"max_temperature_c": -60}) == bytes(8)
    assert frame.decode(bytes([73])) == {"t": 23}


def test_unsigned_saturation_never_wraps() -> None:
    frame = codec("{name: a, offset: 0, size: 2, value: charge_current_limit_a}")
    assert frame.encode({"charge_current_limit_a": -1}) == bytes(8)
    assert frame.encode({"charge_current_limit_a": 70000}) == bytes.fromhex("ffff") + bytes(6)
    assert frame.encode({"charge_current_limit_a": math.inf}) == bytes.fromhex("ffff") + bytes(6)
    assert frame.encode({"charge_current_limit_a": -math.inf}) == bytes(8)


def test_min_max_clamp_in_physical_units() -> None:
    frame = codec("{name: cvl, offset: 0, size: 2, value: charge_voltage_limit_v, scale: 0.1, min: 41, max: 63}")
    # 41 V -> 410 = 0x019A; 63 V -> 630 = 0x0276
    assert frame.encode({"charge_voltage_limit_v": 12}) == bytes.fromhex("9a01") + bytes(6)
    assert frame.encode({"charge_voltage_limit_v": 70}) == bytes.fromhex("7602") + bytes(6)
    assert frame.encode({"charge_voltage_limit_v": 55.2}) == bytes.fromhex("2802") + bytes(6)


def test_text_padding_and_constants() -> None:
    frame = codec(
        "{name: name, offset: 0, size: 4, text: AB}",
        "{name: id, offset: 4, size: 2, constant: -2, signed: true}",
        "{name: marker, offset: 6, bit: 0, constant: 1}",
        "{name: zero, offset: 6, bit: 1, constant: 0}",
        "{name: ce, offset: 6, bit: 7, flags: [charge_enable, force_charge]}",
        "{name: sp, offset: 7, size: 1, text: X, pad: space}",
    )
    assert frame.value_names == {"charge_enable", "force_charge"}
    off = frame.encode({"charge_enable": False, "force_charge": False})
    # "AB" + 2 NULs; -2 as s16 LE = fe ff; bit 0 constant 1 -> 0x01; "X"
    assert off == b"AB\x00\x00" + bytes.fromhex("feff") + b"\x01X"
    on = frame.encode({"charge_enable": False, "force_charge": True})
    assert on == b"AB\x00\x00" + bytes.fromhex("feff") + b"\x81X"
    assert frame.decode(on) == {"name": "AB", "id": -2, "marker": 1, "zero": 0, "ce": True, "sp": "X"}


def test_encode_errors() -> None:
    frame = codec(
        "{name: soc, offset: 0, size: 2, value: soc_pct}", "{name: ce, offset: 2, bit: 7, flags: [charge_enable]}"
    )
    with pytest.raises(EncodeError) as missing_flag:
        frame.encode({"soc_pct": 1})
    assert str(missing_flag.value) == "frame 0x351 field 'ce': missing value 'charge_enable'"
    with pytest.raises(EncodeError) as text:
        frame.encode({"soc_pct": "76", "charge_enable": True})
    assert str(text.value) == "frame 0x351 field 'soc': value 'soc_pct' is a string"
    with pytest.raises(EncodeError) as nan:
        frame.encode({"soc_pct": math.nan, "charge_enable": True})
    assert str(nan.value) == "frame 0x351 field 'soc': value 'soc_pct' is NaN"


def test_decode_short_frame_and_excess() -> None:
    frame = codec(CVL, "{name: soc, offset: 4, size: 2, value: soc_pct}")
    with pytest.raises(FrameError) as error:
        frame.decode(bytes(5))
    assert str(error.value) == "short frame: frame 0x351: 5 bytes, fields need 6"
    # bytes beyond the last field (here 6-7, and more) are ignored
    assert frame.decode(bytes.fromhex("2802 0000 4c00") + bytes(4)) == {"charge_voltage_limit": 55.2, "soc": 76}


@given(
    cvl=st.floats(min_value=0, max_value=6553.5),
    current=st.floats(min_value=-3276.8, max_value=3276.7),
    soc=st.integers(min_value=0, max_value=255),
)
def test_round_trip_within_half_a_step(cvl: float, current: float, soc: int) -> None:
    payload = ROUND_TRIP.encode({"charge_voltage_limit_v": cvl, "current_a": current, "soc_pct": soc})
    decoded = ROUND_TRIP.decode(payload)
    assert cvl - 0.1 - 1e-9 <= decoded["cvl"] <= cvl + 1e-9  # a limit rounds down: within one step below

    assert decoded["i"] == pytest.approx(current, abs=0.05 + 1e-9)
    assert decoded["soc"] == soc
    assert (
        ROUND_TRIP.encode({"charge_voltage_limit_v": decoded["cvl"], "current_a": decoded["i"], "soc_pct": soc})
        == payload
    )


@pytest.mark.parametrize(
    ("name", "value", "wire"),
    [
        # The audit's example (battery-safety P11): a 15S CVL of 51.75 V went out as 51.8 V.
        ("charge_voltage_limit_v", 51.75, 51.7),
        ("charge_current_limit_a", 87.39, 87.3),
        ("discharge_current_limit_a", 0.09, 0.0),
        ("discharge_voltage_limit_v", 46.41, 46.5),  # DVL rounds up: never below what the engine set
        ("charge_voltage_limit_v", 55.2, 55.2),  # on the grid: unchanged, whatever the float's last bit
        ("discharge_current_limit_a", 0.3, 0.3),
    ],
)
def test_limits_round_towards_safety_on_the_wire(name: str, value: float, wire: float) -> None:
    limits = load_profile("pylontech-can").frame(0x351)
    values = {
        "charge_voltage_limit_v": 55.2,
        "charge_current_limit_a": 50.0,
        "discharge_current_limit_a": 50.0,
        "discharge_voltage_limit_v": 44.8,
    }
    decoded = limits.decode(limits.encode(values | {name: value}))
    field = {
        "charge_voltage_limit_v": "charge_voltage_limit",
        "charge_current_limit_a": "charge_current_limit",
        "discharge_current_limit_a": "discharge_current_limit",
        "discharge_voltage_limit_v": "discharge_voltage_limit",
    }[name]
    assert decoded[field] == pytest.approx(wire)


ROUND_TRIP = codec(
    "{name: cvl, offset: 0, size: 2, value: charge_voltage_limit_v, scale: 0.1}",
    "{name: i, offset: 2, size: 2, signed: true, value: current_a, scale: 0.1, byte_order: big}",
    "{name: soc, offset: 4, size: 1, value: soc_pct}",
)


def test_profile_encode_all_and_lookups() -> None:
    profile: Profile = load_profile("pylontech-can")
    assert [can_id for can_id, _ in profile.encode_all(dict.fromkeys(VALUE_NAMES, 0))] == [
        0x351,
        0x355,
        0x356,
        0x359,
        0x35C,
        0x35E,
    ]
    with pytest.raises(KeyError):
        profile.frame(0x123)
