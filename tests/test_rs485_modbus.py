"""Modbus maps: growatt-rs485, voltronic-rs485 and modbus-battery, pure and over a pty (RTU) and loopback TCP.

A pymodbus client reads the live values and limits; writes other than the Growatt handshake get exception 01
(illegal function); stale BMS data reads as zero limits and cleared enables; silent states get no answer.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, Final

import pytest
from hypothesis import given
from hypothesis import strategies as st
from limits_fixtures import li_ion_settings, lifepo4_settings, lto_settings
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from rs485_fixtures import FixedSource, limits, reading

from gateway.limits import LimitsSettings
from gateway.model import Alarm, ProtectionSettings
from gateway.rs485.modbus_map import ModbusException, RegisterMap
from gateway.rs485.profile import load_rs485_profile
from gateway.rs485.server import LimitsFeed, OutputSettings, Rs485Output
from gateway.rs485.values import BatteryView, battery_view
from gateway.runtime import FailsafeState
from gateway.sim.nullmodem import NullModem
from gateway.transport.serial_server import SerialEndpoint, TcpEndpoint

SETTINGS: Final = OutputSettings(bms_timeout_s=10, silence_after_s=60)


def _map(name: str) -> RegisterMap:
    spec = load_rs485_profile(name).registers
    assert spec is not None
    return RegisterMap(spec)


def _words(name: str, address: int, count: int, **state: object) -> list[int]:
    view = battery_view((reading(**state),), limits(), comm_alarm=False)
    words = _map(name).read(view, 3 if name != "modbus-battery" else 4, address, count)
    assert isinstance(words, list)
    return words


def s16(value: int) -> int:
    return value & 0xFFFF


# --- the maps, pure ----------------------------------------------------------------------------------------------


def test_growatt_status_block() -> None:
    words = _words("growatt-rs485", 0x0013, 0x29 - 0x13 + 1)
    by = dict(zip(range(0x0013, 0x002A), words, strict=True))
    # Bits 0-1 = 11 discharging (−12.3 A), b2 error word valid, b3 1 "balance" (no balance permanent failure,
    # PDF p.10), b5 discharge enabled, b6 charge enabled.
    assert by[0x0013] == 0b0110_1111
    assert by[0x0014] == 0  # no protection
    assert by[0x0015] == 55  # SOC %
    assert by[0x0016] == 5290  # 52.90 V in 10 mV
    assert by[0x0017] == s16(-1230)  # −12.30 A in 10 mA
    assert by[0x0018] == 26  # hottest battery sensor 25.5 °C, whole degrees
    assert by[0x0019] == 9000  # CCL 90.00 A in 10 mA
    assert (by[0x001A], by[0x001B]) == (15400, 28000)  # 154.00 and 280.00 Ah in 10 mAh
    assert by[0x001D] == 25  # cell delta 3.315 − 3.290 V, mV
    assert by[0x001E] == 42
    assert by[0x0020] == 100  # SOH
    assert by[0x0021] == 5520  # CVL 55.20 V
    assert by[0x0022] == 0
    assert by[0x0023] == 13500  # DCL 135.00 A
    assert (by[0x0025], by[0x0026], by[0x0027], by[0x0028], by[0x0029]) == (3315, 3290, 15, 16, 16)


def test_growatt_cells_text_and_gaps() -> None:
    assert _words("growatt-rs485", 0x0071, 16) == [3301 + i for i in range(15)] + [3290]
    assert _words("growatt-rs485", 0x0008, 4) == [0x4A4B, 0x3031, 0x3233, 0x3435]  # "JK012345"
    assert _words("growatt-rs485", 0x0040, 4) == [0, 0, 0, 0]  # nobody defined these: zeros, not an exception


def test_growatt_alarms_and_force_charge() -> None:
    view = battery_view(
        (reading(alarms=frozenset({Alarm.CELL_OVER_VOLTAGE, Alarm.CHARGE_OVER_CURRENT}), current_a=20.0),),
        limits(discharge_enable=False, force_charge=True),
        comm_alarm=False,
    )
    words = _map("growatt-rs485").read(view, 3, 0x0013, 0x10)
    assert isinstance(words, list)
    status, error, warning = words[0], words[1], words[0x22 - 0x13]
    assert status & 0b11 == 0b10 and not status & 1 << 5 and status & 1 << 12  # charging; discharge off; force
    assert error == 1 << 2 | 1 << 11  # OV, OCC
    assert warning == 1 << 0 | 1 << 5 | 1 << 13  # cell OV, charge OC, low-voltage pre-shutdown (force charge)


# Growatt "1xSxxP ESS" V2.02 PDF (HotNoob/PythonProtocolGateway, documentation/3rdparty/protocols/
# growatt-bms-rs485-protocal-1xsxxp-ess-v202-1.pdf), pages as printed on them ("第 N 页").


def test_growatt_balance_bit_is_not_the_balancer() -> None:
    # p.10: status bit 3 "Cell balance PF status: 0: unbalance PF, 1: balance"; 0 is a permanent failure. The
    # balancer running or resting is no failure: 1 either way (the gateway knows of no balancer failure).
    for balancing in (False, True):
        assert _words("growatt-rs485", 0x0013, 1, balancer_on=balancing)[0] & 1 << 3


def test_growatt_cell_imbalance_is_no_error() -> None:
    # p.11: error bit 10 "Delta V Fail" (1.11: "error code bit10 for unbalance") would fault the inverter; an
    # imbalance is no protection, so no error bit at all. The delta is still there, in 0x001D (mV).
    words = _words("growatt-rs485", 0x0014, 10, alarms=frozenset({Alarm.CELL_VOLTAGE_DIFFERENCE}))
    assert words[0] == 0 and words[0x001D - 0x0014] == 25


@pytest.mark.parametrize(
    ("settings", "type_bits", "rated_dv"),
    [
        # p.13: 0x0022 bits 14-15: 00 LiFePO4, 01 ternary (NMC), 10 lithium titanate. p.16: 0x0125 rated
        # voltage in 0.1 V: 16 × 3.2 V = 51.2 V; 14 × 3.7 V = 51.8 V; 20 × 2.4 V = 48.0 V.
        (lifepo4_settings(), 0b00, 512),
        (li_ion_settings(), 0b01, 518),
        (lto_settings(), 0b10, 480),
    ],
)
def test_growatt_battery_type_and_rated_voltage(settings: ProtectionSettings, type_bits: int, rated_dv: int) -> None:
    pack = replace(reading(), settings=settings)
    view = battery_view((pack,), limits(), comm_alarm=False)
    growatt = _map("growatt-rs485")
    warning, rated = growatt.read(view, 3, 0x0022, 1), growatt.read(view, 3, 0x0125, 1)
    assert isinstance(warning, list) and isinstance(rated, list)
    assert (warning[0] >> 14, rated[0]) == (type_bits, rated_dv)


def test_voltronic_map() -> None:
    words = dict(zip(range(0x0030, 0x0078), _words("voltronic-rs485", 0x0030, 0x48), strict=True))
    assert (words[0x0030], words[0x0031]) == (0, 123)  # discharging 12.3 A: charge register 0
    assert (words[0x0032], words[0x0033]) == (529, 55)  # 52.9 V in 0.1 V, SOC
    assert (words[0x0034], words[0x0035]) == (0x0004, 0x45C0)  # 280000 mAh, high word first
    assert words[0x0036] == 1
    assert (words[0x0070], words[0x0071], words[0x0072], words[0x0073]) == (552, 496, 900, 1350)
    assert words[0x0074] == 0xC0  # charge and discharge enabled
    assert (words[0x0076], words[0x0077]) == (0x0002, 0x5990)  # 154000 mAh
    cells = _words("voltronic-rs485", 0x0010, 21)
    assert cells[0] == 16 and cells[1:17] == [3301 + i for i in range(15)] + [3290]
    assert cells[17:] == [0, 0, 0, 0]  # cells 17-20 absent


# --- voltronic-rs485 against "Voltronic Inverter and BMS 485 communication protocol 20200325.pdf" -------------
# (HotNoob/PythonProtocolGateway, documentation/3rdparty/protocols/). Every expected word below is written out
# from the PDF's tables, page by page, not from the profile.

VOLTRONIC_ALARM_REGISTERS: Final = range(0x0037, 0x003D)


def test_voltronic_temperatures() -> None:
    # p.9-10: 0x0025 N = 6 ("NTC number 6"), 0x0026-0x002A NTC1-NTC5, 0x002B sensor 6 = MOSFET, 0x002C-0x002F
    # "Default 0"; 0.1 K. The reference pack: sensors 24.0 and 25.5 °C (NTC3-5 not fitted: 0x0000, p.10
    # "if the parameter doesn't exist, return 0x0000"), MOS 31.5 °C.
    assert _words("voltronic-rs485", 0x0025, 11) == [6, 2971, 2986, 0, 0, 0, 3046, 0, 0, 0, 0]


def test_voltronic_cell_states_two_cells_per_register() -> None:
    # p.16-17: 0x0040 the number of cells M, then "Cell 1/2 voltage state" at 0x0041 ... "Cell 19/20" at 0x004A;
    # 00H normal, 01H under voltage protect, 02H over voltage protect. Cell 1 at 3.70 V (OVP 3.65 V): 02; cell 4
    # at 2.75 V (UVP 2.80 V): 01. The first cell named in the high byte (our reading, see the profile).
    cells = (3.70, 3.30, 3.30, 2.75, *(3.30,) * 12)
    words = _words("voltronic-rs485", 0x0040, 11, cell_voltages_v=cells)
    assert words == [16, 0x0200, 0x0001, 0, 0, 0, 0, 0, 0, 0, 0]


@pytest.mark.parametrize(
    ("alarm", "expected"),
    [
        # Charge alarm p.12 (b0 CHT, b1 COV, b2 CLT, b3 OCC); discharge alarm p.13 (b0 DHT, b1 DLT, b2 FETHT,
        # b3 CUV); charge protect p.13-14 (b6 FETHT, b8 CHT, b9 CLT, b10 OCV, b11 OCC); charge protect 2 p.14
        # (b2 OCCHw); discharge protect p.14-15 (b10 FETHT, b11 CUV, b12 OCD, b14 DHT); discharge protect 2
        # p.15-16 (b1 Short).
        (Alarm.CELL_OVER_VOLTAGE, {0x0037: 1 << 1, 0x0039: 1 << 10}),
        (Alarm.CHARGE_OVER_TEMPERATURE, {0x0037: 1 << 0, 0x0039: 1 << 8}),
        (Alarm.BATTERY_UNDER_TEMPERATURE, {0x0037: 1 << 2, 0x0039: 1 << 9}),  # the JK's charge UTP
        (Alarm.CHARGE_OVER_CURRENT, {0x0037: 1 << 3, 0x0039: 1 << 11}),
        (Alarm.CHARGE_SHORT_CIRCUIT, {0x003A: 1 << 2}),
        (Alarm.DISCHARGE_OVER_TEMPERATURE, {0x0038: 1 << 0, 0x003B: 1 << 14}),
        (Alarm.BATTERY_OVER_TEMPERATURE, {0x0037: 1 << 0, 0x0038: 1 << 0, 0x0039: 1 << 8, 0x003B: 1 << 14}),
        (Alarm.MOS_OVER_TEMPERATURE, {0x0038: 1 << 2, 0x0039: 1 << 6, 0x003B: 1 << 10}),
        (Alarm.CELL_UNDER_VOLTAGE, {0x0038: 1 << 3, 0x003B: 1 << 11}),
        (Alarm.DISCHARGE_OVER_CURRENT, {0x003B: 1 << 12}),
        (Alarm.DISCHARGE_SHORT_CIRCUIT, {0x003C: 1 << 1}),
        # No bit in the document: a cell imbalance is no protection; pack voltages and box temperature have none.
        (Alarm.CELL_VOLTAGE_DIFFERENCE, {}),
        (Alarm.PACK_OVER_VOLTAGE, {}),
        (Alarm.PACK_UNDER_VOLTAGE, {}),
        (Alarm.BOX_OVER_TEMPERATURE, {}),
    ],
)
def test_voltronic_alarm_and_protection_bits(alarm: Alarm, expected: dict[int, int]) -> None:
    words = _words("voltronic-rs485", 0x0037, len(VOLTRONIC_ALARM_REGISTERS), alarms=frozenset({alarm}))
    assert dict(zip(VOLTRONIC_ALARM_REGISTERS, words, strict=True)) == {
        address: expected.get(address, 0) for address in VOLTRONIC_ALARM_REGISTERS
    }


def test_voltronic_healthy_pack_sets_no_alarm_or_protection_bit() -> None:
    # b0 PRES ("In System" signal, p.14/p.15) included: the gateway is the RS485 link that activates the battery
    # (p.5 §1.2), so no pack is held off by its In-System signal.
    assert _words("voltronic-rs485", 0x0037, len(VOLTRONIC_ALARM_REGISTERS)) == [0] * len(VOLTRONIC_ALARM_REGISTERS)


# 0x0072/0x0073 are "(not used by UPS yet)" (p.18): a Voltronic inverter obeys 0x0074's b7 charge enable and b6
# discharge enable (p.19), so whatever makes a current limit 0 must clear its enable bit.


def _enables(words: list[int]) -> tuple[bool, bool]:
    """(charge enable, discharge enable) of 0x0074 (p.19) in the words read from 0x0070."""
    return bool(words[4] & 1 << 7), bool(words[4] & 1 << 6)


def _limits_and_enables(view: BatteryView | None) -> list[int] | None:
    """0x0070-0x0074 as the inverter reads them, or None when the gateway does not answer."""
    if view is None:
        return None
    words = _map("voltronic-rs485").read(view, 3, 0x0070, 5)
    assert isinstance(words, list)
    return words


def _engine_output(**state: Any) -> tuple[FixedSource, LimitsFeed, Rs485Output]:
    """The real chain: the limits engine (LimitsFeed, as `run` uses without CAN) and the output's fail-safe rules."""
    source = FixedSource()
    feed = LimitsFeed(source.clock, LimitsSettings(), SETTINGS)
    feed.on_readings((reading(**state),))
    profile = load_rs485_profile("voltronic-rs485")
    output = Rs485Output(profile, SerialEndpoint("/dev/null", 9600), 1, feed, source.clock, SETTINGS)
    return source, feed, output


