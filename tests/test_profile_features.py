"""The profile engine's protocol features: alarm pairs, invalid markers, clamps, timing keys, request mode,
inverter values, ``extends`` and aliases.

Every invalid profile is one small YAML text with one mistake, and the test asserts the exact message. Expected
bytes are worked out by hand in the comments (never produced by our encoder). The profiles under
``tests/data/profiles/`` are the worked examples of the format.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from gateway.errors import ProfileError, ProfileNotFoundError
from gateway.profiles import (
    INVERTER_VALUE_NAMES,
    CanFrameCodec,
    EncodeError,
    OnLost,
    SendMode,
    StaleAction,
    builtin_profile_names,
    builtin_profiles,
    invalid_marker,
    load_profile,
    load_profile_text,
)
from gateway.profiles import loader as loader_module
from gateway.values import FLAG_VALUES, NUMERIC_VALUES

DATA = Path(__file__).resolve().parent / "data" / "profiles"
BASE = load_profile(str(DATA / "features-base.yaml"))
VARIANT = load_profile(str(DATA / "features-variant.yaml"))
REQUEST = load_profile(str(DATA / "request.yaml"))

HEADER = """\
name: tiny
description: a test profile
transport: can
bitrate: 500000
failsafe: {silence_after_s: 60}
"""
HEARTBEAT_FRAME = "inverter_frames:\n  - {id: 0x305, period_s: 1.0, dlc: 8, fields: []}\n"


def frame(*fields: str, can_id: str = "0x351", extra: str = "period_s: 1.0") -> str:
    """One frame (YAML block) with ``fields`` (YAML flow mappings)."""
    lines = "".join(f"\n      - {field}" for field in fields) if fields else " []"
    return f"  - id: {can_id}\n    {extra}\n    dlc: 8\n    fields:{lines}\n"


def one_frame(*fields: str, top: str = "", extra: str = "period_s: 1.0") -> str:
    return HEADER + top + "frames:\n" + frame(*fields, extra=extra)


F = "{path}: frame 0x351 field"
ALL_CLEAR = dict.fromkeys(FLAG_VALUES, False)
"""Every flag false: every pair cleared."""

INVALID: list[tuple[str, str, str]] = [
    # --- 2-bit alarm pairs
    (
        "bad pair bit",
        one_frame("{name: a, offset: 0, bit: 8, pair: [fault_system]}"),
        F + " 'a': a pair field's bit must be 0, 2, 4 or 6 (its low bit), got 8",
    ),
    (
        "pair on an odd bit",
        one_frame("{name: a, offset: 0, bit: 3, pair: [fault_system]}"),
        F + " 'a': a pair field's bit must be 0, 2, 4 or 6 (its low bit), got 3",
    ),
    (
        "pair without bit",
        one_frame("{name: a, offset: 0, pair: [fault_system]}"),
        F + " 'a': a pair field needs 'bit' (0, 2, 4 or 6: its low bit)",
    ),
    (
        "pair of a numeric value",
        one_frame("{name: a, offset: 0, bit: 0, pair: [soc_pct]}"),
        F + " 'a': 'soc_pct' is a numeric value, not a flag: carry it with value: soc_pct and a size",
    ),
    (
        "pair that is not a list",
        one_frame("{name: a, offset: 0, bit: 0, pair: fault_system}"),
        F + " 'a': pair must be a non-empty list of flag names, got 'fault_system'",
    ),
    (
        "bit inside a pair",
        one_frame(
            "{name: a, offset: 0, bit: 2, pair: [fault_system]}", "{name: b, offset: 0, bit: 3, flags: [comm_alarm]}"
        ),
        F + " 'b': overlaps field 'a' (byte 0 bits 2-3)",
    ),
    (
        "size on a pair",
        one_frame("{name: a, offset: 0, bit: 0, size: 1, pair: [fault_system]}"),
        F + " 'a': key 'size' does not apply to a pair field",
    ),
    # --- invalid markers
    (
        "invalid on a text field",
        one_frame("{name: maker, offset: 0, size: 8, text: AB, invalid: true}"),
        F + " 'maker': invalid: true marks an unused number and cannot go with text (leave one out)",
    ),
    (
        "invalid with a value",
        one_frame("{name: soc, offset: 0, size: 2, value: soc_pct, invalid: true}"),
        F + " 'soc': invalid: true marks an unused number and cannot go with value (leave one out)",
    ),
    (
        "invalid false",
        one_frame("{name: spare, offset: 0, size: 2, invalid: false}"),
        F + " 'spare': invalid must be true, got False (leave the field out instead)",
    ),
    (
        "invalid of 3 bytes",
        one_frame("{name: spare, offset: 0, size: 3, invalid: true}"),
        F + " 'spare': size 3 not one of 1, 2, 4",
    ),
    (
        "invalid as a bit",
        one_frame("{name: spare, offset: 0, bit: 1, invalid: true}"),
        F + " 'spare': key 'bit' does not apply to an invalid field",
    ),
    (
        "invalid_when_missing on flags",
        one_frame("{name: ce, offset: 0, bit: 7, flags: [charge_enable], invalid_when_missing: true}"),
        F + " 'ce': key 'invalid_when_missing' does not apply to a flags field",
    ),
    (
        "invalid_when_missing not a boolean",
        one_frame("{name: soh, offset: 0, size: 2, value: soh_pct, invalid_when_missing: 1}"),
        F + " 'soh': invalid_when_missing must be true or false, got 1",
    ),
    # --- timing
    (
        "min_gap_s above period_s",
        one_frame(extra="period_s: 0.1\n    min_gap_s: 0.2"),
        "{path}: frame 0x351: min_gap_s 0.2 is longer than period_s 0.1",
    ),
    (
        "default min_gap_s above a frame's period_s",
        one_frame(top="min_gap_s: 0.5\n", extra="period_s: 0.25"),
        "{path}: frame 0x351: min_gap_s 0.5 is longer than period_s 0.25",
    ),
    (
        "negative min_gap_s",
        one_frame(extra="period_s: 1.0\n    min_gap_s: -0.1"),
        "{path}: frame 0x351: min_gap_s must be >= 0, got -0.1",
    ),
    (
        "no period_s and no default",
        one_frame(extra="name: limits"),
        "{path}: frame 0x351: missing key 'period_s'",
    ),
    (
        "min_gap_s on an inverter frame",
        HEADER + "frames: []\ninverter_frames:\n  - {id: 0x305, period_s: 1.0, min_gap_s: 0.1, dlc: 8, fields: []}\n",
        "{path}: frame 0x305: min_gap_s applies only to frames we send",
    ),
    # --- request mode
    (
        "request mode without request id",
        one_frame(top="mode: request\n", extra="name: limits"),
        "{path}: mode request needs request: {{id: <the inverter's request frame id>}}",
    ),
    (
        "request in broadcast mode",
        one_frame(top="request: {id: 0x301}\n"),
        "{path}: request applies only to mode: request",
    ),
    (
        "request id is a sent frame",
        one_frame(top="mode: request\nrequest: {id: 0x351}\n", extra="name: limits"),
        "{path}: request: id 0x351 is one of the frames we send",
    ),
    (
        "request id beyond 11 bits",
        one_frame(top="mode: request\nrequest: {id: 0x801}\n", extra="name: limits"),
        "{path}: request: id 0x801 is not an 11-bit standard id (0x000-0x7ff)",
    ),
    (
        "period_s in request mode",
        one_frame(top="mode: request\nrequest: {id: 0x301}\n"),
        "{path}: frame 0x351: period_s does not apply to mode request (frames go out only when asked)",
    ),
    (
        "default period_s in request mode",
        one_frame(top="mode: request\nrequest: {id: 0x301}\nperiod_s: 1.0\n", extra="name: limits"),
        "{path}: period_s does not apply to mode request (frames go out only when asked)",
    ),
    ("mode typo", one_frame(top="mode: poll\n"), "{path}: mode must be broadcast or request, got 'poll'"),
    # --- supervision
    (
        "on_lost stop without retry",
        one_frame(top="heartbeat: {id: 0x305, on_lost: stop}\n" + HEARTBEAT_FRAME),
        "{path}: heartbeat: on_lost stop needs retry_after_s (s between retry sets)",
    ),
    (
        "retry without on_lost stop",
        one_frame(top="heartbeat: {id: 0x305, retry_after_s: 120}\n" + HEARTBEAT_FRAME),
        "{path}: heartbeat: retry_after_s applies only to on_lost: stop",
    ),
    (
        "on_lost typo",
        one_frame(top="heartbeat: {id: 0x305, on_lost: halt}\n" + HEARTBEAT_FRAME),
        "{path}: heartbeat: on_lost must be keep_sending or stop, got 'halt'",
    ),
    (
        "heartbeat timeout shorter than two periods",
        one_frame(top="heartbeat: {id: 0x305, timeout_s: 1.5}\n" + HEARTBEAT_FRAME),
        "{path}: heartbeat: timeout_s 1.5 is shorter than 2 × the heartbeat's period_s 1: one late frame would"
        " count as lost",
    ),
    (
        "retry not positive",
        one_frame(top="heartbeat: {id: 0x305, on_lost: stop, retry_after_s: 0}\n" + HEARTBEAT_FRAME),
        "{path}: heartbeat: retry_after_s must be > 0, got 0",
    ),
    (
        "on_lost stop in request mode",
        one_frame(
            top="mode: request\nrequest: {id: 0x301}\n"
            "heartbeat: {id: 0x305, on_lost: stop, retry_after_s: 60}\n" + HEARTBEAT_FRAME,
            extra="name: limits",
        ),
        "{path}: heartbeat: on_lost stop does not apply to mode request (nothing is sent unless asked)",
    ),
    (
        "stale typo",
        HEADER.replace("{silence_after_s: 60}", "{silence_after_s: 60, stale: off}") + "frames: []\n",
        "{path}: failsafe: stale must be zeros or silence, got False",
    ),
    (
        "stale unknown word",
        HEADER.replace("{silence_after_s: 60}", "{silence_after_s: 60, stale: quiet}") + "frames: []\n",
        "{path}: failsafe: stale must be zeros or silence, got 'quiet'",
    ),
    # --- inverter values
    (
        "battery value in an inverter frame",
        HEADER
        + "frames: []\ninverter_frames:\n"
        + frame("{name: soc, offset: 0, size: 2, value: soc_pct}", can_id="0x305"),
        "{path}: frame 0x305 field 'soc': unknown inverter value 'soc_pct' (did you mean 'inverter_soc_pct'?)",
    ),
    (
        "inverter value in a sent frame",
        one_frame("{name: soc, offset: 0, size: 2, value: inverter_soc_pct}"),
        F + " 'soc': 'inverter_soc_pct' is an inverter value: only inverter_frames carry it",
    ),
    (
        "flags in an inverter frame",
        HEADER
        + "frames: []\ninverter_frames:\n"
        + frame("{name: ce, offset: 0, bit: 0, flags: [charge_enable]}", can_id="0x305"),
        "{path}: frame 0x305 field 'ce': an inverter frame carries no flags ('charge_enable'); decode it with"
        " value: and a size",
    ),
    # --- aliases, and extends keys without extends
    (
        "alias is the own name",
        HEADER + "aliases: [tiny]\nframes: []\n",
        "{path}: aliases: 'tiny' is the profile's own name",
    ),
    ("alias twice", HEADER + "aliases: [a, a]\nframes: []\n", "{path}: aliases: 'a' given twice"),
    (
        "alias that looks like a path",
        HEADER + "aliases: [x.yaml]\nframes: []\n",
        "{path}: aliases: 'x.yaml' is not a plain name (no '/', '\\' or .yaml ending)",
    ),
    (
        "alias not a string",
        HEADER + "aliases: [3]\nframes: []\n",
        "{path}: aliases must be a list of non-empty strings, got [3]",
    ),
    (
        "remove_frames without extends",
        HEADER + "remove_frames: [0x351]\nframes: []\n",
        "{path}: remove_frames applies only to a profile that extends another",
    ),
    (
        "remove_fields without extends",
        one_frame(extra="period_s: 1.0\n    remove_fields: [x]"),
        "{path}: frame 0x351: remove_fields applies only to a frame of the base of a profile that extends another",
    ),
]


@pytest.mark.parametrize(("text", "expected"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_invalid_feature_message(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ProfileError) as error:
        load_profile(str(path))
    assert str(error.value) == expected.format(path=path)


# --- 2-bit alarm pairs --------------------------------------------------------------------------------------


def test_pairs_encode_raised_low_bit_cleared_high_bit() -> None:
    alarms = BASE.frame(0x35A)
    # Byte 0: four pairs at bits 0, 2, 4, 6, each cleared = 0b10: 0x02 + 0x08 + 0x20 + 0x80 = 0xAA.
    # Byte 4: the comm pair at bits 0-1, cleared = 0x02. Bytes without fields are 0.
    assert alarms.encode(ALL_CLEAR) == bytes.fromhex("aa000000 02000000")
    # High voltage raised (bits 2-3 = 0b01): 0x02 + 0x04 + 0x20 + 0x80 = 0xA6.
    assert alarms.encode({**ALL_CLEAR, "fault_over_voltage": True}) == bytes.fromhex("a6000000 02000000")
    # The high-temperature pair is raised by either of its flags (bits 6-7 = 0b01): 0x02 + 0x08 + 0x20 + 0x40 = 0x6A.
    assert alarms.encode({**ALL_CLEAR, "fault_charge_over_current": True}) == bytes.fromhex("6a000000 02000000")
    # All raised: 0x01 + 0x04 + 0x10 + 0x40 = 0x55; comm raised = 0x01.
    raised = dict.fromkeys(FLAG_VALUES, True)
    assert alarms.encode(raised) == bytes.fromhex("55000000 01000000")


def test_pairs_decode_to_bool_and_undefined_states_to_int() -> None:
    alarms = BASE.frame(0x35A)
    assert alarms.decode(bytes.fromhex("a6000000 02000000")) == {
        "general": False,
        "high_voltage": True,
        "low_voltage": False,
        "high_temperature": False,
        "comm": False,
    }
    # 0b00 and 0b11 are not states SMA defines: the raw pair comes back so that a monitor can show it.
    decoded = alarms.decode(bytes.fromhex("0c000000 03000000"))  # bits 2-3 = 0b11, all else 0b00
    assert decoded == {"general": 0, "high_voltage": 3, "low_voltage": 0, "high_temperature": 0, "comm": 3}


def test_pair_spec_describes_its_two_bits() -> None:
    pair = BASE.frame(0x35A).spec.fields[1]
    assert (pair.offset, pair.bit, pair.bit_width, pair.span) == (0, 2, 2, "byte 0 bits 2-3")
    assert pair.flags == ("fault_over_voltage",)


# --- invalid markers and clamps ------------------------------------------------------------------------------


def test_invalid_marker_per_size_and_sign() -> None:
    assert invalid_marker(1, signed=False) == 0xFF
    assert invalid_marker(1, signed=True) == -0x80
    assert invalid_marker(2, signed=False) == 0xFFFF
    assert invalid_marker(2, signed=True) == -0x8000
    assert invalid_marker(4, signed=False) == 0xFFFF_FFFF
    assert invalid_marker(4, signed=True) == -0x8000_0000


def codec(*fields: str, top: str = "") -> CanFrameCodec:
    return load_profile_text(one_frame(*fields, top=top), "t.yaml").frames[0]


def test_invalid_fields_always_carry_the_marker_in_their_byte_order() -> None:
    little = codec(
        "{name: u8, offset: 0, size: 1, invalid: true}",
        "{name: s8, offset: 1, size: 1, signed: true, invalid: true}",
        "{name: s16, offset: 2, size: 2, signed: true, invalid: true}",
        "{name: s32, offset: 4, size: 4, signed: true, invalid: true}",
    )
    # ff | 80 | 0x8000 little-endian = 00 80 | 0x80000000 little-endian = 00 00 00 80
    assert little.encode({}) == bytes.fromhex("ff80 0080 00000080")
    big = codec(
        "{name: u16, offset: 0, size: 2, invalid: true}",
        "{name: s16, offset: 2, size: 2, signed: true, invalid: true}",
        "{name: u32, offset: 4, size: 4, invalid: true}",
        top="byte_order: big\n",
    )
    # ff ff | 0x8000 big-endian = 80 00 | ff ff ff ff
    assert big.encode({}) == bytes.fromhex("ffff 8000 ffffffff")
    decoded = big.decode(bytes.fromhex("ffff 8000 ffffffff"))
    assert all(math.isnan(float(v)) for v in decoded.values())
    assert big.decode(bytes.fromhex("0001 0000 00000000")) == {"u16": 1, "s16": 0, "u32": 0}


def test_unused_fields_and_missing_values_carry_the_marker() -> None:
    soc = BASE.frame(0x355)
    # soc 76 = 4c 00; soh missing -> ff ff; soc_hires (invalid, u16) ff ff; spare (invalid, s16) = 0x8000 -> 00 80.
    assert soc.encode({"soc_pct": 76}) == bytes.fromhex("4c00 ffff ffff 0080")
    assert soc.encode({"soc_pct": 76, "soh_pct": math.nan}) == bytes.fromhex("4c00 ffff ffff 0080")
    assert soc.encode({"soc_pct": 76, "soh_pct": None}) == bytes.fromhex("4c00 ffff ffff 0080")  # type: ignore[dict-item]
    # soh 100 = 64 00.
    assert soc.encode({"soc_pct": 76, "soh_pct": 100}) == bytes.fromhex("4c00 6400 ffff 0080")
    # A real value never reads as "not available": 70000 saturates at 0xFFFE, one short of the marker.
    assert soc.encode({"soc_pct": 76, "soh_pct": 70000}) == bytes.fromhex("4c00 feff ffff 0080")
    decoded = soc.decode(bytes.fromhex("4c00 ffff ffff 0080"))
    assert decoded["soc"] == 76
    assert math.isnan(float(decoded["soh"])) and math.isnan(float(decoded["soc_hires"]))
    assert math.isnan(float(decoded["spare"]))


def test_a_signed_field_with_a_marker_saturates_one_above_it() -> None:
    frame = codec("{name: i, offset: 0, size: 2, signed: true, value: current_a, invalid_when_missing: true}")
    # -40000 saturates at -32767 = 0x8001 (01 80), not at the marker 0x8000.
    assert frame.encode({"current_a": -40000}) == bytes.fromhex("0180") + bytes(6)
    assert frame.encode({}) == bytes.fromhex("0080") + bytes(6)


def test_missing_or_nan_value_without_a_marker_is_still_an_error() -> None:
    soc = BASE.frame(0x355)
    with pytest.raises(EncodeError) as missing:
        soc.encode({"soh_pct": 100})
    assert str(missing.value) == "frame 0x355 field 'soc': missing value 'soc_pct'"
    with pytest.raises(EncodeError) as none:
        soc.encode({"soc_pct": None})  # type: ignore[dict-item]
    assert str(none.value) == "frame 0x355 field 'soc': missing value 'soc_pct'"
    with pytest.raises(EncodeError) as nan:
        soc.encode({"soc_pct": math.nan})
    assert str(nan.value) == "frame 0x355 field 'soc': value 'soc_pct' is NaN"


def test_sma_ranges_clamp() -> None:
    limits = BASE.frame(0x351)
    values = {
        "charge_voltage_limit_v": 70.0,  # above 63 V -> 630 = 0x0276 -> 76 02
        "charge_current_limit_a": 150.0,  # above 120 A -> 1200 = 0x04B0 -> b0 04
        "discharge_current_limit_a": -5.0,  # below 0 -> 00 00
        "discharge_voltage_limit_v": 30.0,  # below 41 V -> 410 = 0x019A -> 9a 01
    }
    assert limits.encode(values) == bytes.fromhex("7602 b004 0000 9a01")
    inside = {
        "charge_voltage_limit_v": 55.2,  # 552 = 0x0228
        "charge_current_limit_a": 100.0,  # 1000 = 0x03E8
        "discharge_current_limit_a": 120.0,  # 1200 = 0x04B0
        "discharge_voltage_limit_v": 44.8,  # 448 = 0x01C0
    }
    assert limits.encode(inside) == bytes.fromhex("2802 e803 b004 c001")


# --- timing, modes, supervision metadata ----------------------------------------------------------------------


def test_timing_defaults_and_overrides() -> None:
    timing = {frame.can_id: (frame.period_s, frame.min_gap_s) for frame in BASE.frames}
    assert timing == {0x351: (0.5, 0.2), 0x355: (0.5, 0.2), 0x35A: (1.0, 0.2), 0x35E: (0.5, 0.2)}
    pylontech = load_profile("pylontech-can")
    assert {(frame.period_s, frame.min_gap_s) for frame in pylontech.frames} == {(1.0, 0.0)}


def test_request_mode_metadata() -> None:
    assert REQUEST.mode is SendMode.REQUEST
    assert REQUEST.request_id == 0x301
    assert [frame.period_s for frame in REQUEST.frames] == [0.0, 0.0]
    assert REQUEST.listen_ids == (0x301,)
    assert BASE.mode is SendMode.BROADCAST and BASE.request_id is None
    # Big-endian: CVL 55.2 V = 552 = 0x0228 -> 02 28; CCL 100 A = 0x03E8 -> 03 e8; DCL 180 A = 0x0708 -> 07 08.
    payload = REQUEST.frame(0x311).encode(
        {"charge_voltage_limit_v": 55.2, "charge_current_limit_a": 100.0, "discharge_current_limit_a": 180.0}
    )
    assert payload == bytes.fromhex("0228 03e8 0708 0000")


def test_supervision_metadata_and_defaults() -> None:
    assert BASE.heartbeat is not None
    assert (BASE.heartbeat.can_id, BASE.heartbeat.timeout_s) == (0x305, 5)
    assert (BASE.heartbeat.on_lost, BASE.heartbeat.retry_after_s) == (OnLost.STOP, 30)
    assert BASE.stale is StaleAction.ZEROS
    plain = load_profile_text(HEADER + "heartbeat: {id: 0x305}\nframes: []\n" + HEARTBEAT_FRAME, "t.yaml")
    assert plain.heartbeat is not None
    assert (plain.heartbeat.timeout_s, plain.heartbeat.on_lost, plain.heartbeat.retry_after_s) == (
        10.0,
        OnLost.KEEP_SENDING,
        None,
    )
    assert plain.stale is StaleAction.ZEROS


# --- inverter values -----------------------------------------------------------------------------------------


def test_inverter_frames_decode_into_named_values() -> None:
    measurements = BASE.inverter_frame(0x305)
    assert measurements is not None
    # 53.1 V = 531 = 0x0213 -> 13 02; -12.5 A = -125 = 0xFF83 -> 83 ff; 23.4 °C = 234 = 0x00EA -> ea 00; SOC 76 %.
    data = bytes.fromhex("1302 83ff ea00 4c00")
    assert measurements.decode_values(data) == {
        "inverter_voltage_v": 53.1,
        "inverter_current_a": -12.5,
        "inverter_temperature_c": 23.4,
        "inverter_soc_pct": 76,
    }
    assert set(measurements.decode_values(data)) <= set(INVERTER_VALUE_NAMES)
    assert not set(INVERTER_VALUE_NAMES) & set(NUMERIC_VALUES), "inverter names never shadow battery values"
    assert BASE.listen_ids == (0x305,)


# --- extends -------------------------------------------------------------------------------------------------


def test_variant_states_only_what_differs() -> None:
    assert VARIANT.name == "features-variant"
    assert VARIANT.extends == "features-base"
    assert VARIANT.inverters == BASE.inverters  # inherited
    assert VARIANT.aliases == ()
    # 0x35E removed, 0x379 added at the end; the new top-level min_gap_s reaches inherited frames.
    assert [(f.can_id, f.period_s, f.min_gap_s, f.dlc) for f in VARIANT.frames] == [
        (0x351, 0.5, 0.1, 8),
        (0x355, 0.5, 0.1, 8),
        (0x35A, 1.0, 0.1, 6),
        (0x379, 0.5, 0.1, 2),
    ]
    # 0x355: spare removed, soh replaced in place (no marker any more); soc_hires inherited.
    soc = VARIANT.frame(0x355)
    assert [field.name for field in soc.spec.fields] == ["soc", "soh", "soc_hires"]
    # soc 76 = 4c 00; soh 100 = 64 00; soc_hires ff ff; bytes 6-7 now unused = 00 00.
    assert soc.encode({"soc_pct": 76, "soh_pct": 100}) == bytes.fromhex("4c00 6400 ffff 0000")
    with pytest.raises(EncodeError):
        soc.encode({"soc_pct": 76})  # the replaced soh has no marker
    # Mappings merge key by key: id and timeout from the base, on_lost from the variant, retry removed (null).
    assert VARIANT.heartbeat is not None
    assert (VARIANT.heartbeat.can_id, VARIANT.heartbeat.timeout_s) == (0x305, 5)
    assert (VARIANT.heartbeat.on_lost, VARIANT.heartbeat.retry_after_s) == (OnLost.KEEP_SENDING, None)
    assert (VARIANT.silence_after_s, VARIANT.stale) == (60, StaleAction.SILENCE)
    assert [f.can_id for f in VARIANT.inverter_frames] == [0x305]


def test_extends_a_builtin_by_name(tmp_path: Path) -> None:
    path = tmp_path / "goodwe-ish.yaml"
    path.write_text(
        "name: goodwe-ish\ndescription: pylontech-can with another name\nextends: pylontech-can\n"
        "frames:\n  - id: 0x35E\n    fields:\n"
        "      - {name: manufacturer, offset: 0, size: 8, text: GOODWE, pad: space}\n",
        encoding="utf-8",
    )
    profile = load_profile(str(path))
    base = load_profile("pylontech-can")
    assert profile.extends == "pylontech-can"
    assert [f.can_id for f in profile.frames] == [f.can_id for f in base.frames]
    assert profile.frame(0x35E).encode({}) == b"GOODWE  "
    assert [f.spec for f in profile.frames[:-1]] == [f.spec for f in base.frames[:-1]]
    assert profile.heartbeat == base.heartbeat and profile.inverters == base.inverters


def test_the_readme_example_loads(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[1] / "profiles" / "README.md").read_text(encoding="utf-8")
    example = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    profile = load_profile(str(write(tmp_path, "sol-ark.yaml", example)))
    assert profile.extends == "pylontech-can"
    assert [(f.can_id, f.dlc) for f in profile.frames] == [
        (0x351, 8),
        (0x355, 8),
        (0x356, 8),
        (0x359, 8),
        (0x35C, 8),
        (0x35E, 8),
        (0x379, 8),
    ]
    # 280 Ah = 0x0118 -> 18 01, then six zero bytes.
    assert profile.frame(0x379).encode({"capacity_ah": 280}) == bytes.fromhex("1801") + bytes(6)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


VALID_BASE = (
    HEADER.replace("name: tiny", "name: base")
    + "frames:\n"
    + frame("{name: soc, offset: 0, size: 2, value: soc_pct}", can_id="0x355")
)


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        (
            "name: v\nextends: pylontech\n",
            "{path}: extends: unknown profile 'pylontech' (did you mean 'pylontech-can'?)",
        ),
        ("name: v\nextends: nope.yaml\n", "{path}: extends: {dir}/nope.yaml: cannot read: No such file or directory"),
        ("name: v\nextends: 3\n", "{path}: extends must be a profile name or a path, got 3"),
        ("extends: base.yaml\n", "{path}: missing key 'name' (a profile that extends another needs its own name)"),
        ("name: v\nextends: base.yaml\nremove_frames: [0x123]\n", "{path}: remove_frames: the base has no frame 0x123"),
        (
            "name: v\nextends: base.yaml\nframes:\n  - {id: 0x355, remove_fields: [nope]}\n",
            "{path}: frame 0x355: remove_fields: the base frame has no field 'nope'",
        ),
        (
            "name: v\nextends: base.yaml\nframes:\n  - {id: 0x400, remove_fields: [soc]}\n",
            "{path}: frame 0x400: remove_fields applies only to a frame of the base",
        ),
        (
            "name: v\nextends: base.yaml\nframes:\n  - {dlc: 2}\n",
            "{path}: frames[0]: missing key 'id' (frames merge with the base by id)",
        ),
        (
            "name: v\nextends: base.yaml\nframes:\n  - {id: 0x355, fields: [{offset: 0}]}\n",
            "{path}: frame 0x355 fields[0]: missing key 'name' (fields merge with the base by name)",
        ),
        # A problem the merge creates is the variant's: it names the variant's file.
        (
            "name: v\nextends: base.yaml\nframes:\n  - id: 0x355\n    fields:\n"
            "      - {name: soh, offset: 1, size: 2, value: soh_pct}\n",
            "{path}: frame 0x355 field 'soh': overlaps field 'soc' (bytes 0-1)",
        ),
        (
            "name: v\nextends: base.yaml\nframes:\n  - {id: 0x355, dlc: 1}\n",
            "{path}: frame 0x355 field 'soc': bytes 0-1 do not fit in dlc 1",
        ),
    ],
    ids=[
        "unknown extends name",
        "unknown extends path",
        "extends not a string",
        "variant without name",
        "remove unknown frame",
        "remove unknown field",
        "remove_fields on a new frame",
        "variant frame without id",
        "variant field without name",
        "merged overlap",
        "merged dlc too short",
    ],
)
def test_extends_errors_name_the_file(tmp_path: Path, variant: str, expected: str) -> None:
    write(tmp_path, "base.yaml", VALID_BASE)
    path = write(tmp_path, "variant.yaml", variant)
    with pytest.raises(ProfileError) as error:
        load_profile(str(path))
    assert str(error.value) == expected.format(path=path, dir=tmp_path)


def test_an_error_in_the_base_names_the_base(tmp_path: Path) -> None:
    base = write(tmp_path, "base.yaml", VALID_BASE.replace("size: 2", "size: 3"))
    path = write(tmp_path, "variant.yaml", "name: v\nextends: base.yaml\n")
    with pytest.raises(ProfileError) as error:
        load_profile(str(path))
    assert str(error.value) == f"{base}: frame 0x355 field 'soc': size 3 not one of 1, 2, 4"


def test_extends_cycle_is_detected(tmp_path: Path) -> None:
    a = write(tmp_path, "a.yaml", "name: a\nextends: b.yaml\n")
    b = write(tmp_path, "b.yaml", "name: b\nextends: a.yaml\n")
    with pytest.raises(ProfileError) as error:
        load_profile(str(a))
    assert str(error.value) == f"{b}: extends cycle: {a} -> {b} -> {a}"
    itself = write(tmp_path, "self.yaml", "name: s\nextends: self.yaml\n")
    with pytest.raises(ProfileError) as error:
        load_profile(str(itself))
    assert str(error.value) == f"{itself}: extends cycle: {itself} -> {itself}"


def test_a_chain_of_three(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", VALID_BASE)
    write(tmp_path, "middle.yaml", "name: middle\nextends: base.yaml\nbitrate: 250000\ninverters: [m]\n")
    path = write(tmp_path, "top.yaml", "name: top\nextends: middle.yaml\ninverters: [t]\n")
    profile = load_profile(str(path))
    assert (profile.name, profile.extends, profile.bitrate, profile.inverters) == ("top", "middle", 250000, ("t",))


# --- built-ins and aliases -----------------------------------------------------------------------------------


def test_builtin_profiles_listing() -> None:
    infos = builtin_profiles()
    assert [info.name for info in infos] == builtin_profile_names()
    pylontech = next(info for info in infos if info.name == "pylontech-can")
    assert pylontech.transport == "can" and pylontech.extends is None
    assert pylontech.inverters[0].startswith("Deye")
    every_alias = [alias for info in infos for alias in info.aliases]
    assert len(every_alias) == len(set(every_alias)), "no alias is claimed twice"
    assert not set(every_alias) & set(builtin_profile_names())
    assert builtin_profile_names(aliases=True) == sorted([*builtin_profile_names(), *every_alias])


DEYE = HEADER.replace("name: tiny", "name: deye") + "aliases: [sunsynk]\nframes: []\n"


@pytest.fixture
def builtin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory of our own standing in for the built-in profiles."""
    monkeypatch.setattr(loader_module, "_builtin_dir", lambda: tmp_path)
    return tmp_path


