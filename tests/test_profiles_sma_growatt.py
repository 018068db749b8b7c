"""The built-in ``sma-sunny-island``, ``victron`` and ``growatt-can`` profiles.

Golden bytes: for one fixed set of values, every frame of each profile, worked out by hand in the comments from
the protocol facts (SMA and Victron little-endian, Growatt big-endian), never by calling our encoder. Then the
behaviour the protocols ask for, on the control loop with a fake clock and a recording sink (as
tests/test_runtime.py drives it): SMA never repeats an id within 200 ms even when the limits fall at every
poll, clamps to the Sunny Island's input ranges and marks unused fields invalid; the Sunny Island's 0x305 is
decoded into inverter values; Growatt sends nothing before a 0x301 and answers each 0x301 with the whole set,
also over a virtual CAN bus with the inverter simulator.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import can
import pytest

from gateway.clock import FakeClock
from gateway.errors import GatewayError, LinkTimeout
from gateway.limits import LimitsSettings
from gateway.model import PackReading
from gateway.profiles import OnLost, Profile, SendMode, load_profile
from gateway.runtime import ControlLoop, FailsafeState, InverterState, LoopSettings
from gateway.sim.inverter import InverterSimulator
from gateway.sim.scenarios import SCENARIOS
from gateway.transport.can_link import CanLink, CanSettings
from gateway.values import FLAG_VALUES, NUMERIC_VALUES, Value

SMA = load_profile("sma-sunny-island")
VICTRON = load_profile("victron")
GROWATT = load_profile("growatt-can")

START_S = 1000.0
EPS_S = 1e-6
BMS_TIMEOUT_S = 5.0
SILENCE_AFTER_S = 15.0
# The normal-charge scenario's pack allows 150 A charge and 200 A discharge; with these caps the limits are
# CCL 100 A (the cap) and DCL 180 A (0.9 × 200 A), CVL 55.2 V (16 × 3.45 V) and DVL 44.8 V (16 × 2.80 V).
CAPS = LimitsSettings(max_charge_current_a=100.0, max_discharge_current_a=250.0)
EXPECTED = {"cvl": 55.2, "ccl": 100.0, "dcl": 180.0, "dvl": 44.8}


def golden_values() -> dict[str, Value]:
    """One fixed set of published values: every name present, most flags false."""
    values: dict[str, Value] = {name: 0.0 for name in NUMERIC_VALUES}
    values.update(dict.fromkeys(FLAG_VALUES, False))
    values.update(
        charge_voltage_limit_v=55.2,
        charge_current_limit_a=100.0,
        discharge_current_limit_a=150.0,
        discharge_voltage_limit_v=44.8,
        soc_pct=76.54,
        soh_pct=100.0,
        pack_voltage_v=53.12,
        current_a=-12.3,
        temperature_c=23.4,
        max_temperature_c=24.5,
        min_temperature_c=18.2,
        max_cell_v=3.412,
        min_cell_v=3.287,
        capacity_ah=280.0,
        remaining_capacity_ah=214.3,
        cycle_count=42,
        module_count=1,
        cell_count=16,
        is_discharging=True,  # -12.3 A
        chemistry_lifepo4=True,
        charge_enable=True,
        discharge_enable=False,
        force_charge=True,
        full_charge_request=False,
        comm_alarm=False,
        # As published for the JK alarms cell over-voltage (group over_voltage) and charge short circuit
        # (group charge_over_current).
        alarm_cell_over_voltage=True,
        alarm_charge_short_circuit=True,
        fault_over_voltage=True,
        fault_charge_over_current=True,
        min_cell_name="Cell 03",
        max_cell_name="Cell 14",
        min_temperature_name="Temp 2",
        max_temperature_name="Temp 1",
    )
    return values


def quiet_values() -> dict[str, Value]:
    """golden_values() with every flag false."""
    return {name: (False if name in FLAG_VALUES else value) for name, value in golden_values().items()}


# --- SMA Sunny Island: golden bytes ---------------------------------------------------------------------------

# 0x35A pairs: per pair, 01 = raised (lower bit), 10 = cleared (upper bit). All four pairs of a byte cleared:
# 10 10 10 10 = 0xAA. Byte 3 (and 7) holds one pair (cell imbalance) at bits 0-1 and reserved bits: 0x02.
SMA_ALL_CLEAR = bytes([0xAA, 0xAA, 0xAA, 0x02] * 2)

SMA_GOLDEN: dict[int, bytes] = {
    # 0x351, u16 / s16 / s16 / u16 little-endian, 0.1 V and 0.1 A:
    #   CVL 55.2 V / 0.1 = 552 = 0x0228 -> 28 02
    #   CCL 100 A / 0.1 = 1000 = 0x03E8 -> e8 03
    #   DCL 150 A / 0.1 = 1500 = 0x05DC -> dc 05
    #   DVL 44.8 V / 0.1 = 448 = 0x01C0 -> c0 01
    0x351: bytes.fromhex("2802 e803 dc05 c001"),
    # 0x355: SOC 76.54 % in 1 % = round(76.54) = 77 = 0x004D -> 4d 00; SOH 100 = 0x0064 -> 64 00;
    #   HiRes SOC 76.54 / 0.01 = 7654 = 0x1DE6 -> e6 1d
    0x355: bytes.fromhex("4d00 6400 e61d"),
    # 0x356: 53.12 V / 0.01 = 5312 = 0x14C0 -> c0 14; -12.3 A / 0.1 = -123 = 0x10000 - 123 = 0xFF85 -> 85 ff;
    #   23.4 °C / 0.1 = 234 = 0x00EA -> ea 00
    0x356: bytes.fromhex("c014 85ff ea00"),
    # 0x35A, cell over-voltage and charge short circuit raised:
    #   byte 0: general raised 01 (bits 0-1) | high voltage raised 01 << 2 | low voltage cleared 10 << 4 |
    #           high temperature cleared 10 << 6 = 0x01 | 0x04 | 0x20 | 0x80 = 0xA5
    #   byte 1: low T, high T charge, low T charge, high discharge current all cleared = 0xAA
    #   byte 2: high charge current raised 01 | contactor cleared 10 << 2 | short circuit raised 01 << 4 |
    #           BMS internal cleared 10 << 6 = 0x01 | 0x08 | 0x10 | 0x80 = 0x99
    #   byte 3: cell imbalance cleared 10 = 0x02
    #   bytes 4-7: the warnings repeat bytes 0-3
    0x35A: bytes([0xA5, 0xAA, 0x99, 0x02] * 2),
    # 0x35B: no event (byte 0 bit 4, preventive shutdown, is 0); 8 bytes
    0x35B: bytes(8),
    # 0x35E: "JK-BMS" + 2 spaces = 4a 4b 2d 42 4d 53 20 20
    0x35E: bytes.fromhex("4a4b2d424d53 2020"),
    # 0x35F: battery type, BMS version invalid = ff ff, ff ff; capacity 280 Ah = 0x0118 -> 18 01;
    #   manufacturer id invalid = ff ff
    0x35F: bytes.fromhex("ffff ffff 1801 ffff"),
}


def test_sma_metadata() -> None:
    assert (SMA.name, SMA.transport, SMA.bitrate, SMA.mode) == ("sma-sunny-island", "can", 500_000, SendMode.BROADCAST)
    assert SMA.heartbeat is not None
    assert (SMA.heartbeat.can_id, SMA.heartbeat.timeout_s, SMA.heartbeat.on_lost) == (0x305, 10, OnLost.KEEP_SENDING)
    assert SMA.silence_after_s == 60
    assert "60 s" in SMA.description and "Sunny Island" in " ".join(SMA.inverters)
    assert any("FSS-ConnectingBat" in source for source in SMA.sources)
    # Every frame every 0.5 s (well inside the Sunny Island's 60 s timeout), never twice within 200 ms.
    assert [(f.can_id, f.dlc, f.period_s, f.min_gap_s) for f in SMA.frames] == [
        (0x351, 8, 0.5, 0.2),
        (0x355, 6, 0.5, 0.2),
        (0x356, 6, 0.5, 0.2),
        (0x35A, 8, 0.5, 0.2),
        (0x35B, 8, 0.5, 0.2),
        (0x35E, 8, 0.5, 0.2),
        (0x35F, 8, 0.5, 0.2),
    ]
    assert [(f.can_id, f.dlc, f.period_s) for f in SMA.inverter_frames] == [(0x305, 8, 1.0), (0x306, 8, 1.0)]


@pytest.mark.parametrize("can_id", sorted(SMA_GOLDEN), ids=lambda can_id: f"{can_id:#05x}")
def test_sma_golden_frame(can_id: int) -> None:
    assert SMA.frame(can_id).encode(golden_values()) == SMA_GOLDEN[can_id]


def test_sma_encode_all_is_every_golden_frame_in_order() -> None:
    assert SMA.encode_all(golden_values()) == list(SMA_GOLDEN.items())


def test_sma_all_clear_alarms() -> None:
    assert SMA.frame(0x35A).encode(quiet_values()) == SMA_ALL_CLEAR


# Each flag alone raises exactly these pairs, (byte, low bit), in the alarm bytes 0-3; the warnings repeat
# them four bytes on. Raising a cleared pair turns 10 into 01: the byte XOR (0b11 << bit).
GENERAL = (0, 0)
SMA_PAIRS: dict[str, list[tuple[int, int]]] = {
    "fault_over_voltage": [GENERAL, (0, 2)],
    "fault_under_voltage": [GENERAL, (0, 4)],
    "fault_over_temperature": [GENERAL, (0, 6)],
    "fault_under_temperature": [GENERAL, (1, 0), (1, 4)],  # low T, and low T charge (JK: charge side only)
    "fault_discharge_over_current": [GENERAL, (1, 6)],
    "fault_charge_over_current": [GENERAL, (2, 0)],
    "fault_system": [GENERAL, (2, 6)],
    "comm_alarm": [GENERAL, (2, 6)],  # stale BMS data: BMS internal
    "alarm_charge_over_temperature": [(1, 2)],  # high T charge (it comes with fault_over_temperature)
    "alarm_charge_mos_fault": [(2, 2)],  # contactor
    "alarm_discharge_mos_fault": [(2, 2)],
    "alarm_discharge_on_failed": [(2, 2)],
    "alarm_charge_short_circuit": [(2, 4)],  # short circuit
    "alarm_discharge_short_circuit": [(2, 4)],
}


def test_sma_a_cell_imbalance_is_a_warning_only() -> None:
    # SMA FSS-ConnectingBat-TI-en-10 p.25: "External Alarm 13 Cell Imbalance" is byte 3 bits 0-1, and an
    # alarm stops the Sunny Island; its warning twin is byte 7 bits 0-1 (p.28). A cell imbalance is no
    # protection the BMS acts on: the warnings "general" (byte 4 bit 0) and "cell imbalance" are raised, the
    # alarm pair stays cleared (10).
    expected = bytearray(SMA_ALL_CLEAR)
    for byte, bit in ((4, 0), (7, 0)):
        expected[byte] ^= 0b11 << bit
    assert SMA.frame(0x35A).encode(quiet_values() | {"fault_cell_imbalance": True}) == bytes(expected)


@pytest.mark.parametrize("flag", sorted(SMA_PAIRS))
def test_sma_each_flag_raises_its_pairs(flag: str) -> None:
    expected = bytearray(SMA_ALL_CLEAR)
    for byte, bit in SMA_PAIRS[flag]:
        expected[byte] ^= 0b11 << bit
        expected[byte + 4] ^= 0b11 << bit
    assert SMA.frame(0x35A).encode(quiet_values() | {flag: True}) == bytes(expected)


def test_sma_every_fault_group_raises_an_alarm() -> None:
    faults = {name for name in FLAG_VALUES if name.startswith("fault_")} - {"fault_cell_imbalance"}
    assert faults <= set(SMA_PAIRS)
    flags = {flag for field in SMA.frame(0x35A).spec.fields for flag in field.flags}
    assert flags == set(SMA_PAIRS) | {"fault_cell_imbalance"}, "the tables above cover every flag the frame carries"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        # CVL 41-63 V: 70 V -> 63.0 V = 630 = 0x0276 -> 76 02; 30 V -> 41.0 V = 410 = 0x019A -> 9a 01
        ("charge_voltage_limit_v", 70.0, bytes.fromhex("7602 e803 dc05 c001")),
        ("charge_voltage_limit_v", 30.0, bytes.fromhex("9a01 e803 dc05 c001")),
        # CCL/DCL 0-1200 A: 1500 A -> 1200 A = 12000 = 0x2EE0 -> e0 2e; -5 A -> 0 A; inf -> 1200 A
        ("charge_current_limit_a", 1500.0, bytes.fromhex("2802 e02e dc05 c001")),
        ("charge_current_limit_a", -5.0, bytes.fromhex("2802 0000 dc05 c001")),
        ("discharge_current_limit_a", math.inf, bytes.fromhex("2802 e803 e02e c001")),
        ("discharge_current_limit_a", -0.04, bytes.fromhex("2802 e803 0000 c001")),
        # DVL 41-48 V: 40 V -> 41.0 V = 410 -> 9a 01; 50 V -> 48.0 V = 480 = 0x01E0 -> e0 01
        ("discharge_voltage_limit_v", 40.0, bytes.fromhex("2802 e803 dc05 9a01")),
        ("discharge_voltage_limit_v", 50.0, bytes.fromhex("2802 e803 dc05 e001")),
    ],
)
def test_sma_out_of_range_limits_are_clamped(name: str, value: float, expected: bytes) -> None:
    assert SMA.frame(0x351).encode(golden_values() | {name: value}) == expected


@pytest.mark.parametrize("capacity_ah", [0.0, 280.0, 1e6])
def test_sma_unused_fields_carry_the_invalid_marker(capacity_ah: float) -> None:
    payload = SMA.frame(0x35F).encode(golden_values() | {"capacity_ah": capacity_ah})
    # Battery type, BMS version (bytes 0-3) and manufacturer id (bytes 6-7): 0xFFFF, whatever the values.
    assert payload[0:4] == b"\xff\xff\xff\xff" and payload[6:8] == b"\xff\xff"
    decoded = SMA.frame(0x35F).decode(payload)
    assert all(math.isnan(float(decoded[name])) for name in ("battery_type", "bms_version", "manufacturer_id"))
    # A real capacity saturates at the u16 range, never wraps: 1e6 Ah -> 65535 = ff ff.
    assert decoded["capacity"] == min(capacity_ah, 65535)


def test_sma_decode_of_golden_bytes() -> None:
    decoded = {can_id: SMA.frame(can_id).decode(data) for can_id, data in SMA_GOLDEN.items()}
    assert decoded[0x351] == {
        "charge_voltage_limit": 55.2,
        "charge_current_limit": 100.0,
        "discharge_current_limit": 150.0,
        "discharge_voltage_limit": 44.8,
    }
    assert decoded[0x355] == {"soc": 77, "soh": 100, "soc_hires": 76.54}
    assert decoded[0x356] == {"voltage": 53.12, "current": -12.3, "temperature": 23.4}
    raised = {name for name, state in decoded[0x35A].items() if state is True}
    assert raised == {
        f"{kind}_{what}"
        for kind in ("alarm", "warning")
        for what in ("general", "high_voltage", "high_charge_current", "short_circuit")
    }
    assert decoded[0x35E] == {"manufacturer": "JK-BMS"}


# The Sunny Island's own frames, by hand from SMA FSS-ConnectingBat-TI-en-10 p.30:
#   0x305: 52.1 V / 0.1 = 521 = 0x0209 -> 09 02; current S16 0.1 A "(negative while charging)": the SI sends
#          -123 = 0xFF85 -> 85 ff while CHARGING 12.3 A, which is +12.3 A in our convention (+ charging; as
#          SMAVenusDriver dbus-sma.py inverts it); 23.0 °C / 0.1 = 230 = 0x00E6 -> e6 00;
#          SOC S16 99.0 % / 0.1 = 990 = 0x03DE -> de 03
#   0x306: SOH 97 % = 0x0061 -> 61 00; charge procedure 1; operating state 2; active error 0x0123 -> 23 01;
#          charge-voltage set-point 55.0 V / 0.1 = 550 = 0x0226 -> 26 02
SI_305 = bytes.fromhex("0902 85ff e600 de03")
SI_306 = bytes.fromhex("6100 01 02 2301 2602")
SI_VALUES = {
    "inverter_voltage_v": 52.1,
    "inverter_current_a": 12.3,
    "inverter_temperature_c": 23.0,
    "inverter_soc_pct": 99.0,
    "inverter_soh_pct": 97,
    "inverter_charge_procedure": 1,
    "inverter_operating_state": 2,
    "inverter_error_code": 0x0123,
    "inverter_charge_voltage_setpoint_v": 55.0,
}


def test_sma_inverter_frames_decode_into_inverter_values() -> None:
    codec_305, codec_306 = SMA.inverter_frame(0x305), SMA.inverter_frame(0x306)
    assert codec_305 is not None and codec_306 is not None
    assert codec_305.decode_values(SI_305) | codec_306.decode_values(SI_306) == SI_VALUES
    # And the other way round (the inverter simulator encodes with these codecs).
    assert codec_305.encode(SI_VALUES) == SI_305 and codec_306.encode(SI_VALUES) == SI_306


# --- Victron: golden bytes ----------------------------------------------------------------------------------

VICTRON_GOLDEN: dict[int, bytes] = {
    # 0x351 as SMA (no SMA ranges here): 28 02 e8 03 dc 05 c0 01
    0x351: SMA_GOLDEN[0x351],
    0x355: SMA_GOLDEN[0x355],
    0x356: SMA_GOLDEN[0x356],
    0x35A: SMA_GOLDEN[0x35A],
    0x35E: SMA_GOLDEN[0x35E],
    # 0x35F: product id 0 -> 00 00; firmware 1.0 -> 01 00; capacity 280 Ah = 0x0118 -> 18 01; hardware 0 -> 00 00
    0x35F: bytes.fromhex("0000 0100 1801 0000"),
    # 0x370/0x371: "JK-BMS g" = 4a 4b 2d 42 4d 53 20 67; "ateway" + 2 NUL = 61 74 65 77 61 79 00 00
    0x370: b"JK-BMS g",
    0x371: bytes.fromhex("617465776179 0000"),
    # 0x372: 1 module online -> 01 00; blocking charge, blocking discharge, offline: 00 00 each
    0x372: bytes.fromhex("0100 0000 0000 0000"),
    # 0x373: min cell 3.287 V = 3287 mV = 0x0CD7 -> d7 0c; max cell 3.412 V = 3412 mV = 0x0D54 -> 54 0d;
    #   temperatures in K truncated, as Sleeper85 (ESP32_LFP_Wire_jk-bms-can.yaml 0x373: "int ... + 273.15")
    #   and diyBMS send them: min T 18.2 °C + 273.15 = 291.35 K -> 291 = 0x0123 -> 23 01;
    #   max T 24.5 + 273.15 = 297.65 -> 297 = 0x0129 -> 29 01 (rounding would give 298)
    0x373: bytes.fromhex("d70c 540d 2301 2901"),
    # 0x374-0x377: the cell or sensor as text, NUL-padded (the GX capture of esphome-virtual-can-bms#3 carries
    #   text there, "Pack-01#"): "Cell 03" = 43 65 6c 6c 20 30 33 00, ...
    0x374: b"Cell 03\x00",
    0x375: b"Cell 14\x00",
    0x376: b"Temp 2\x00\x00",
    0x377: b"Temp 1\x00\x00",
    # 0x379: 280 Ah = 0x0118 -> 18 01, then 6 zero bytes
    0x379: bytes.fromhex("1801") + bytes(6),
}


def test_victron_metadata() -> None:
    assert (VICTRON.name, VICTRON.extends, VICTRON.transport, VICTRON.bitrate) == (
        "victron",
        "sma-sunny-island",
        "can",
        500_000,
    )
    assert VICTRON.heartbeat is None, "Victron has no mandatory heartbeat"
    assert VICTRON.inverter_frames == ()
    assert [f.can_id for f in VICTRON.frames] == list(VICTRON_GOLDEN)
    assert all(f.dlc == len(VICTRON_GOLDEN[f.can_id]) for f in VICTRON.frames)


@pytest.mark.parametrize("can_id", sorted(VICTRON_GOLDEN), ids=lambda can_id: f"{can_id:#05x}")
def test_victron_golden_frame(can_id: int) -> None:
    assert VICTRON.frame(can_id).encode(golden_values()) == VICTRON_GOLDEN[can_id]


def test_victron_has_no_sma_voltage_ranges() -> None:
    # A 24 V battery: CVL 27.6 V = 276 = 0x0114 -> 14 01 and DVL 22.4 V = 224 = 0x00E0 -> e0 00 go out as
    # they are; a negative current limit is still 0.
    values = golden_values() | {
        "charge_voltage_limit_v": 27.6,
        "discharge_voltage_limit_v": 22.4,
        "charge_current_limit_a": -3.0,
    }
    assert VICTRON.frame(0x351).encode(values) == bytes.fromhex("1401 0000 dc05 e000")


def test_victron_temperatures_in_kelvin_decode_back() -> None:
    decoded = VICTRON.frame(0x373).decode(VICTRON_GOLDEN[0x373])
    assert decoded["min_cell_voltage"] == 3.287 and decoded["max_cell_voltage"] == 3.412
    # 291 K - 273.15 = 17.85 °C; 297 K - 273.15 = 23.85 °C (1 K resolution)
    assert decoded["min_temperature"] == pytest.approx(17.85) and decoded["max_temperature"] == pytest.approx(23.85)


# --- Growatt: golden bytes ----------------------------------------------------------------------------------

# Growatt BMS CAN-Bus protocol low voltage Rev04 (V1.04), in Sleeper85/esphome-jk-bms-can
# documents/BMS LV CAN Protocol/ (the English machine translation's tables, read by column).
GROWATT_GOLDEN: dict[int, bytes] = {
    # 0x311, big-endian (high byte first):
    #   CVL 55.2 V / 0.1 = 552 = 0x0228 -> 02 28; CCL 100 A / 0.1 = 1000 = 0x03E8 -> 03 e8;
    #   DCL 150 A / 0.1 = 1500 = 0x05DC -> 05 dc
    #   status word, byte 6 = bits 15-8: SP status 01 (standby) at bits 11-10 -> bit 10 = byte 6 bit 2 = 0x04
    #   byte 7 = bits 7-0: b6 output charge enable (charge enabled) 0x40 | b5 output discharge enable (off) 0 |
    #   b2 error flags valid 0x04 | state at bits 1-0 (p.3 table 1: 00 soft start, 01 standby, 10 charging,
    #   11 discharging): discharging at -12.3 A, 0x03 -> 0x47
    0x311: bytes.fromhex("0228 03e8 05dc 04 47"),
    # 0x312 (p.5, tables 1-4): byte 0 protection: b4 cell over-voltage 0x10 | b6 charge over-current 0x40 =
    #   0x50 (b5 is "SCD (Short Circuit Discharge)": a charge short circuit is not one); byte 1: 0;
    #   byte 2 warnings (table 3: b4 cell over voltage, b6 charge over current): 0x50; byte 3: 0 (no comm alarm);
    #   byte 4 pack count 1; bytes 5-6 manufacturer code "JK" = 4a 4b; byte 7 "Total Cell Number" 16 = 0x10
    0x312: bytes.fromhex("50 00 50 00 01 4a4b 10"),
    # 0x313: 53.12 V / 0.01 = 5312 = 0x14C0 -> 14 c0; -12.3 A / 0.1 = -123 = 0xFF85 -> ff 85;
    #   highest temperature 24.5 °C / 0.1 = 245 = 0x00F5 -> 00 f5; SOC round(76.54) = 77 = 0x4D; SOH 100 = 0x64
    0x313: bytes.fromhex("14c0 ff85 00f5 4d 64"),
    # 0x314: remaining 214.3 Ah / 0.01 = 21430 = 0x53B6 -> 53 b6; full 280 Ah / 0.01 = 28000 = 0x6D60 -> 6d 60;
    #   cell delta 0 -> 00 00; cycles 42 = 0x002A -> 00 2a
    0x314: bytes.fromhex("53b6 6d60 0000 002a"),
    # 0x319: byte 0: b7 charge enable 0x80 | b5 force charge I 0x20 | b4 force charge II 0x10 = 0xB0 (battery
    #   type bits 1-0, p.2 change of 2018/12/6: 00 lithium iron phosphate);
    #   max cell 3.412 V = 3412 mV = 0x0D54 -> 0d 54; min cell 3.287 V = 3287 mV = 0x0CD7 -> 0c d7;
    #   cell numbers 0, 0; protecting pack 0
    0x319: bytes.fromhex("b0 0d54 0cd7 00 00 00"),
    # 0x320: "JK" = 4a 4b; hardware revision 1; software revision 1; date-time 0 (4 bytes)
    0x320: bytes.fromhex("4a4b 01 01 00000000"),
}

# Each flag alone sets these (byte, mask) in 0x312; bytes 4-7 stay 01 4a 4b 10.
GROWATT_BITS: dict[str, list[tuple[int, int]]] = {
    "alarm_pack_under_voltage": [(0, 0x02), (2, 0x02)],
    "alarm_pack_over_voltage": [(0, 0x04), (2, 0x04)],
    "fault_under_voltage": [(0, 0x08), (2, 0x08)],
    "fault_over_voltage": [(0, 0x10), (2, 0x10)],
    "alarm_discharge_short_circuit": [(0, 0x20)],  # table 1 b5 SCD; table 3 (warnings) has no bit 5
    "fault_charge_over_current": [(0, 0x40), (2, 0x40)],
    "fault_discharge_over_current": [(0, 0x80), (2, 0x80)],
    "fault_cell_imbalance": [(3, 0x04)],  # table 4 b2 "Delta V Fail" warning; never table 2's protection
    "fault_system": [(1, 0x08)],
    "fault_under_temperature": [(1, 0x10), (3, 0x10)],  # charge low temperature
    "fault_over_temperature": [(1, 0x40 | 0x80), (3, 0x40 | 0x80)],  # charge and discharge high temperature
    "comm_alarm": [(3, 0x01)],  # internal communication warning
}


def test_growatt_metadata() -> None:
    assert (GROWATT.name, GROWATT.transport, GROWATT.bitrate) == ("growatt-can", "can", 500_000)
    assert (GROWATT.mode, GROWATT.request_id) == (SendMode.REQUEST, 0x301)
    assert GROWATT.heartbeat is not None and GROWATT.heartbeat.can_id == 0x301
    assert [(f.can_id, f.dlc, f.period_s) for f in GROWATT.frames] == [(can_id, 8, 0.0) for can_id in GROWATT_GOLDEN]
    numbers = [field for frame in GROWATT.frames for field in frame.spec.fields if field.value is not None]
    assert all(field.byte_order == "big" for field in numbers if field.size > 1)


@pytest.mark.parametrize("can_id", sorted(GROWATT_GOLDEN), ids=lambda can_id: f"{can_id:#05x}")
def test_growatt_golden_frame(can_id: int) -> None:
    assert GROWATT.frame(can_id).encode(golden_values()) == GROWATT_GOLDEN[can_id]


@pytest.mark.parametrize("flag", sorted(GROWATT_BITS))
def test_growatt_each_flag_sets_its_bits(flag: str) -> None:
    expected = bytearray(4)
    for byte, mask in GROWATT_BITS[flag]:
        expected[byte] |= mask
    assert GROWATT.frame(0x312).encode(quiet_values() | {flag: True}) == bytes(expected) + bytes.fromhex("014a4b10")


def test_growatt_every_fault_group_is_carried() -> None:
    assert {name for name in FLAG_VALUES if name.startswith("fault_")} <= set(GROWATT_BITS)
    flags = {flag for field in GROWATT.frame(0x312).spec.fields for flag in field.flags}
    assert flags == set(GROWATT_BITS)


@pytest.mark.parametrize(
    ("flag", "mask"), [("charge_enable", 0x80), ("discharge_enable", 0x40), ("force_charge", 0x20 | 0x10)]
)
def test_growatt_request_flags(flag: str, mask: int) -> None:
    assert GROWATT.frame(0x319).encode(quiet_values() | {flag: True})[0] == mask


@pytest.mark.parametrize(("chemistry", "bits"), [("lifepo4", 0b00), ("li_ion", 0b01), ("lto", 0b10)])
def test_growatt_battery_type_from_the_chemistry(chemistry: str, bits: int) -> None:
    # Rev04 p.2, change of 2018/12/6: 0x319 byte 0 bits 0-1, 00 lithium iron phosphate, 01 ternary,
    # 10 lithium titanate.
    values = quiet_values() | {f"chemistry_{chemistry}": True}
    assert GROWATT.frame(0x319).encode(values)[0] & 0b11 == bits


@pytest.mark.parametrize(("direction", "state"), [("is_idle", 0b01), ("is_charging", 0b10), ("is_discharging", 0b11)])
def test_growatt_state_from_what_the_battery_does(direction: str, state: int) -> None:
    # Rev04 p.3, table 1 bits 0-1: 01 stand by, 10 charging, 11 discharging.
    assert GROWATT.frame(0x311).encode(quiet_values() | {direction: True})[7] & 0b11 == state


@pytest.mark.parametrize("cells", [8, 15, 16])
def test_growatt_cell_count_from_the_reading(cells: int) -> None:
    assert GROWATT.frame(0x312).encode(quiet_values() | {"cell_count": cells})[7] == cells


def test_growatt_status_word_enables() -> None:
    # Both enables: byte 7 = 0x40 | 0x20 | 0x04 = 0x64; none: 0x04. Byte 6 stays 0x04. (No direction flag set
    # in quiet_values: state bits 00.)
    both = GROWATT.frame(0x311).encode(quiet_values() | {"charge_enable": True, "discharge_enable": True})
    assert both[6:] == bytes([0x04, 0x64])
    assert GROWATT.frame(0x311).encode(quiet_values())[6:] == bytes([0x04, 0x04])


# --- the control loop on a fake clock -------------------------------------------------------------------------


def stamped(reading: PackReading, at_s: float) -> PackReading:
    return replace(
        reading,
        state=replace(reading.state, measured_at_s=at_s),
        settings=replace(reading.settings, measured_at_s=at_s),
    )


class ScenarioDriver:
    """The normal-charge scenario at the fake clock's time; ``bms_max_charge_a`` (a function of the poll
    number) overrides the BMS's own max charge current."""

    name = "scenario"

    def __init__(self, clock: FakeClock, bms_max_charge_a: Callable[[int], float] | None = None) -> None:
        self._clock = clock
        self._bms_max_charge_a = bms_max_charge_a
        self.polls = 0
        self.silent = False
        """True: the BMS does not answer."""

    def read(self) -> tuple[PackReading, ...]:
        now = self._clock.monotonic()
        if self.silent:
            raise LinkTimeout("no reply from /dev/fake within 0.5 s")
        reading = stamped(SCENARIOS["normal-charge"].step(now - START_S).reading, now)
        if self._bms_max_charge_a is not None:
            settings = replace(reading.settings, max_charge_current_a=self._bms_max_charge_a(self.polls))
            reading = replace(reading, settings=settings)
        self.polls += 1
        return (reading,)