@pytest.mark.parametrize(
    ("state", "charge", "discharge"),
    [
        ({}, True, True),
        ({"alarms": frozenset({Alarm.CELL_OVER_VOLTAGE})}, False, True),
        ({"alarms": frozenset({Alarm.CELL_UNDER_VOLTAGE})}, True, False),
        ({"alarms": frozenset({Alarm.MOS_OVER_TEMPERATURE})}, False, False),
        ({"alarms": frozenset({Alarm.CHARGE_MOS_FAULT})}, False, False),
        ({"charge_mos_on": False}, False, True),
        ({"discharge_mos_on": False}, True, False),
        ({"battery_temperatures_c": (-5.0, -5.0)}, False, True),  # below charge UTP 0 °C
        ({"cell_voltages_v": (3.65, *(3.40,) * 15)}, False, True),  # a cell at OVP
        ({"cell_voltages_v": (2.80, *(3.20,) * 15)}, True, False),  # a cell at UVP
    ],
)
def test_voltronic_every_blocked_state_clears_its_enable(state: dict[str, Any], charge: bool, discharge: bool) -> None:
    _source, _feed, output = _engine_output(**state)
    words = _limits_and_enables(output.view())
    assert words is not None
    assert (words[2] > 0, words[3] > 0) == (charge, discharge)  # the engine's current limits, 0.1 A
    assert _enables(words) == (charge, discharge)


