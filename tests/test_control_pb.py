"""Opt-in BMS control for the JK-PB (``jk-modbus``): the switch-write codec and its guard, the settings passcode
lifted out of the device info as a Secret, the simulator applying switch writes, and end to end through a
null-modem (the gateway on one end, the simulated JK-PB bus on the other) with every request on the wire
checked. The policy is gateway.control's, tested in test_control.py; here it runs against the real protocol.
Passwords must never show in any output or log."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from jk_pb_data import DUMP_BY_NAME, FRAME_BY_TYPE, PASSCODES, modbus_crc, split_requests
from pymodbus.client import ModbusSerialClient
from test_control import (
    ERROR_PREFIX,
    age_write_record,
    config_with,
    limits_of,
    one_error_line,
    restore_logging,
    run_cli,
    write_config,
)
from test_control import (
    assert_no_password as shared_assert_no_password,
)

from gateway.app import open_control, open_driver
from gateway.bms import jk_modbus, jk_modbus_switch
from gateway.bms.control import Switch
from gateway.bms.jk_modbus_control import JkModbusControl
from gateway.bms.jk_modbus_driver import JkModbusDriver, Method
from gateway.bms.jk_modbus_frames import Read, parse_frame
from gateway.bms.jk_modbus_image import decode, image_from_registers
from gateway.bms.jk_modbus_model import SETTINGS_PASSCODE_READ
from gateway.bms.jk_modbus_switch import (
    SWITCH_REGISTERS,
    SwitchWrite,
    decode_switch_request,
    is_permitted_switch_request,
    scan_switch_reply,
    switch_ack,
    switch_of,
    switch_request,
)
from gateway.bms.jk_modbus_tables import INFO, Kind
from gateway.cli import main
from gateway.clock import FakeClock, SystemClock
from gateway.config import load_config, parse_config
from gateway.control import CONTROLS, handle_switch_command, open_controller
from gateway.errors import ConfigError, ControlRefused, FrameError, LinkError
from gateway.model import PackReading
from gateway.secret import REDACTED, Secret
from gateway.sim.jk_modbus import SIMULATOR_SETTINGS_PASSCODE, JkModbusSimulator, SimPack
from gateway.sim.nullmodem import B_TO_A, NullModem
from gateway.sim.scenarios import SCENARIOS

__all__ = ["restore_logging"]  # test_control's autouse fixture: undoes main()'s logging set-up

RIGHT = SIMULATOR_SETTINGS_PASSCODE.reveal()
WRONG = "NotThe1"
UNIT = 3
TIMEOUT_S = 0.5


def assert_no_password(*texts: str) -> None:
    # "1234": the simulator's device passcode, as secret as the other two.
    shared_assert_no_password(*texts, passwords=(RIGHT, WRONG, "1234"))


# ---------------------------------------------------------------------------------------------------------
# The codec
# ---------------------------------------------------------------------------------------------------------

PUBLISHED = {
    # unit 1, as in a Rust JK-PB client's tests (CRCs computed independently of ours)
    (Switch.CHARGE, True): "01 10 10 70 00 02 04 00 00 00 01 F8 8B",
    (Switch.CHARGE, False): "01 10 10 70 00 02 04 00 00 00 00 39 4B",
    (Switch.BALANCER, True): "01 10 10 78 00 02 04 00 00 00 01 F9 2D",
    (Switch.BALANCER, False): "01 10 10 78 00 02 04 00 00 00 00 38 ED",
}


@pytest.mark.parametrize(("setting", "expected"), PUBLISHED.items())
def test_switch_requests_match_the_published_bytes(setting: tuple[Switch, bool], expected: str) -> None:
    assert switch_request(SwitchWrite(1, *setting)) == bytes.fromhex(expected)


@pytest.mark.parametrize("unit", [1, 15, 247])
@pytest.mark.parametrize(
    ("switch", "register"), [(Switch.CHARGE, 0x1070), (Switch.DISCHARGE, 0x1074), (Switch.BALANCER, 0x1078)]
)
@pytest.mark.parametrize("on", [True, False])
def test_switch_request_layout(unit: int, switch: Switch, register: int, on: bool) -> None:
    request = switch_request(SwitchWrite(unit, switch, on))
    assert request[:7] == bytes((unit, 0x10)) + register.to_bytes(2, "big") + b"\x00\x02\x04"  # FC16, 2 registers
    assert request[7:11] == int(on).to_bytes(4, "big")  # the u32, high word first
    assert request[11:] == modbus_crc(request[:11])
    assert decode_switch_request(request) == SwitchWrite(unit, switch, on)
    ack = switch_ack(SwitchWrite(unit, switch, on))
    assert ack == request[:6] + modbus_crc(request[:6])


def test_the_registers_come_from_the_settings_table() -> None:
    assert dict(SWITCH_REGISTERS) == {Switch.CHARGE: 0x1070, Switch.DISCHARGE: 0x1074, Switch.BALANCER: 0x1078}
    for switch, register in SWITCH_REGISTERS.items():
        name = {Switch.CHARGE: "charge_switch", Switch.DISCHARGE: "discharge_switch"}.get(switch, "balancer_switch")
        assert jk_modbus.SETTINGS.address(name) == register


def test_switch_ack_is_the_fc16_echo() -> None:
    assert switch_ack(SwitchWrite(1, Switch.CHARGE, True)) == bytes.fromhex("01 10 10 70 00 02 44 D3")


FORBIDDEN = [
    "01 10 10 6C 00 02 04 00 00 00 01",  # the cell-count setting, next to the charge switch
    "01 10 10 7C 00 02 04 00 00 00 01",  # capacity
    "01 10 10 0C 00 02 04 00 00 0E 42",  # cell OVP
    "01 10 10 72 00 02 04 00 00 00 01",  # between two switches
    "01 10 16 20 00 01 02 00 00",  # a trigger: the polling path's, not this one's
    "01 10 10 70 00 02 04 00 00 00 02",  # a value other than 0 or 1
    "01 10 10 70 00 02 04 00 01 00 00",  # 0x00010000
    "01 10 10 70 00 01 02 00 01",  # one register
    "01 10 10 70 00 02 02 00 01",  # a byte count that does not match
    "01 06 10 70 00 01",  # FC06
    "01 03 10 70 00 02",  # a read is not a switch write either
    "00 10 10 70 00 02 04 00 00 00 01",  # broadcast
    "F8 10 10 70 00 02 04 00 00 00 01",  # unit 248
]


@pytest.mark.parametrize("text", FORBIDDEN)
def test_the_switch_guard_approves_nothing_else(text: str) -> None:
    request = jk_modbus.with_crc(bytes.fromhex(text))
    assert not is_permitted_switch_request(request)
    with pytest.raises(FrameError):
        decode_switch_request(request)


def test_the_switch_guard_refuses_damaged_requests() -> None:
    good = switch_request(SwitchWrite(1, Switch.CHARGE, False))
    assert is_permitted_switch_request(good)
    assert not is_permitted_switch_request(good[:-1] + bytes(((good[-1] + 1) & 0xFF,)))  # bad CRC
    assert not is_permitted_switch_request(good[:-1])
    assert not is_permitted_switch_request(good + b"\x00")
    assert not is_permitted_switch_request(b"")


def test_the_polling_guard_still_refuses_switch_writes() -> None:
    for switch in Switch:
        for on in (True, False):
            assert not jk_modbus.is_permitted_request(switch_request(SwitchWrite(1, switch, on)))


def test_switch_of_is_the_simulators_decoder() -> None:
    assert switch_of(0x1074, (0, 0)) == (Switch.DISCHARGE, False)
    assert switch_of(0x1078, [0, 1]) == (Switch.BALANCER, True)
    assert switch_of(0x1070, (0,)) is None
    assert switch_of(0x1070, (1, 0)) is None
    assert switch_of(0x106C, (0, 1)) is None


def test_scan_switch_reply() -> None:
    write = SwitchWrite(2, Switch.DISCHARGE, False)
    request, ack = switch_request(write), switch_ack(write)
    assert scan_switch_reply(ack, write)
    assert scan_switch_reply(b"\x00\xff" + ack, write)  # noise before it
    assert not scan_switch_reply(ack[:5], write)  # not complete yet
    assert not scan_switch_reply(switch_ack(SwitchWrite(3, Switch.DISCHARGE, False)), write)  # another unit's
    with pytest.raises(FrameError, match=r"^exception reply: unit 2 refused the discharge switch write \(code 2\)"):
        scan_switch_reply(jk_modbus.with_crc(b"\x02\x90\x02"), write)
    with pytest.raises(FrameError, match=r"^bad reply"):
        scan_switch_reply(request[:8], write, final=True)  # the echo of the request is no acknowledgement
    with pytest.raises(ValueError, match="outside 1–247"):
        switch_request(SwitchWrite(0, Switch.CHARGE, True))


# --- the settings passcode: a Secret, the others still blanked -----------------------------------------------


def test_the_settings_passcode_read_is_info_0x70() -> None:
    assert Read(0x1470, 8) == SETTINGS_PASSCODE_READ
    spec = INFO.by_name[jk_modbus.SETTINGS_PASSCODE_NAME]
    assert (spec.offset, spec.length, spec.kind) == (0x70, 16, Kind.SECRET)
    assert SETTINGS_PASSCODE_READ not in (read for reads in jk_modbus.POLL_PLAN.values() for read in reads)


def test_a_real_info_frame_gives_its_settings_passcode_as_a_secret() -> None:
    frame = FRAME_BY_TYPE[3].frame
    image = parse_frame(frame)
    assert isinstance(image.settings_passcode, Secret)
    assert image.settings_passcode.reveal() == "136913"  # the capture's setup passcode (frame offset 0x76)
    assert frame[6 + 0x70 : 6 + 0x76] == b"136913"
    for shown in (repr(image), str(image), repr(decode(image)), str(image.settings_passcode)):
        for passcode in PASSCODES:
            assert passcode not in shown
    assert REDACTED in repr(image)
    for passcode in PASSCODES:  # the bytes are zeroed all the same, the device passcode's (1234) too
        assert passcode.encode() not in image.data


def test_the_real_dump_gives_its_settings_passcode_over_fc03() -> None:
    dump = DUMP_BY_NAME["INFO"]
    image = image_from_registers(INFO, [(dump.address, dump.words)])
    assert image.settings_passcode == Secret("LZet3NuV4MXr")
    assert b"LZet3NuV4MXr" not in image.data and b"1234" not in image.data
    # The dedicated read alone gives it too.
    offset = SETTINGS_PASSCODE_READ.address - dump.address
    words = dump.words[offset // 2 : offset // 2 + SETTINGS_PASSCODE_READ.count]
    alone = image_from_registers(INFO, [(SETTINGS_PASSCODE_READ.address, words)])
    assert alone.settings_passcode == Secret("LZet3NuV4MXr")


def test_no_settings_passcode_unless_all_its_bytes_came() -> None:
    dump = DUMP_BY_NAME["INFO"]
    partial = image_from_registers(INFO, [(0x1470, dump.words[0x70 // 2 : 0x70 // 2 + 4])])  # 8 of 16 bytes
    assert partial.settings_passcode is None
    empty = image_from_registers(INFO, [(0x1470, [0] * 8)])
    assert empty.settings_passcode is None  # all NUL: firmware without one


@pytest.mark.parametrize("password", ["seventeen-chars!!", "pässwörd€"])
def test_a_password_no_jk_pb_can_hold_is_a_config_error(password: str) -> None:
    driver = JkModbusDriver(port="/dev/null-not-opened", clock=FakeClock(), addresses=(1,))
    with pytest.raises(ConfigError, match=r"^control\.password: ") as caught:
        JkModbusControl(driver, Secret(password))
    assert password not in str(caught.value)


def test_registered_for_the_jk_modbus_driver() -> None:
    assert CONTROLS["jk-modbus"] == "gateway.bms.jk_modbus_control:JkModbusControl"
    assert JkModbusControl.name == JkModbusDriver.name == "jk-modbus"


# ---------------------------------------------------------------------------------------------------------
# End to end: the gateway and the simulated JK-PB bus on the two ends of a null-modem
# ---------------------------------------------------------------------------------------------------------


@dataclass
class PbBench:
    modem: NullModem
    simulator: JkModbusSimulator
    clock: FakeClock
    tmp_path: Path
    addresses: tuple[int, ...] = (UNIT,)
    wire: bytearray = field(default_factory=bytearray)

    @property
    def port(self) -> str:
        return str(self.modem.b_path)

    def config(self, control: dict[str, Any] | None, addresses: tuple[int, ...] | None = None) -> Path:
        units = list(addresses or self.addresses)
        data = config_with(control, driver="jk-modbus", port=self.port, addresses=units, timeout_s=TIMEOUT_S, retries=1)
        return write_config(self.tmp_path / "config.yaml", data)

    def driver(self) -> JkModbusDriver:
        return JkModbusDriver(port=self.port, clock=self.clock, addresses=self.addresses, timeout_s=TIMEOUT_S)

    def read(self) -> PackReading:
        """One poll as the gateway makes it (settings read afresh), on a port opened and closed for it."""
        driver = self.driver()
        try:
            return driver.read()[0]
        finally:
            driver.close()

    def requests(self) -> list[bytes]:
        """Every request the gateway put on the wire (each a valid FC03 or FC16 with a good CRC)."""
        return split_requests(bytes(self.wire))

    def writes(self) -> list[bytes]:
        return [r for r in self.requests() if r[1] != 0x03]


def start_pb_bench(tmp_path: Path, **pack_options: Any) -> Iterator[PbBench]:
    clock = FakeClock()
    clock.advance(100)  # normal-charge at t = 100 s: charging, every switch on
    with NullModem(tmp_path / "rs485") as modem:
        simulator = JkModbusSimulator(
            {UNIT: SimPack(SCENARIOS["normal-charge"], **pack_options)}, clock, port=str(modem.a_path)
        )
        bench = PbBench(modem, simulator, clock, tmp_path)
        modem.set_transform(B_TO_A, lambda data: bench.wire.extend(data) or data)
        simulator.start()
        try:
            assert simulator.wait_serving(10), "the simulator never opened its port"
            yield bench
        finally:
            simulator.stop()


@pytest.fixture
def pb(tmp_path: Path) -> Iterator[PbBench]:
    yield from start_pb_bench(tmp_path)


def test_disabled_control_puts_no_write_on_the_wire(pb: PbBench, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    path = pb.config(None)
    config = load_config(path)
    reading = pb.read()
    cli = run_cli("control", "-c", str(path), "charge", "off")
    assert main(["control", "-c", str(path), "discharge", "off"]) == 1
    assert not handle_switch_command(None, "balancer", "OFF").ok
    with pytest.raises(ControlRefused, match="control is off"):
        open_controller(config, pb.driver(), pb.clock)
    assert pb.read().settings == reading.settings

    assert cli.returncode == 1 and cli.stdout == ""
    assert "refused: BMS control is off" in one_error_line(cli.stderr)
    requests = pb.requests()
    assert requests and {r[1] for r in requests} == {0x03}  # FC03 reads only: not one byte of a write
    assert SETTINGS_PASSCODE_READ.address not in {int.from_bytes(r[2:4], "big") for r in requests}
    assert pb.simulator.writes == [] and pb.simulator.switch_overrides(UNIT) == {}


def test_wrong_password_is_refused_and_nothing_is_written(
    pb: PbBench, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = pb.config({"enabled": True, "password": WRONG})
    cli = run_cli("control", "-c", str(path), "charge", "off")
    status = main(["control", "-c", str(path), "charge", "off"])
    out, err = capsys.readouterr()

    assert cli.returncode == status == 1
    line = one_error_line(cli.stderr)
    assert line == f"{ERROR_PREFIX} refused: control.password does not match the settings password the BMS reports"
    assert err.strip() == line and out == "" and cli.stdout == ""
    requests = pb.requests()
    assert {r[1] for r in requests} == {0x03}  # read, compared, refused: no write
    passcode_reads = [r for r in requests if r[2:6] == bytes.fromhex("14 70 00 08")]
    assert len(passcode_reads) == 2  # one per attempt (CLI process, in-process): that is how it compared
    assert pb.simulator.writes == [] and pb.simulator.switch_overrides(UNIT) == {}
    assert pb.read().settings.charge_mos_switch is True
    assert_no_password(cli.stdout, cli.stderr, out, err, caplog.text, *(str(r.args) for r in caplog.records))


def test_right_password_switches_charging_off_and_the_limits_follow(
    pb: PbBench, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = pb.config({"enabled": True, "password": RIGHT})
    config = load_config(path)
    before = pb.read()
    assert before.state.charge_mos_on and before.state.current_a > 0
    assert limits_of(before, config).charge_current_limit_a > 0
    pb.wire.clear()

    assert main(["control", "-c", str(path), "charge", "off"]) == 0
    out, err = capsys.readouterr()
    assert out == "charge switch off: written and verified by reading the BMS back; charge MOS now off\n"
    assert pb.writes() == [switch_request(SwitchWrite(UNIT, Switch.CHARGE, False))]  # exactly one write
    assert pb.simulator.switch_overrides(UNIT) == {Switch.CHARGE: False}

    after = pb.read()
    assert after.settings.charge_mos_switch is False and after.state.charge_mos_on is False
    assert after.settings.discharge_mos_switch is True and after.state.discharge_mos_on is True
    assert after.state.current_a == 0  # no charge current through an open charge MOS
    limits = limits_of(after, config)
    assert limits.charge_current_limit_a == 0 and limits.charge_enable is False
    assert "charge MOS is off" in limits.reasons["charge_current_limit_a"].reason
    assert limits.discharge_current_limit_a > 0
    assert any(r.getMessage() == "control: charge switch set off, verified (asked by cli)" for r in caplog.records)
    assert_no_password(out, err, caplog.text, *(str(r.args) for r in caplog.records))

    # And on again, in a separate process (the write budget's record is shared with it: a minute has passed).
    age_write_record(60)
    cli = run_cli("control", "-c", str(path), "charge", "on")
    assert cli.returncode == 0, cli.stderr
    assert cli.stdout == "charge switch on: written and verified by reading the BMS back; charge MOS now on\n"
    assert_no_password(cli.stdout, cli.stderr)
    again = pb.read()
    assert again.settings.charge_mos_switch is True and limits_of(again, config).charge_current_limit_a > 0
    assert pb.writes()[-1] == switch_request(SwitchWrite(UNIT, Switch.CHARGE, True))


def test_firmware_read_by_trigger_frames(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A pack that answers no FC03: the passcode comes from its info frame, the switch write is the same."""
    for bench in start_pb_bench(tmp_path, answers_fc03=False):
        path = bench.config({"enabled": True, "password": RIGHT})
        assert main(["control", "-c", str(path), "balancer", "off"]) == 0
        assert capsys.readouterr().out == "balancer switch off: written and verified by reading the BMS back\n"
        switch_writes = [r for r in bench.writes() if int.from_bytes(r[2:4], "big") in SWITCH_REGISTERS.values()]
        assert switch_writes == [switch_request(SwitchWrite(UNIT, Switch.BALANCER, False))]
        assert {int.from_bytes(r[2:4], "big") for r in bench.writes()} - set(SWITCH_REGISTERS.values()) <= set(
            jk_modbus.TRIGGER_REGISTERS
        )
        assert bench.simulator.switch_overrides(UNIT) == {Switch.BALANCER: False}
        driver = bench.driver()
        try:
            (reading,) = driver.read()
            assert driver.method_of(driver.pack_ids[0]) is Method.TRIGGER
        finally:
            driver.close()
        assert reading.settings.balancer_enabled is False and reading.state.balancer_on is False