@dataclass(frozen=True)
class Sent:
    at_s: float
    """Seconds since the start."""
    can_id: int
    data: bytes


class RecordingSink:
    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self.frames: list[Sent] = []

    def send(self, can_id: int, data: bytes) -> bool:
        self.frames.append(Sent(self._clock.monotonic() - START_S, can_id, bytes(data)))
        return True

    def of(self, can_id: int) -> list[Sent]:
        return [frame for frame in self.frames if frame.can_id == can_id]


class Rig:
    """A control loop, a driver and a recording sink on one fake clock; :meth:`run_until` polls and ticks as
    gateway.runtime.run_loop does (a tick whenever the loop asks, and after every poll)."""

    def __init__(
        self,
        profile: Profile,
        caps: LimitsSettings = CAPS,
        *,
        poll_s: float = 1.0,
        bms_max_charge_a: Callable[[int], float] | None = None,
    ) -> None:
        self.profile = profile
        self.clock = FakeClock(start_s=START_S)
        self.sink = RecordingSink(self.clock)
        self.driver = ScenarioDriver(self.clock, bms_max_charge_a)
        self.poll_s = poll_s
        settings = LoopSettings(
            poll_interval_s=poll_s, bms_timeout_s=BMS_TIMEOUT_S, silence_after_s=SILENCE_AFTER_S, limits=caps
        )
        self.loop = ControlLoop(profile, self.sink, self.clock, settings)
        self.next_poll_s = START_S

    def poll(self) -> None:
        try:
            readings = self.driver.read()
        except GatewayError as error:
            self.loop.on_poll_failed(error)
            return
        self.loop.on_readings(readings)

    def run_until(self, t_s: float) -> None:
        end = START_S + t_s
        while self.clock.monotonic() < end - EPS_S:
            if self.clock.monotonic() >= self.next_poll_s - EPS_S:
                self.poll()
                self.next_poll_s += self.poll_s
            next_due = self.loop.tick()
            target = min(next_due, end, self.next_poll_s)
            self.clock.advance(max(target - self.clock.monotonic(), EPS_S))

    def request(self) -> list[Sent]:
        """One request frame arrives now; the frames the tick it wakes sends."""
        before = len(self.sink.frames)
        self.loop.on_frame(self.profile.request_id or 0)
        assert self.loop.wake.is_set()
        self.loop.wake.clear()
        self.loop.tick()
        return self.sink.frames[before:]