def test_a_profile_loads_by_its_alias(builtin_dir: Path) -> None:
    write(builtin_dir, "deye.yaml", DEYE)
    write(builtin_dir, "sol-ark.yaml", "name: sol-ark\ndescription: dlc 8\nextends: sunsynk\n")
    assert load_profile("sunsynk").name == "deye"
    assert load_profile("sunsynk").aliases == ("sunsynk",)
    assert builtin_profile_names() == ["deye", "sol-ark"]
    assert builtin_profile_names(aliases=True) == ["deye", "sol-ark", "sunsynk"]
    infos = builtin_profiles()
    assert [(i.name, i.aliases, i.extends) for i in infos] == [("deye", ("sunsynk",), None), ("sol-ark", (), "deye")]
    with pytest.raises(ProfileNotFoundError) as error:
        load_profile("sunsynck")
    assert str(error.value) == "unknown profile 'sunsynck' (did you mean 'sunsynk'?)"


def test_alias_clash_between_two_builtin_profiles(builtin_dir: Path) -> None:
    write(builtin_dir, "deye.yaml", DEYE)
    clash = write(builtin_dir, "solark.yaml", DEYE.replace("name: deye", "name: solark"))
    with pytest.raises(ProfileError) as error:
        builtin_profiles()
    assert str(error.value) == f"{clash}: alias 'sunsynk' is also an alias of {builtin_dir / 'deye.yaml'}"
    with pytest.raises(ProfileError) as by_alias:
        load_profile("sunsynk")
    assert str(by_alias.value) == str(error.value)


def test_alias_that_is_another_builtins_name(builtin_dir: Path) -> None:
    write(builtin_dir, "deye.yaml", DEYE)
    clash = write(builtin_dir, "a.yaml", HEADER.replace("name: tiny", "name: a") + "aliases: [deye]\nframes: []\n")
    with pytest.raises(ProfileError) as error:
        builtin_profiles()
    assert str(error.value) == f"{clash}: alias 'deye' is the name of the built-in profile {builtin_dir / 'deye.yaml'}"