def test_the_polling_driver_shows_the_new_switch_at_once(pb: PbBench) -> None:
    """The Home Assistant path: the poller's own driver must not keep showing the old switch for a minute."""
    config = load_config(pb.config({"enabled": True, "password": RIGHT}))
    driver = pb.driver()
    try:
        assert driver.read()[0].settings.discharge_mos_switch is True  # settings now kept for 60 s
        control = open_controller(config, driver, pb.clock)
        assert isinstance(control.backend, JkModbusControl)
        outcome = handle_switch_command(control, "discharge", "OFF")
        assert outcome.ok, outcome.message
        (reading,) = driver.read()
        assert reading.settings.discharge_mos_switch is False and reading.state.discharge_mos_on is False
        pb.clock.advance(9)
        limited = handle_switch_command(control, "discharge", "ON")
        assert not limited.ok and limited.message.startswith("refused: the last BMS write was 9.0 s ago")
    finally:
        driver.close()
    assert [decode_switch_request(r) for r in pb.writes()] == [SwitchWrite(UNIT, Switch.DISCHARGE, False)]


def test_a_write_lost_on_the_way_is_reported_not_verified(pb: PbBench, capsys: pytest.CaptureFixture[str]) -> None:
    def drop_switch_writes(chunk: bytes) -> bytes:
        pb.wire.extend(chunk)
        return b"" if chunk[1:2] == b"\x10" and chunk[2:4] == b"\x10\x70" else chunk

    path = pb.config({"enabled": True, "password": RIGHT})
    pb.modem.set_transform(B_TO_A, drop_switch_writes)
    started = time.monotonic()
    status = main(["control", "-c", str(path), "charge", "off"])
    out, err = capsys.readouterr()
    assert status == 1 and out == ""
    assert one_error_line(err) == (
        f"{ERROR_PREFIX} charge switch off was written but not verified after 3 reads (the BMS still reports on)"
    )
    assert time.monotonic() - started >= TIMEOUT_S  # it waited for the acknowledgement that never came
    assert len(pb.writes()) == 1 and pb.simulator.writes == []
    assert pb.simulator.switch_overrides(UNIT) == {}