def decoded(profile: Profile, sent: Sent) -> dict[str, Value]:
    return profile.frame(sent.can_id).decode(sent.data)


@pytest.mark.parametrize("profile", [SMA, VICTRON], ids=lambda profile: profile.name)
def test_no_id_repeats_within_200_ms_even_when_limits_fall_at_every_poll(profile: Profile) -> None:
    # The BMS's own max charge current drops 0.1 A at every poll, 100 polls a second: CCL = 0.9 × that
    # falls 0.09 A each time (above the 0.05 A dead-band), and every fall wants to go out at once.
    caps = LimitsSettings(max_charge_current_a=1000.0, max_discharge_current_a=250.0, current_deadband_a=0.05)
    rig = Rig(profile, caps, poll_s=0.01, bms_max_charge_a=lambda poll: 150.0 - 0.1 * poll)
    rig.run_until(10.0)
    assert rig.loop.state is FailsafeState.NORMAL
    ccls = [float(decoded(profile, sent)["charge_current_limit"]) for sent in rig.sink.of(0x351)]
    assert ccls[0] == pytest.approx(0.9 * 150.0)
    assert all(later < earlier for earlier, later in itertools.pairwise(ccls)), "the limit fell at every send"
    for frame in profile.frames:
        times = [sent.at_s for sent in rig.sink.of(frame.can_id)]
        gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
        assert min(gaps) >= 0.2 - 1e-9, f"{frame.can_id:#x} repeated after {min(gaps):.4f} s"
        # Each fall went out as soon as the 200 ms allowed: 10 s / 0.2 s = 50 sends, not 20 (every 0.5 s).
        assert len(times) == pytest.approx(10.0 / 0.2, abs=1), f"{frame.can_id:#x}"


