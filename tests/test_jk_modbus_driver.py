"""The ``jk-modbus`` driver against the JK-PB simulator through a null-modem: one and three packs, a pack that
falls silent, firmware that needs the trigger frames, corrupt replies, the port vanishing and returning, the
real captures replayed, and on the wire: nothing is ever written but the three trigger registers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pytest
from jk_pb_data import DUMP_BY_NAME, DUMP_UNIT, FRAME_BY_TYPE, FRAMES_UNIT, PASSCODES, split_requests
from pymodbus.client import ModbusSerialClient

from gateway.bms import jk_modbus
from gateway.bms.driver import MultiPackDriver, driver_class
from gateway.bms.jk_modbus_driver import BACKOFF_S, JkModbusDriver, Method
from gateway.bms.jk_modbus_model import POLL_PLAN
from gateway.bms.jk_modbus_tables import INFO, LIVE, SETTINGS, TRIGGER_REGISTERS, Block
from gateway.clock import FakeClock
from gateway.errors import FrameError, LinkError, LinkTimeout
from gateway.sim.jk_modbus import JkModbusSimulator, SimPack, pack_variant
from gateway.sim.nullmodem import B_TO_A, NullModem
from gateway.sim.scenarios import SCENARIOS, Behaviour

SCENARIO = SCENARIOS["normal-charge"]
TIMEOUT_S = 0.3


@dataclass
class Bus:
    """A null-modem with the simulator on one end; ``wire`` records every byte the gateway sends."""

    modem: NullModem
    simulator: JkModbusSimulator
    clock: FakeClock
    wire: bytearray = field(default_factory=bytearray)

    @property
    def port(self) -> str:
        return str(self.modem.b_path)

    def driver(
        self,
        addresses: tuple[int, ...] = (1,),
        *,
        retries: int = 0,
        wire_sleep: Callable[[float], None] = time.sleep,
        settings_max_age_s: float = 60.0,
    ) -> JkModbusDriver:
        return JkModbusDriver(
            port=self.port,
            clock=self.clock,
            addresses=addresses,
            timeout_s=TIMEOUT_S,
            retries=retries,
            wire_sleep=wire_sleep,
            settings_max_age_s=settings_max_age_s,
        )

    def requests(self) -> list[bytes]:
        return split_requests(bytes(self.wire))


def start_bus(tmp_path: Path, packs: Mapping[int, SimPack], *, baudrate: int | None = None) -> Bus:
    modem = NullModem(tmp_path / "rs485", baudrate=baudrate)
    modem.start()
    clock = FakeClock()
    clock.advance(100.0)
    simulator = JkModbusSimulator(packs, clock, port=str(modem.a_path))
    bus = Bus(modem, simulator, clock)
    modem.set_transform(B_TO_A, lambda data: bus.wire.extend(data) or data)
    simulator.start()
    assert simulator.wait_serving(10), "the simulator never opened its port"
    return bus


class MakeBus(Protocol):
    def __call__(self, packs: Mapping[int, SimPack], *, baudrate: int | None = None) -> Bus: ...


@pytest.fixture
def bus_of(tmp_path: Path) -> Iterator[MakeBus]:
    started: list[Bus] = []

    def make(packs: Mapping[int, SimPack], *, baudrate: int | None = None) -> Bus:
        bus = start_bus(tmp_path / str(len(started)), packs, baudrate=baudrate)
        started.append(bus)
        return bus

    yield make
    for bus in started:
        bus.simulator.stop()
        bus.modem.stop()


def packs(*addresses: int) -> dict[int, SimPack]:
    """Packs running the scenario, each a little different (pack_variant)."""
    return {unit: SimPack(pack_variant(SCENARIO, index)) for index, unit in enumerate(addresses)}


def functions(requests: list[bytes]) -> set[int]:
    return {r[1] for r in requests}


# --- reading ------------------------------------------------------------------------------------------------


def test_registered_and_a_multi_pack_driver(bus_of: MakeBus) -> None:
    assert driver_class("jk-modbus") is JkModbusDriver
    driver = JkModbusDriver(port="/dev/null-not-opened", clock=FakeClock(), addresses=(1, 2))
    assert isinstance(driver, MultiPackDriver)
    assert driver.pack_ids == ("jk-modbus:/dev/null-not-opened#1", "jk-modbus:/dev/null-not-opened#2")
    with pytest.raises(ValueError, match="distinct Modbus units"):
        JkModbusDriver(port="p", clock=FakeClock(), addresses=(1, 1))


def test_one_pack(bus_of: MakeBus) -> None:
    bus = bus_of(packs(1))
    driver = bus.driver()
    try:
        (reading,) = driver.read()
        expected = bus.simulator.step(1).reading
    finally:
        driver.close()
    assert reading.pack_id == f"jk-modbus:{bus.port}#1"
    assert reading.measured_at_s == bus.clock.monotonic()
    assert reading.state.cell_voltages_v == expected.state.cell_voltages_v
    assert reading.state.soc_pct == expected.state.soc_pct
    assert reading.state.current_a == pytest.approx(expected.state.current_a)
    assert reading.settings.cell_ovp_v == pytest.approx(3.65)
    assert reading.settings.max_charge_current_a == pytest.approx(expected.settings.max_charge_current_a)
    assert reading.device.model == jk_modbus.SIMULATOR_DEVICE.model
    assert driver.pack_errors == {}
    requests = bus.requests()
    assert functions(requests) == {0x03}
    plan = [r for block in (LIVE, SETTINGS, INFO) for r in POLL_PLAN[block]]
    assert [(int.from_bytes(r[2:4], "big"), int.from_bytes(r[4:6], "big")) for r in requests] == [
        (read.address, read.count) for read in plan
    ]
    assert bus.simulator.writes == []


def test_three_packs_in_turn(bus_of: MakeBus) -> None:
    bus = bus_of(packs(1, 2, 3), baudrate=115200)
    driver = bus.driver((1, 2, 3))
    try:
        first = driver.read()
        bus.wire.clear()
        started = time.monotonic()
        second = driver.read()
        elapsed_s = time.monotonic() - started
    finally:
        driver.close()
    assert [r.pack_id for r in first] == [f"jk-modbus:{bus.port}#{unit}" for unit in (1, 2, 3)]
    socs = [r.state.soc_pct for r in second]
    assert socs == [socs[0], socs[0] - 1, socs[0] - 2]  # pack_variant: 1 % lower per pack
    assert len({r.device.serial_number for r in second}) == 3
    # Settings and device info are kept: a later poll reads only the live block, two requests per pack.
    requests = bus.requests()
    assert [r[0] for r in requests] == [1, 1, 2, 2, 3, 3]
    assert all(int.from_bytes(r[4:6], "big") <= 64 for r in requests)
    assert elapsed_s < 1.0  # about 200 bytes per pack at 115200 baud


def test_settings_are_read_again_once_old(bus_of: MakeBus) -> None:
    bus = bus_of(packs(1))
    driver = bus.driver(settings_max_age_s=60.0)
    try:
        driver.read()
        bus.wire.clear()
        bus.clock.advance(30)
        driver.read()
        assert {int.from_bytes(r[2:4], "big") for r in bus.requests()} == {r.address for r in POLL_PLAN[LIVE]}
        bus.wire.clear()
        bus.clock.advance(31)
        (reading,) = driver.read()
    finally:
        driver.close()
    addresses = {int.from_bytes(r[2:4], "big") for r in bus.requests()}
    assert addresses == {r.address for r in POLL_PLAN[LIVE] + POLL_PLAN[SETTINGS]}
    assert reading.settings.measured_at_s == bus.clock.monotonic()


def test_a_silent_pack_leaves_the_others_readable(bus_of: MakeBus) -> None:
    bus = bus_of(packs(1, 2, 3))
    driver = bus.driver((1, 2, 3))
    try:
        assert len(driver.read()) == 3
        bus.simulator.set_behaviour(2, Behaviour.SILENT)
        readings = driver.read()
        assert [r.pack_id for r in readings] == [driver.pack_ids[0], driver.pack_ids[2]]
        error = driver.pack_errors[driver.pack_ids[1]]
        assert isinstance(error, LinkTimeout)
        assert str(error) == f"no reply from unit 2 on {bus.port} within {TIMEOUT_S:g} s"
        # Offline now: one probe per poll, not both methods with retries.
        started = time.monotonic()
        assert len(driver.read()) == 2
        assert time.monotonic() - started < 2 * TIMEOUT_S + 0.2
        bus.simulator.set_behaviour(2, None)
        deadline = time.monotonic() + 10
        while len(driver.read()) < 3:
            assert time.monotonic() < deadline, "pack 2 never rejoined"
        assert driver.pack_errors == {}
    finally:
        driver.close()


def test_an_address_without_a_pack_gets_no_answer(bus_of: MakeBus) -> None:
    bus = bus_of(packs(1))
    driver = bus.driver((1, 9))
    try:
        (reading,) = driver.read()
    finally:
        driver.close()
    assert reading.pack_id.endswith("#1")
    assert isinstance(driver.pack_errors[driver.pack_ids[1]], LinkTimeout)


def test_no_pack_answering_raises(bus_of: MakeBus) -> None:
    bus = bus_of(packs(1, 2, 3))
    for unit in (1, 2, 3):
        bus.simulator.set_behaviour(unit, Behaviour.SILENT)
    driver = bus.driver((1, 2, 3))
    try:
        with pytest.raises(LinkTimeout) as caught:
            driver.read()
    finally:
        driver.close()
    assert str(caught.value) == f"no reply from units 1, 2, 3 on {bus.port} within {TIMEOUT_S:g} s"
    assert set(driver.pack_errors) == set(driver.pack_ids)


def test_a_missing_port_is_one_link_error_for_every_pack(tmp_path: Path) -> None:
    missing = tmp_path / "ttyUSB-gone"
    driver = JkModbusDriver(port=str(missing), clock=FakeClock(), addresses=(1, 2), timeout_s=TIMEOUT_S)
    with pytest.raises(LinkError) as caught:
        driver.read()
    assert not isinstance(caught.value, LinkTimeout)
    assert str(caught.value) == f"cannot open serial port {missing}: No such file or directory"
    assert list(driver.pack_errors) == list(driver.pack_ids)


def test_retries_back_off(bus_of: MakeBus) -> None:
    bus = bus_of(packs(1))
    bus.simulator.set_behaviour(1, Behaviour.SILENT)
    waits: list[float] = []
    driver = bus.driver(retries=2, wire_sleep=waits.append)
    try:
        with pytest.raises(LinkTimeout):
            driver.read()
    finally:
        driver.close()
    backoff = [BACKOFF_S, 2 * BACKOFF_S]
    assert [w for w in waits if w in backoff] == backoff * 2  # FC03, then the trigger frames
    requests = bus.requests()
    assert sum(r[1] == 0x03 for r in requests) == 3 and sum(r[1] == 0x10 for r in requests) == 3


# --- the fall-back and the write guard ----------------------------------------------------------------------


def test_firmware_without_fc03_is_read_with_trigger_frames(bus_of: MakeBus) -> None:
    scenario = pack_variant(SCENARIO, 1)
    bus = bus_of(packs(1, 2) | {2: SimPack(scenario, answers_fc03=False)})
    driver = bus.driver((1, 2))
    try:
        readings = driver.read()
        assert driver.method_of(driver.pack_ids[0]) is Method.MODBUS
        assert driver.method_of(driver.pack_ids[1]) is Method.TRIGGER
        bus.wire.clear()
        later = driver.read()
    finally:
        driver.close()
    assert len(readings) == 2 and driver.pack_errors == {}
    expected = bus.simulator.step(2).reading
    assert later[1].state.soc_pct == expected.state.soc_pct
    assert later[1].state.cell_voltages_v == expected.state.cell_voltages_v
    assert later[1].device.serial_number == "SIM00000001"
    # Pack 2 is now read with one trigger per poll; pack 1 stays on FC03.
    requests = bus.requests()
    assert [r for r in requests if r[0] == 2] == [jk_modbus.trigger_request(2, LIVE)]
    assert functions([r for r in requests if r[0] == 1]) == {0x03}


def assert_only_reads_on_the_wire(requests: list[bytes]) -> None:
    for request in requests:
        if request[1] == 0x10:
            register = int.from_bytes(request[2:4], "big")
            assert register in TRIGGER_REGISTERS, request.hex(" ")
            assert request[4:9] == bytes.fromhex("00 01 02 00 00"), request.hex(" ")  # one word, value 0
        else:
            assert request[1] == 0x03, request.hex(" ")


def test_nothing_but_trigger_registers_is_ever_written(bus_of: MakeBus) -> None:
    bus = bus_of(packs(1, 2, 3) | {3: SimPack(pack_variant(SCENARIO, 2), answers_fc03=False)})
    driver = bus.driver((1, 2, 3))
    try:
        driver.read()
        assert functions([r for r in bus.requests() if r[0] in (1, 2)]) == {0x03}  # FC03 works: no writes
        bus.simulator.set_behaviour(2, Behaviour.BAD_CHECKSUM)
        driver.read()
        bus.simulator.set_behaviour(2, Behaviour.SILENT)
        for _ in range(3):
            driver.read()
        bus.clock.advance(120)  # settings are read again
        driver.read()
    finally:
        driver.close()
    requests = bus.requests()
    assert_only_reads_on_the_wire(requests)
    written = {(int(r[0]), int.from_bytes(r[2:4], "big")) for r in requests if r[1] == 0x10}
    assert {unit for unit, _ in written} == {2, 3}  # only packs whose FC03 reads failed
    assert {register for _, register in written} == set(TRIGGER_REGISTERS)
    assert {(w.unit, w.address) for w in bus.simulator.writes} <= written
    assert all(w.values == (0,) and w.function_code == 0x10 for w in bus.simulator.writes)


def test_the_driver_refuses_to_send_any_other_write(bus_of: MakeBus, monkeypatch: pytest.MonkeyPatch) -> None:
    bus = bus_of(packs(1))
    driver = bus.driver()
    try:
        driver.read()
        sent = len(bus.wire)
        # Through pymodbus: a settings write is stopped in the packet hook, before the port.
        with pytest.raises(LinkError, match=r"^refused to send a request that is not a read: 01 06 10 0C"):
            driver.bus._client.write_register(0x100C, 3700, device_id=1)
        # Through the trigger exchange: a request that is not a trigger write never leaves either.
        setting_write = jk_modbus.with_crc(bytes.fromhex("01 10 10 0C 00 01 02 0E 74"))
        monkeypatch.setattr(jk_modbus, "trigger_request", lambda unit, block: setting_write)
        with pytest.raises(LinkError, match=r"^refused to send"):
            driver.bus.trigger(1, LIVE)
        time.sleep(0.2)
    finally:
        driver.close()
    assert len(bus.wire) == sent
    assert bus.simulator.writes == []


@pytest.mark.parametrize(
    ("behaviour", "fault"),
    [(Behaviour.BAD_CHECKSUM, "bad reply"), (Behaviour.TRUNCATED, "bad reply")],
)
def test_corrupt_replies_are_frame_errors(bus_of: MakeBus, behaviour: Behaviour, fault: str) -> None:
    bus = bus_of(packs(1))
    bus.simulator.set_behaviour(1, behaviour)
    driver = bus.driver()
    try:
        with pytest.raises(FrameError) as caught:
            driver.read()
    finally:
        driver.close()
    assert caught.value.fault == fault
    assert "unit 1" in str(caught.value)


def test_noise_before_a_reply_is_survived_by_the_trigger_read(bus_of: MakeBus) -> None:
    # pymodbus drops a reply that follows noise; the trigger scanner skips to the frame start.
    bus = bus_of(packs(1))
    bus.simulator.set_behaviour(1, Behaviour.GARBAGE_FIRST)
    driver = bus.driver()
    try:
        (reading,) = driver.read()
    finally:
        driver.close()
    assert driver.method_of(reading.pack_id) is Method.TRIGGER
    assert reading.state.soc_pct == bus.simulator.step(1).reading.state.soc_pct


# --- the port vanishing ---------------------------------------------------------------------------------------


def test_port_vanishes_and_returns(bus_of: MakeBus) -> None:
    bus = bus_of(packs(1, 2))
    driver = bus.driver((1, 2))
    try:
        assert len(driver.read()) == 2
        bus.modem.vanish()
        with pytest.raises(LinkError) as caught:
            driver.read()
        assert not isinstance(caught.value, LinkTimeout)
        assert bus.port in str(caught.value)
        with pytest.raises(LinkError, match=r"^cannot open serial port"):
            driver.read()
        bus.modem.reappear()
        deadline = time.monotonic() + 10
        while True:
            try:
                if len(driver.read()) == 2:
                    break
            except LinkError:
                pass
            assert time.monotonic() < deadline, "never read both packs again"
            time.sleep(0.1)
    finally:
        driver.close()
    assert driver.pack_errors == {}


# --- the real captures, replayed --------------------------------------------------------------------------


def raw_image(*names: str) -> bytes:
    """The bytes of a block as the dump's reads show them (passcodes included: the simulator serves them)."""
    data = bytearray(jk_modbus.BLOCK_SIZE)
    for name in names:
        read = DUMP_BY_NAME[name]
        offset = read.address & 0x1FF
        data[offset : offset + 2 * len(read.words)] = b"".join(w.to_bytes(2, "big") for w in read.words)
    return bytes(data)