def test_several_packs_on_the_bus_are_refused(pb: PbBench, capsys: pytest.CaptureFixture[str]) -> None:
    path = pb.config({"enabled": True, "password": RIGHT}, addresses=(UNIT, 4))
    assert main(["control", "-c", str(path), "charge", "off"]) == 1
    assert one_error_line(capsys.readouterr().err) == (
        f"{ERROR_PREFIX} refused: BMS control of jk-modbus needs one pack on the bus, bms.addresses lists 2"
    )
    assert pb.requests() == []  # refused before the port was opened


def test_the_simulator_reports_a_configured_passcode(tmp_path: Path) -> None:
    for bench in start_pb_bench(tmp_path, settings_passcode=Secret("0000Own")):
        driver = bench.driver()
        try:
            reading, passcode = driver.read_for_control(UNIT)
        finally:
            driver.close()
        assert passcode == Secret("0000Own") and reading.settings.charge_mos_switch is True
        config = parse_config(
            config_with({"enabled": True, "password": "0000Own"}, driver="jk-modbus", port=bench.port, addresses=[UNIT])
        )
        driver = bench.driver()
        try:
            result = open_controller(config, driver, SystemClock()).set_switch(Switch.CHARGE, False, source="cli")
        finally:
            driver.close()
        assert result.changed and bench.simulator.switch_overrides(UNIT) == {Switch.CHARGE: False}