def test_sma_loop_sends_clamped_limits_and_invalid_markers() -> None:
    # A BMS that allows 2000 A and a user cap of 5000 A: the engine's CCL is 0.9 × 2000 = 1800 A, above the
    # Sunny Island's 1200 A, so 1200 A goes out. A discharge cut-off of 3.05 V per cell makes the DVL
    # 16 × 3.05 = 48.8 V, above its 48 V: 48 V goes out.
    caps = LimitsSettings(max_charge_current_a=5000.0, max_discharge_current_a=250.0, discharge_cutoff_cell_v=3.05)
    rig = Rig(SMA, caps, bms_max_charge_a=lambda poll: 2000.0)
    rig.run_until(3.0)
    sent = [decoded(SMA, frame) for frame in rig.sink.of(0x351)]
    assert len(sent) == 6
    for limits in sent:
        assert limits == pytest.approx(
            {
                "charge_voltage_limit": EXPECTED["cvl"],
                "charge_current_limit": 1200.0,
                "discharge_current_limit": EXPECTED["dcl"],
                "discharge_voltage_limit": 48.0,
            }
        )
    engine = rig.loop.snapshot().limits
    assert engine is not None
    assert (engine.charge_current_limit_a, engine.discharge_voltage_limit_v) == pytest.approx((1800.0, 48.8))
    for frame in rig.sink.of(0x35F):
        assert frame.data[:4] == b"\xff" * 4 and frame.data[6:] == b"\xff\xff"