DUMP_IMAGES: dict[Block, bytes] = {
    LIVE: raw_image("RT_A", "RT_C"),
    SETTINGS: raw_image("SETTINGS_1", "SETTINGS_2", "PACKED_BIT"),
    INFO: raw_image("INFO"),
}


def test_the_simulator_serves_the_dump_word_for_word(bus_of: MakeBus) -> None:
    bus = bus_of({DUMP_UNIT: SimPack(SCENARIO, images=DUMP_IMAGES)})
    client = ModbusSerialClient(bus.port, baudrate=115200, timeout=1, retries=1)
    assert client.connect()
    try:
        for read in DUMP_BY_NAME.values():
            for start in range(0, len(read.words), 64):  # the simulator takes any count; the BMS ≤ about 120
                chunk = read.words[start : start + 64]
                response = client.read_holding_registers(read.address + 2 * start, count=len(chunk), device_id=1)
                assert response.registers == chunk, (read.name, start)
    finally:
        client.close()


def test_the_driver_reads_the_dump(bus_of: MakeBus) -> None:
    bus = bus_of({DUMP_UNIT: SimPack(SCENARIO, images=DUMP_IMAGES)})
    driver = bus.driver((DUMP_UNIT,))
    try:
        (reading,) = driver.read()
    finally:
        driver.close()
    state, settings = reading.state, reading.settings
    assert state.cell_voltages_v == (3.183,) * 16
    assert state.pack_voltage_v == pytest.approx(50.923) and state.soc_pct == 59
    assert state.mos_temperature_c == pytest.approx(23.1)
    assert state.battery_temperatures_c == pytest.approx((21.6, 21.6, 23.1, 21.6, 21.8))
    assert (settings.cell_uvp_v, settings.cell_ovp_v) == pytest.approx((2.58, 3.65))
    assert (settings.max_charge_current_a, settings.max_discharge_current_a) == (40.0, 200.0)
    assert reading.device.model == "JK_PB2A16S20P" and reading.device.serial_number == "50314490295"
    text = json.dumps(reading.to_json())
    assert all(passcode not in text for passcode in PASSCODES)