def test_voltronic_stale_and_silent_data_clear_both_enables() -> None:
    source, feed, output = _engine_output()
    words = _limits_and_enables(output.view())
    assert words is not None and _enables(words) == (True, True)
    source.clock.advance(SETTINGS.bms_timeout_s + 1)  # no new reading: stale (failsafe: zeros)
    words = _limits_and_enables(output.view())
    assert words is not None and words[2:4] == [0, 0] and _enables(words) == (False, False)
    source.clock.advance(SETTINGS.silence_after_s)  # older still: no answer, the inverter's BMS-loss trips
    assert _limits_and_enables(output.view()) is None
    feed.on_readings((reading(measured_at_s=source.clock.monotonic()),))  # fresh data: going again
    words = _limits_and_enables(output.view())
    assert words is not None and _enables(words) == (True, True)


@given(
    st.one_of(st.just(0.0), st.floats(0.0, 0.2), st.floats(0.0, 500.0)),
    st.one_of(st.just(0.0), st.floats(0.0, 0.2), st.floats(0.0, 500.0)),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
def test_voltronic_no_enable_beside_a_zero_limit(
    ccl: float, dcl: float, charge: bool, discharge: bool, force: bool
) -> None:
    # Whatever built the limits: an enable bit is never set while its limit register reads 0.
    view = battery_view(
        (reading(),),
        limits(
            charge_current_limit_a=ccl,
            discharge_current_limit_a=dcl,
            charge_enable=charge,
            discharge_enable=discharge,
            force_charge=force,
        ),
        comm_alarm=False,
    )
    words = _limits_and_enables(view)
    assert words is not None
    charge_bit, discharge_bit = _enables(words)
    assert not (charge_bit and words[2] == 0) and not (discharge_bit and words[3] == 0)
    assert not (words[4] & 1 << 5 and not charge_bit)  # no "charge immediately" while charging is stopped
    assert charge_bit == (charge and ccl >= 0.1) and discharge_bit == (discharge and dcl >= 0.1)


def test_modbus_battery_map() -> None:
    words = _words("modbus-battery", 0, 44)
    assert words[:6] == [1, 1, 1, 16, 0b10_0110_0011, 0]  # version, normal, 1 pack, 16 cells, status, no phase
    assert words[10:12] == [5290, s16(-123)]
    assert words[12:14] == [0xFFFF, s16(-651)]  # 52.9 V × −12.3 A = −650.67 W
    assert words[14:17] == [550, 550, 1000]
    assert words[17:21] == [0, 15400, 0, 28000]
    assert words[21:26] == [42, 248, 255, 240, 315]  # cycles, mean 24.75 → 24.8, 25.5, 24.0, MOS 31.5 °C
    assert words[26:32] == [3315, 3290, 3307, 25, 15, 16]  # mean cell 52910 mV / 16 = 3306.9 mV
    assert words[40:44] == [5520, 900, 1350, 4960]
    assert _words("modbus-battery", 60, 13) == [
        3650,
        3400,
        2800,
        3000,
        5840,
        4480,
        1000,
        1500,
        450,
        0,
        600,
        s16(-200),
        750,
    ]
    assert _words("modbus-battery", 140, 3) == [240, 255, 0x8000]  # the third sensor is not fitted
    assert _words("modbus-battery", 1000, 3) == [5290, s16(-123), 550]  # pack 0's block
    assert _words("modbus-battery", 1100, 3) == [0, 0, 0]  # no pack 1


def test_modbus_battery_cell_imbalance_is_information_not_a_fault() -> None:
    # Our own map (profiles/rs485/modbus-battery.yaml): register 52 b6 reports the imbalance class as information;
    # the pack block's status (offset 14) b3 "any fault" is for protections only, so a mere imbalance leaves it 0.
    imbalance = frozenset({Alarm.CELL_VOLTAGE_DIFFERENCE})
    assert _words("modbus-battery", 52, 1, alarms=imbalance) == [1 << 6]
    assert _words("modbus-battery", 1014, 1, alarms=imbalance)[0] & 1 << 3 == 0
    over_voltage = frozenset({Alarm.CELL_OVER_VOLTAGE})
    assert _words("modbus-battery", 1014, 1, alarms=over_voltage)[0] & 1 << 3


def test_map_refusals() -> None:
    growatt, battery = _map("growatt-rs485"), _map("modbus-battery")
    view = battery_view((reading(),), limits(), comm_alarm=False)
    assert growatt.write(16, 0x0013, 1) is None  # the handshake
    assert growatt.write(6, 0x0013, 1) is None
    assert growatt.write(16, 0x0013, 2) is ModbusException.ILLEGAL_FUNCTION
    assert growatt.write(16, 0x0019, 1) is ModbusException.ILLEGAL_FUNCTION
    assert battery.write(6, 40, 1) is ModbusException.ILLEGAL_FUNCTION
    assert growatt.read(view, 4, 0x0013, 1) is ModbusException.ILLEGAL_FUNCTION
    assert growatt.read(view, 3, 0x0160, 3) is ModbusException.ILLEGAL_ADDRESS
    assert battery.read(view, 3, 2599, 1) == [0]


# --- over the wire -------------------------------------------------------------------------------------------


@pytest.fixture
def modem(tmp_path: Path) -> Iterator[NullModem]:
    with NullModem(tmp_path, names=("inverter", "battery")) as modem:
        yield modem


def _serve(name: str, endpoint: SerialEndpoint | TcpEndpoint, source: FixedSource) -> Rs485Output:
    profile = load_rs485_profile(name)
    output = Rs485Output(profile, endpoint, profile.address, source, source.clock, SETTINGS, name=name)
    output.start()
    assert output.wait_serving()
    return output


def _rtu(modem: NullModem) -> ModbusSerialClient:
    client = ModbusSerialClient(str(modem.a_path), baudrate=9600, timeout=0.5, retries=0)
    assert client.connect()
    return client


def test_growatt_over_rtu(modem: NullModem) -> None:
    source = FixedSource()
    output = _serve("growatt-rs485", SerialEndpoint(str(modem.b_path), 9600), source)
    client = _rtu(modem)
    try:
        handshake = client.write_registers(0x0013, [0x0C00], device_id=1)
        assert not handshake.isError()
        assert output.writes_accepted == 1
        reply = client.read_holding_registers(0x0013, count=0x11, device_id=1)
        assert not reply.isError()
        assert reply.registers[0x15 - 0x13] == 55 and reply.registers[0x19 - 0x13] == 9000
        assert reply.registers[0x21 - 0x13 :] == [5520, 0, 13500]
        refused = client.write_registers(0x0019, [0], device_id=1)
        assert refused.isError() and refused.exception_code == 1  # illegal function
        refused = client.write_register(0x0021, 5800, device_id=1)
        assert refused.isError() and refused.exception_code == 1
        with pytest.raises(ModbusIOException):
            client.read_holding_registers(0x0013, count=1, device_id=2)  # another unit: silence
        # Stale BMS data: zero current limits, enables cleared.
        source.clock.advance(30)
        stale = client.read_holding_registers(0x0013, count=0x11, device_id=1)
        assert stale.registers[0] & (1 << 5 | 1 << 6) == 0
        assert stale.registers[0x19 - 0x13] == 0 and stale.registers[0x23 - 0x13] == 0
        # Older than silence_after_s: the inverter must hear nothing.
        source.clock.advance(60)
        with pytest.raises(ModbusIOException):
            client.read_holding_registers(0x0013, count=1, device_id=1)
    finally:
        client.close()
        output.stop()


def test_voltronic_over_rtu(modem: NullModem) -> None:
    source = FixedSource()
    output = _serve("voltronic-rs485", SerialEndpoint(str(modem.b_path), 9600), source)
    client = _rtu(modem)
    try:
        reply = client.read_holding_registers(0x0070, count=5, device_id=1)
        assert reply.registers == [552, 496, 900, 1350, 0xC0]
        source.limits = limits(charge_current_limit_a=40.0)  # live: the next poll sees the new limit
        assert client.read_holding_registers(0x0072, count=1, device_id=1).registers == [400]
        source.state = FailsafeState.STALE  # the source's own verdict counts too
        assert client.read_holding_registers(0x0070, count=5, device_id=1).registers == [552, 496, 0, 0, 0]
        refused = client.write_registers(0x0070, [500], device_id=1)
        assert refused.isError() and refused.exception_code == 1
    finally:
        client.close()
        output.stop()


def test_modbus_battery_over_rtu_and_tcp(modem: NullModem) -> None:
    source = FixedSource()
    rtu = _serve("modbus-battery", SerialEndpoint(str(modem.b_path), 9600), source)
    # The fake clock jumps 100 s below: an idle timeout longer than that keeps the TCP client connected.
    tcp = _serve("modbus-battery", TcpEndpoint("127.0.0.1", 0, idle_timeout_s=3600), source)
    assert tcp.server.bound_port
    serial_client = _rtu(modem)
    tcp_client = ModbusTcpClient("127.0.0.1", port=tcp.server.bound_port, timeout=1, retries=0)
    assert tcp_client.connect()
    try:
        for client in (serial_client, tcp_client):
            holding = client.read_holding_registers(40, count=4, device_id=1)
            inputs = client.read_input_registers(40, count=4, device_id=1)
            assert holding.registers == inputs.registers == [5520, 900, 1350, 4960]
            assert client.read_holding_registers(100, count=16, device_id=1).registers[-1] == 3290
            refused = client.write_register(41, 0, device_id=1)
            assert refused.isError() and refused.exception_code == 1
            coils = client.write_coil(0, True, device_id=1)
            assert coils.isError() and coils.exception_code == 1
        # Too old even for zero limits: a read-only map still answers, saying why.
        source.clock.advance(100)
        for client in (serial_client, tcp_client):
            words = client.read_holding_registers(0, count=44, device_id=1).registers
            assert words[1] == 3  # silent
            assert words[4] & 0b11 == 0 and words[4] & 1 << 4  # enables cleared, BMS data stale
            assert words[40:44] == [5520, 0, 0, 4960]
    finally:
        serial_client.close()
        tcp_client.close()
        rtu.stop()
        tcp.stop()


def test_no_reading_yet_means_no_answer(modem: NullModem) -> None:
    source = FixedSource()
    source.readings, source.limits, source.state = (), None, FailsafeState.WAITING
    output = _serve("modbus-battery", SerialEndpoint(str(modem.b_path), 9600), source)
    client = _rtu(modem)
    try:
        with pytest.raises(ModbusIOException):
            client.read_holding_registers(0, count=1, device_id=1)
    finally:
        client.close()
        output.stop()


def test_garbage_on_the_line_then_a_good_request(modem: NullModem) -> None:
    source = FixedSource()
    output = _serve("growatt-rs485", SerialEndpoint(str(modem.b_path), 9600), source)
    client = _rtu(modem)
    try:
        modem.inject("a_to_b", bytes(range(256)) + b"\x01\x03\x00")  # noise and a truncated request
        import time

        time.sleep(0.2)
        reply = client.read_holding_registers(0x0015, count=1, device_id=1)
        assert not reply.isError() and reply.registers == [55]
    finally:
        client.close()
        output.stop()