def test_sma_loop_publishes_the_values_the_issue_prescribes() -> None:
    rig = Rig(SMA)
    rig.run_until(2.0)
    limits = decoded(SMA, rig.sink.of(0x351)[-1])
    assert limits == pytest.approx(
        {
            "charge_voltage_limit": EXPECTED["cvl"],
            "charge_current_limit": EXPECTED["ccl"],
            "discharge_current_limit": EXPECTED["dcl"],
            "discharge_voltage_limit": EXPECTED["dvl"],
        }
    )
    # A set every 0.5 s: at 0, 0.5, 1.0 and 1.5 s.
    assert [round(sent.at_s, 6) for sent in rig.sink.of(0x355)] == [0.0, 0.5, 1.0, 1.5]


LIMIT_FIELDS = {"cvl": "charge_voltage", "ccl": "charge_current", "dcl": "discharge_current"}
GROWATT_LIMITS = {key: EXPECTED[key] for key in LIMIT_FIELDS}


def test_growatt_sends_nothing_before_a_request_and_answers_each_with_the_whole_set() -> None:
    rig = Rig(GROWATT)
    rig.run_until(10.0)
    assert rig.loop.state is FailsafeState.NORMAL
    assert rig.sink.frames == [], "nothing goes out before the first 0x301"
    for at_s in (10.0, 10.25, 11.0, 13.7):
        rig.run_until(at_s)
        answer = rig.request()
        assert [sent.can_id for sent in answer] == list(GROWATT_GOLDEN), f"answer at {at_s}"
        assert {round(sent.at_s, 6) for sent in answer} == {at_s}
        limits = decoded(GROWATT, answer[0])
        assert {key: limits[f"{name}_limit"] for key, name in LIMIT_FIELDS.items()} == pytest.approx(GROWATT_LIMITS)
    rig.run_until(20.0)
    assert len(rig.sink.frames) == 4 * len(GROWATT_GOLDEN), "no periodic sending, no second answer"
    assert rig.loop.snapshot().requests_received == 4