def test_the_driver_reads_the_real_trigger_frames(bus_of: MakeBus) -> None:
    frames = {jk_modbus.BLOCK_BY_FRAME_TYPE[t]: f.frame for t, f in FRAME_BY_TYPE.items()}
    pack = SimPack(SCENARIO, answers_fc03=False, frames=frames)
    bus = bus_of({FRAMES_UNIT: pack})
    driver = bus.driver((FRAMES_UNIT,))
    try:
        (reading,) = driver.read()
    finally:
        driver.close()
    assert reading.state.pack_voltage_v == pytest.approx(52.695) and reading.state.soc_pct == 55
    assert reading.settings.cell_ovp_v == pytest.approx(3.65) and reading.settings.capacity_ah == 280.0
    assert reading.device.model == "JK_PB2A16S20P"
    writes = [r for r in bus.requests() if r[1] == 0x10]
    assert writes == [jk_modbus.trigger_request(FRAMES_UNIT, block) for block in (LIVE, SETTINGS, INFO)]
    assert writes[0] == bytes.fromhex("03 10 16 20 00 01 02 00 00 CF 91")  # as the JK monitor sent it
    text = json.dumps(reading.to_json())
    assert all(passcode not in text for passcode in PASSCODES)


def test_the_simulator_records_and_refuses_other_writes(bus_of: MakeBus) -> None:
    bus = bus_of(packs(1))
    client = ModbusSerialClient(bus.port, baudrate=115200, timeout=1, retries=1)
    assert client.connect()
    try:
        refused = client.write_registers(0x100C, [3700], device_id=1)
        assert refused.isError() and refused.exception_code == 2  # illegal address: only triggers are writable
    finally:
        client.close()
    assert [(w.unit, w.address, w.values) for w in bus.simulator.writes] == [(1, 0x100C, (3700,))]
    assert bus.simulator.fc03_words(1, 0x100C, 2) == [0, 3650]  # cell OVP unchanged
