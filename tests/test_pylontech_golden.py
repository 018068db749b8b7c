"""Golden bytes of the built-in ``pylontech-can`` profile, and an independent cross-check with cantools.

The expected bytes are worked out by hand in the comments (PYLON CANBUS v1.2: little-endian, low byte first),
never by calling our encoder. The cantools check decodes our bytes with the third-party DBC of
plewka/PylontechUSX00C_CAN2MQTT, read from ``../shared/dbc`` next to the repository (GPL-3.0: it is never
copied into this repository). Without ``../shared`` that check is skipped, except in CI (``CI=true``), where
it fails.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import pytest

from gateway.profiles import EncodeError, Profile, load_profile
from gateway.values import FLAG_VALUES, NUMERIC_VALUES, Value

SHARED_DBC_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "dbc"
THIRD_PARTY_DBC = SHARED_DBC_DIR / "pylontech_plewka.dbc"
OUR_SUPPLEMENT_DBC = SHARED_DBC_DIR / "pylontech_lv_supplement_OURS.dbc"


def golden_values() -> dict[str, Value]:
    """One fixed set of published values: every name present, most of them zero or false."""
    values: dict[str, Value] = {name: 0.0 for name in NUMERIC_VALUES}
    values.update(dict.fromkeys(FLAG_VALUES, False))
    values.update(
        charge_voltage_limit_v=55.2,
        charge_current_limit_a=100.0,
        discharge_current_limit_a=150.0,
        discharge_voltage_limit_v=48.0,
        soc_pct=76.0,
        soh_pct=100.0,
        pack_voltage_v=53.12,
        current_a=-12.3,
        temperature_c=23.4,
        module_count=1,
        charge_enable=True,
        discharge_enable=False,
        force_charge=False,
        full_charge_request=True,
        # As published for the alarms cell over-voltage, MOS over-temperature, charge over-current and
        # 309_B (gateway/alarms.py sorts them into these groups).
        fault_over_voltage=True,
        fault_over_temperature=True,
        fault_charge_over_current=True,
        fault_system=True,
        comm_alarm=True,
    )
    return values


# Every frame of the profile for golden_values(), worked out by hand.
GOLDEN: dict[int, bytes] = {
    # 0x351 limits, u16/s16/s16/u16 little-endian:
    #   CVL 55.2 V / 0.1 = 552 = 0x0228 -> 28 02
    #   CCL 100 A / 0.1 = 1000 = 0x03E8 -> e8 03
    #   DCL 150 A / 0.1 = 1500 = 0x05DC -> dc 05
    #   DVL 48.0 V / 0.1 = 480 = 0x01E0 -> e0 01
    0x351: bytes.fromhex("2802 e803 dc05 e001"),
    # 0x355: SOC 76 % = 0x004C -> 4c 00; SOH 100 % = 0x0064 -> 64 00
    0x355: bytes.fromhex("4c00 6400"),
    # 0x356:
    #   voltage 53.12 V / 0.01 = 5312 = 0x14C0 -> c0 14
    #   current -12.3 A / 0.1 = -123 -> 0x10000 - 123 = 0xFF85 -> 85 ff
    #   temperature 23.4 °C / 0.1 = 234 = 0x00EA -> ea 00
    0x356: bytes.fromhex("c014 85ff ea00"),
    # 0x359 (7 bytes):
    #   byte 0 protection: b1 over-voltage (cell OV) | b3 over-temperature (MOS OT) = 0x02 | 0x08 = 0x0a
    #   byte 1 protection: b0 charge over-current | b3 system error (309_B) = 0x01 | 0x08 = 0x09
    #   byte 2 alarm, mirrors byte 0: 0x0a
    #   byte 3 alarm: b0 charge high current | b3 internal communication failure (comm_alarm) = 0x09
    #   byte 4 module count 1; bytes 5-6 'P' 'N' = 50 4e
    0x359: bytes([0x02 | 0x08, 0x01 | 0x08, 0x02 | 0x08, 0x01 | 0x08, 1]) + b"PN",
    # 0x35C: b7 charge enable | b3 full charge request = 0x80 | 0x08 = 0x88; byte 1 reserved 0
    0x35C: bytes([0x80 | 0x08, 0x00]),
    # 0x35E: "PYLON" + 3 spaces = 50 59 4c 4f 4e 20 20 20
    0x35E: bytes.fromhex("50594c4f4e 202020"),
}


@pytest.fixture(scope="module")
def profile() -> Profile:
    return load_profile("pylontech-can")


def test_metadata(profile: Profile) -> None:
    assert profile.name == "pylontech-can"
    assert profile.transport == "can"
    assert profile.bitrate == 500_000
    assert profile.heartbeat is not None
    assert (profile.heartbeat.can_id, profile.heartbeat.timeout_s) == (0x305, 10)
    assert profile.silence_after_s == 60
    assert any("v1.2" in source for source in profile.sources)
    assert "Deye" in " ".join(profile.inverters)
    assert [(f.can_id, f.dlc, f.period_s) for f in profile.frames] == [
        (0x351, 8, 1.0),
        (0x355, 4, 1.0),
        (0x356, 6, 1.0),
        (0x359, 7, 1.0),
        (0x35C, 2, 1.0),
        (0x35E, 8, 1.0),
    ]
    assert [(f.can_id, f.dlc) for f in profile.inverter_frames] == [(0x305, 8)]


@pytest.mark.parametrize("can_id", sorted(GOLDEN), ids=lambda can_id: f"{can_id:#05x}")
def test_golden_frame(profile: Profile, can_id: int) -> None:
    assert profile.frame(can_id).encode(golden_values()) == GOLDEN[can_id]


def test_encode_all_is_every_golden_frame_in_order(profile: Profile) -> None:
    assert profile.encode_all(golden_values()) == list(GOLDEN.items())


def test_decode_of_golden_bytes(profile: Profile) -> None:
    decoded = {can_id: profile.frame(can_id).decode(data) for can_id, data in GOLDEN.items()}
    assert decoded[0x351] == {
        "charge_voltage_limit": 55.2,
        "charge_current_limit": 100.0,
        "discharge_current_limit": 150.0,
        "discharge_voltage_limit": 48.0,
    }
    assert decoded[0x355] == {"soc": 76, "soh": 100}
    assert decoded[0x356] == {"voltage": 53.12, "current": -12.3, "temperature": 23.4}
    assert decoded[0x359] == {
        "protect_over_voltage": True,
        "protect_under_voltage": False,
        "protect_over_temperature": True,
        "protect_under_temperature": False,
        "protect_discharge_over_current": False,
        "protect_charge_over_current": True,
        "protect_system_error": True,
        "alarm_high_voltage": True,
        "alarm_low_voltage": False,
        "alarm_high_temperature": True,
        "alarm_low_temperature": False,
        "alarm_discharge_high_current": False,
        "alarm_charge_high_current": True,
        "alarm_internal_communication": True,
        "module_count": 1,
        "pn": "PN",
    }
    assert decoded[0x35C] == {
        "charge_enable": True,
        "discharge_enable": False,
        "force_charge_1": False,
        "force_charge_2": False,
        "full_charge_request": True,
    }
    assert decoded[0x35E] == {"manufacturer": "PYLON"}


def test_heartbeat_frame_is_recognised_and_decodes_to_nothing(profile: Profile) -> None:
    heartbeat = profile.inverter_frame(0x305)
    assert heartbeat is not None
    assert heartbeat.decode(bytes(8)) == {}
    assert profile.inverter_frame(0x351) is None


@pytest.mark.parametrize(
    ("name", "value", "can_id", "expected"),
    [
        # A negative current limit on a field sent as "positive" saturates at 0, never wraps to 0xFFxx.
        ("charge_current_limit_a", -5.0, 0x351, bytes.fromhex("2802 0000 dc05 e001")),
        ("discharge_current_limit_a", -0.04, 0x351, bytes.fromhex("2802 e803 0000 e001")),
        # Huge limits saturate at the s16 maximum 32767 = 0x7FFF -> ff 7f.
        ("charge_current_limit_a", 5000.0, 0x351, bytes.fromhex("2802 ff7f dc05 e001")),
        ("discharge_current_limit_a", math.inf, 0x351, bytes.fromhex("2802 e803 ff7f e001")),
        # CVL 7000 V / 0.1 = 70000 > u16 max 65535 = 0xFFFF -> ff ff; negative -> 00 00.
        ("charge_voltage_limit_v", 7000.0, 0x351, bytes.fromhex("ffff e803 dc05 e001")),
        ("charge_voltage_limit_v", -1.0, 0x351, bytes.fromhex("0000 e803 dc05 e001")),
        # s16 minimum -32768 = 0x8000 -> 00 80.
        ("current_a", -5000.0, 0x356, bytes.fromhex("c014 0080 ea00")),
        ("soc_pct", 70000, 0x355, bytes.fromhex("ffff 6400")),
        # u8 module count: 300 saturates at 255.
        ("module_count", 300, 0x359, bytes([0x0A, 0x09, 0x0A, 0x09, 0xFF]) + b"PN"),
    ],
)
def test_saturation(profile: Profile, name: str, value: float, can_id: int, expected: bytes) -> None:
    values = golden_values()
    values[name] = value
    assert profile.frame(can_id).encode(values) == expected


def test_every_flag_maps_to_the_spec_bit(profile: Profile) -> None:
    """Each fault group alone sets exactly the bits the spec table names for it (byte, mask)."""
    bits = {
        "fault_over_voltage": [(0, 0x02), (2, 0x02)],
        "fault_under_voltage": [(0, 0x04), (2, 0x04)],
        "fault_over_temperature": [(0, 0x08), (2, 0x08)],
        "fault_under_temperature": [(0, 0x10), (2, 0x10)],
        "fault_discharge_over_current": [(0, 0x80), (2, 0x80)],
        "fault_charge_over_current": [(1, 0x01), (3, 0x01)],
        "fault_system": [(1, 0x08)],
        # PYLON CANBUS v1.2 p.3, tables 1-4: no bit names an imbalance, and "system error" would fault-stop
        # the inverter over a mere imbalance: it sets nothing.
        "fault_cell_imbalance": [],
        "comm_alarm": [(3, 0x08)],
    }
    assert set(bits) == {name for name in FLAG_VALUES if name.startswith("fault_")} | {"comm_alarm"}
    quiet = {name: (False if name in FLAG_VALUES else value) for name, value in golden_values().items()}
    for name, expected in bits.items():
        payload = bytearray(5)
        for index, mask in expected:
            payload[index] |= mask
        payload[4] = 1
        assert profile.frame(0x359).encode(quiet | {name: True}) == bytes(payload) + b"PN", name
    for name, mask in [
        ("charge_enable", 0x80),
        ("discharge_enable", 0x40),
        # p.4-5, table 5: request force charge I (b5) and II (b4), both for a force charge.
        ("force_charge", 0x20 | 0x10),
        ("full_charge_request", 0x08),
    ]:
        assert profile.frame(0x35C).encode(quiet | {name: True}) == bytes([mask, 0]), name


def test_round_trip(profile: Profile) -> None:
    """decode(encode(x)) gives x back, and encoding the decoded values gives the same bytes."""
    values = golden_values()
    for frame in profile.frames:
        payload = frame.encode(values)
        assert len(payload) == frame.dlc
        decoded = frame.decode(payload)
        again = dict(values)
        for field in frame.spec.fields:
            if field.value is not None:  # numeric fields map 1:1 to value names
                assert decoded[field.name] == pytest.approx(values[field.value]), field.name
                again[field.value] = decoded[field.name]
        assert frame.encode(again) == payload


def test_encode_errors_name_frame_field_and_value(profile: Profile) -> None:
    values = golden_values()
    del values["soh_pct"]
    with pytest.raises(EncodeError) as missing:
        profile.encode_all(values)
    assert str(missing.value) == "frame 0x355 field 'soh': missing value 'soh_pct'"
    with pytest.raises(EncodeError) as nan:
        profile.frame(0x351).encode(golden_values() | {"charge_current_limit_a": math.nan})
    assert str(nan.value) == "frame 0x351 field 'charge_current_limit': value 'charge_current_limit_a' is NaN"


# --- independent cross-check with cantools and the third-party DBC ----------------------------------------


def _dbc(path: Path) -> Any:
    """The cantools database at ``path``; skip (or fail under CI=true) when ../shared is missing."""
    if not path.is_file():
        reason = f"{path} not found: the shared research folder ../shared is not next to the repository"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}; the DBC cross-check must run in CI")
        pytest.skip(reason)
    cantools = pytest.importorskip("cantools")
    return cantools.database.load_file(str(path), strict=True)


@pytest.fixture(scope="module")
def third_party_db() -> Any:
    return _dbc(THIRD_PARTY_DBC)


def test_cantools_third_party_dbc(profile: Profile, third_party_db: Any) -> None:
    frames = dict(profile.encode_all(golden_values()))

    def decode(can_id: int) -> dict[str, Any]:
        message = third_party_db.get_message_by_frame_id(can_id)
        assert len(frames[can_id]) >= message.length, f"{can_id:#x} shorter than the DBC's {message.length}"
        return dict(message.decode(frames[can_id], decode_choices=False, allow_excess=False))

    assert decode(0x351) == pytest.approx(
        {
            "Battery_Charge_Voltage": 55.2,
            "Charge_Current_Limitation": 100.0,
            "Discharge_Current_Limitation": 150.0,
        }
    )
    assert decode(0x355) == {"SOC": 76, "SOH": 100}
    assert decode(0x356) == pytest.approx(
        {"Battery_Voltage": 53.12, "Battery_Current": -12.3, "Battery_Temperature": 23.4}
    )
    # The DBC names the spec's protection bytes 0-1 "Alarm_*" and its alarm bytes 2-3 "Warn_*".
    assert decode(0x359) == {
        "Alarm_Over_Voltage": 1,
        "Alarm_Under_Voltage": 0,
        "Alarm_Over_Temperature": 1,
        "Alarm_Under_Temperature": 0,
        "Alarm_Over_Current_Discharge": 0,
        "Alarm_Over_Current_Charge": 1,
        "Alarm_Internal": 1,
        "Warn_High_Voltage": 1,
        "Warn_Low_Voltage": 0,
        "Warn_High_Temperature": 1,
        "Warn_Low_Temperature": 0,
        "Warn_High_Current_Discharge": 0,
        "Warn_High_Current_Charge": 1,
        "Warn_Internal": 1,
        "Pack_Nr": 1,
    }
    assert decode(0x35C) == {"Charge_Enable": 1, "Discharge_Enable": 0, "Charge_Immediately": 0}
    # The DBC splits the name into eight byte signals a..h.
    assert "".join(chr(decode(0x35E)[letter]) for letter in "abcdefgh") == "PYLON   "


def test_cantools_third_party_dbc_saturated_limits(profile: Profile, third_party_db: Any) -> None:
    values = golden_values() | {"charge_current_limit_a": -20.0, "discharge_current_limit_a": 1e6}
    decoded = third_party_db.decode_message(0x351, profile.frame(0x351).encode(values))
    assert decoded["Charge_Current_Limitation"] == 0
    assert decoded["Discharge_Current_Limitation"] == pytest.approx(3276.7)


def test_cantools_our_supplement_dbc(profile: Profile) -> None:
    """Fields the third-party DBC lacks, against our own supplement DBC (not an independent oracle)."""
    db = _dbc(OUR_SUPPLEMENT_DBC)
    values = golden_values() | {"force_charge": True}
    limits = db.decode_message(0x351, profile.frame(0x351).encode(values))
    assert limits["Discharge_Voltage_Limit"] == pytest.approx(48.0)
    requests = db.decode_message(0x35C, profile.frame(0x35C).encode(values))
    assert requests == {
        "Full_Charge_Request": 1,
        "Force_Charge_Request_II": 1,
        "Force_Charge_Request_I": 1,
        "Discharge_Enable": 0,
        "Charge_Enable": 1,
    }


def test_missing_shared_dbc_skips_locally_and_fails_in_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "shared" / "dbc" / "pylontech_plewka.dbc"
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not found"):
        _dbc(missing)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        _dbc(missing)