def test_growatt_requests_during_stale_data_get_the_zero_set() -> None:
    rig = Rig(GROWATT)
    rig.run_until(2.0)
    rig.driver.silent = True  # the last good reading is the one at 1.0 s
    rig.run_until(2.0 + BMS_TIMEOUT_S + 1.0)
    assert rig.loop.state is FailsafeState.STALE
    answer = rig.request()
    assert [sent.can_id for sent in answer] == list(GROWATT_GOLDEN)
    limits = decoded(GROWATT, answer[0])
    assert (limits["charge_current_limit"], limits["discharge_current_limit"]) == (0, 0)
    requests = decoded(GROWATT, answer[4])
    assert (requests["charge_enable"], requests["discharge_enable"]) == (False, False)
    assert decoded(GROWATT, answer[1])["warn_internal_communication"] is True


# --- over a virtual CAN bus -------------------------------------------------------------------------------------

_channels = itertools.count()


def wait_until(predicate: Callable[[], bool], timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@dataclass
class VirtualGateway:
    """The gateway's CAN link and control loop (wired as gateway.app does) on a virtual bus, on a fake clock."""

    clock: FakeClock
    link: CanLink
    loop: ControlLoop

    @classmethod
    def start(cls, profile: Profile, channel: str) -> VirtualGateway:
        clock = FakeClock(start_s=START_S)
        box: list[ControlLoop] = []
        link = CanLink(
            CanSettings("virtual", channel, None, {"receive_own_messages": False}),
            clock,
            listen_ids=profile.listen_ids,
            decoders={frame.can_id: frame.decode_values for frame in profile.inverter_frames if frame.spec.fields},
            on_receive=lambda can_id: box[0].on_frame(can_id) if box else None,
        )
        heartbeat = profile.heartbeat
        loop = ControlLoop(
            profile,
            link,
            clock,
            LoopSettings(
                poll_interval_s=1.0, bms_timeout_s=BMS_TIMEOUT_S, silence_after_s=SILENCE_AFTER_S, limits=CAPS
            ),
            heartbeat_age_s=None if heartbeat is None else (lambda: link.heartbeat_age_s(heartbeat.can_id)),
            inverter_values=link.received_values,
        )
        box.append(loop)
        link.open()
        loop.on_readings(ScenarioDriver(clock).read())
        return cls(clock, link, loop)


@pytest.fixture
def channel() -> str:
    return f"test-sma-growatt-{next(_channels)}"


def test_growatt_over_a_virtual_bus_answers_each_request_of_the_inverter_simulator(channel: str) -> None:
    gateway = VirtualGateway.start(GROWATT, channel)
    bus = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
    inverter = InverterSimulator(GROWATT, bus, send_heartbeat=False)
    inverter.start()
    try:
        for _ in range(5):
            gateway.loop.tick()
            gateway.clock.advance(0.1)
        time.sleep(0.2)
        assert inverter.heard == {}, "nothing on the bus before the first 0x301"
        for number in range(1, 4):
            gateway.loop.wake.clear()
            inverter.send_request()
            assert gateway.loop.wake.wait(3.0), "the request reached the loop"
            gateway.loop.tick()

            def answered(count: int = number) -> bool:
                return all(len(inverter.arrivals.get(can_id, [])) == count for can_id in GROWATT_GOLDEN)

            assert wait_until(answered), f"request {number} answered with the whole set"
            gateway.clock.advance(1.0)
        time.sleep(0.2)
        assert {can_id: len(times) for can_id, times in inverter.arrivals.items()} == dict.fromkeys(GROWATT_GOLDEN, 3)
        heard = inverter.values()
        assert heard["charge_voltage_limit_v"] == pytest.approx(EXPECTED["cvl"])
        assert heard["charge_current_limit_a"] == pytest.approx(EXPECTED["ccl"])
        assert heard["discharge_current_limit_a"] == pytest.approx(EXPECTED["dcl"])
        assert inverter.decode_errors == 0
        assert gateway.loop.snapshot().requests_received == 3
        assert gateway.loop.inverter_state is InverterState.ALIVE
    finally:
        inverter.stop()
        bus.shutdown()
        gateway.link.close()


def test_sma_inverter_0x305_over_a_virtual_bus_reaches_the_status_snapshot(channel: str) -> None:
    gateway = VirtualGateway.start(SMA, channel)
    bus = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
    try:
        gateway.loop.tick()
        assert gateway.loop.inverter_state is InverterState.WAITING
        for can_id, data in ((0x305, SI_305), (0x306, SI_306)):
            bus.send(can.Message(arbitration_id=can_id, data=data, is_extended_id=False))
        assert wait_until(lambda: len(gateway.link.received_values()) == len(SI_VALUES))
        gateway.clock.advance(0.5)
        gateway.loop.tick()
        snapshot = gateway.loop.snapshot()
        assert {name: value.value for name, value in snapshot.inverter_values.items()} == SI_VALUES
        assert all(value.age_s == pytest.approx(0.5) for value in snapshot.inverter_values.values())
        assert snapshot.inverter_state is InverterState.ALIVE
    finally:
        bus.shutdown()
        gateway.link.close()