def test_the_switch_path_sends_nothing_but_a_switch_write(pb: PbBench, monkeypatch: pytest.MonkeyPatch) -> None:
    driver = pb.driver()
    try:
        driver.read()
        # Were the request builder wrong (here: the cell-count setting), the switch path's own guard stops it.
        cell_count_write = jk_modbus.with_crc(bytes.fromhex("03 10 10 6C 00 02 04 00 00 00 08"))
        monkeypatch.setattr(jk_modbus_switch, "switch_request", lambda write: cell_count_write)
        with pytest.raises(LinkError, match=r"^refused to send a request that is not a switch write: 03 10 10 6C"):
            driver.bus.write_switch(SwitchWrite(UNIT, Switch.CHARGE, False))
        time.sleep(0.2)
    finally:
        driver.close()
    assert pb.writes() == [] and pb.simulator.writes == []


def test_the_simulator_applies_switch_writes_and_refuses_others(pb: PbBench) -> None:
    client = ModbusSerialClient(pb.port, baudrate=115200, timeout=1, retries=1)
    assert client.connect()
    try:
        for address, words in ((0x106C, [0, 8]), (0x1070, [0, 2]), (0x1070, [1])):
            refused = client.write_registers(address, words, device_id=UNIT)
            assert refused.isError() and refused.exception_code == 2, (address, words)
        done = client.write_registers(0x1074, [0, 0], device_id=UNIT)
        assert not done.isError() and (done.address, done.count) == (0x1074, 2)
    finally:
        client.close()
    assert pb.simulator.switch_overrides(UNIT) == {Switch.DISCHARGE: False}
    assert pb.simulator.switch_writes_applied == 1
    assert pb.simulator.fc03_words(UNIT, 0x1074, 2) == [0, 0]  # the settings read back as written
    assert pb.simulator.fc03_words(UNIT, 0x106C, 2) == [0, 16]  # the cell count untouched
    assert pb.simulator.step(UNIT).reading.state.discharge_mos_on is False


def test_the_service_runs_without_control_when_several_packs_share_the_bus(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    enabled = {"enabled": True, "password": RIGHT}
    one = parse_config(config_with(enabled, driver="jk-modbus", port="/dev/null-not-opened", addresses=[2]))
    two = parse_config(config_with(enabled, driver="jk-modbus", port="/dev/null-not-opened", addresses=[2, 5]))
    controller = open_control(one, open_driver(one.bms, FakeClock()), FakeClock())
    assert controller is not None and isinstance(controller.backend, JkModbusControl)
    assert open_control(two, open_driver(two.bms, FakeClock()), FakeClock()) is None
    assert (
        "control: refused: BMS control of jk-modbus needs one pack on the bus, bms.addresses lists 2; "
        "running without BMS control"
    ) in caplog.messages
