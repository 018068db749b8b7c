"""The RS485 serial server and outputs: pty round trips, garbage, a vanishing port, fail-safe states, assembly."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import serial
from rs485_fixtures import FixedSource, limits, reading

from gateway.config import parse_config
from gateway.errors import ConfigError, GatewayError
from gateway.limits import LimitsSettings
from gateway.rs485.profile import load_rs485_profile, load_rs485_profile_text
from gateway.rs485.pylontech_ascii import ReturnCode, build_request, parse_frame
from gateway.rs485.server import (
    LimitsFeed,
    OutputSettings,
    Rs485Output,
    build_extra_outputs,
    build_rs485_output,
    snapshot_source,
)
from gateway.runtime import FailsafeState
from gateway.sim.nullmodem import NullModem
from gateway.transport.serial_server import DelimitedFramer, SerialEndpoint, SerialServer, TcpEndpoint

SETTINGS = OutputSettings(bms_timeout_s=10, silence_after_s=60)


def wait_for(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def exchange(port: serial.Serial, request: bytes, within_s: float = 1.0) -> bytes:
    port.write(request)
    port.flush()
    deadline = time.monotonic() + within_s
    got = b""
    while not got.endswith(b"\r") and time.monotonic() < deadline:
        got += port.read(512)
    return got


# --- the framer ------------------------------------------------------------------------------------------------


def test_framer_skips_garbage_and_restarts_on_a_new_start() -> None:
    framer = DelimitedFramer(b"~", b"\r", 64)
    assert framer.feed(b"xx\r~20") == []
    assert framer.feed(b"02\r~ab~cd\rzz") == [b"~2002\r", b"~cd\r"]
    assert framer.garbage_bytes == 3 + 3 + 2
    assert framer.feed(b"~" + b"0" * 80) == [] and not framer.pending  # too long: dropped


# --- the Pylontech output on a pty --------------------------------------------------------------------------


@pytest.fixture
def line(tmp_path: Path) -> Iterator[tuple[FixedSource, NullModem, Rs485Output, serial.Serial]]:
    source = FixedSource()
    with NullModem(tmp_path, names=("inverter", "battery")) as modem:
        output = Rs485Output(
            load_rs485_profile("pylontech-rs485"),
            SerialEndpoint(str(modem.b_path), 9600),
            2,
            source,
            source.clock,
            SETTINGS,
        )
        output.start()
        assert output.wait_serving()
        port = serial.Serial(str(modem.a_path), 9600, timeout=0.05)
        try:
            yield source, modem, output, port
        finally:
            port.close()
            output.stop()


def test_answers_and_silences(line: tuple[FixedSource, NullModem, Rs485Output, serial.Serial]) -> None:
    source, _modem, _output, port = line
    reply = exchange(port, build_request(2, 0x92, b"\x02"))
    assert parse_frame(reply).info.hex().upper() == "02D7A0C1C00384FABAC0"
    assert exchange(port, build_request(5, 0x92, b"\x05"), within_s=0.3) == b""  # not our address
    source.clock.advance(30)  # stale: zero limits, enables cleared
    assert parse_frame(exchange(port, build_request(2, 0x92, b"\x02"))).info.hex().upper() == "02D7A0C1C00000000000"
    source.clock.advance(60)  # silent: nothing at all, not even an error code
    assert exchange(port, build_request(2, 0x4F), within_s=0.3) == b""
    assert exchange(port, b"~2002464F0000FDB0\r", within_s=0.3) == b""


def test_garbage_partial_and_foreign_frames(line: tuple[FixedSource, NullModem, Rs485Output, serial.Serial]) -> None:
    _source, modem, output, port = line
    port.write(bytes(range(256)) + b"~200246420000")  # noise, then a frame that never ends
    port.flush()
    time.sleep(0.7)  # longer than the frame timeout: the partial frame is dropped
    assert port.read(100) == b""
    foreign = b"~20014A420000FDA2\r"  # another device type
    reply = exchange(port, b"\x00\xff" + foreign + b"~2002464F" + build_request(2, 0x4F), within_s=1.0)
    assert reply == b"~200246000000FDB2\r"  # only the last, whole, request is answered
    bad = bytearray(build_request(2, 0x42, b"\x02"))
    bad[-2] = ord("0") if bad[-2] != ord("0") else ord("1")  # a bad CHKSUM
    assert parse_frame(exchange(port, bytes(bad))).cid2 == ReturnCode.CHECKSUM_ERROR
    assert output.server.requests >= 3 and output.server.handler_errors == 0  # type: ignore[union-attr]
    assert modem.bytes_relayed["b_to_a"] > 0


def test_port_vanishes_and_comes_back(line: tuple[FixedSource, NullModem, Rs485Output, serial.Serial]) -> None:
    _source, modem, output, port = line
    port.close()
    modem.vanish()
    wait_for(lambda: not output.server.serving.is_set())
    modem.reappear()
    assert output.wait_serving(5)
    again = serial.Serial(str(modem.a_path), 9600, timeout=0.05)
    try:
        wait_for(lambda: exchange(again, build_request(2, 0x4F), within_s=0.3) == b"~200246000000FDB2\r")
    finally:
        again.close()


def test_a_failing_handler_does_not_stop_the_server(tmp_path: Path) -> None:
    calls: list[bytes] = []

    def handler(request: bytes) -> bytes | None:
        calls.append(request)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return b"ok\r"

    with NullModem(tmp_path) as modem:
        server = SerialServer(str(modem.b_path), 9600, DelimitedFramer(b"~", b"\r", 64), handler)
        server.start()
        assert server.wait_serving()
        port = serial.Serial(str(modem.a_path), 9600, timeout=0.05)
        try:
            assert exchange(port, b"~1\r", within_s=0.3) == b""
            assert exchange(port, b"~2\r") == b"ok\r"
            assert server.handler_errors == 1
        finally:
            port.close()
            server.stop()


def test_missing_port_is_retried(tmp_path: Path) -> None:
    server = SerialServer(str(tmp_path / "nothing"), 9600, DelimitedFramer(b"~", b"\r", 64), lambda r: None)
    server.reopen_s = 0.05
    server.start()
    try:
        assert not server.wait_serving(0.3)
    finally:
        server.stop()


# --- fail-safe decisions -------------------------------------------------------------------------------------


def _output(source: FixedSource, profile: str = "pylontech-rs485", **kwargs: Any) -> Rs485Output:
    loaded = load_rs485_profile(profile)
    endpoint: SerialEndpoint | TcpEndpoint = SerialEndpoint("/dev/null", 9600)
    return Rs485Output(loaded, endpoint, loaded.address, source, source.clock, SETTINGS, **kwargs)


def test_view_follows_the_failsafe_rules() -> None:
    source = FixedSource()
    output = _output(source)
    view = output.view()
    assert view is not None and view.system["charge_current_limit_a"] == 90.0 and not view.system["comm_alarm"]
    source.state = FailsafeState.STALE
    view = output.view()
    assert view is not None and view.system["charge_current_limit_a"] == 0.0 and view.system["comm_alarm"]
    assert view.system["charge_enable"] is False and view.system["discharge_enable"] is False
    for state in (FailsafeState.SILENT, FailsafeState.WAITING, FailsafeState.STOPPED):
        source.state = state
        assert output.view() is None
    source.state = FailsafeState.NORMAL
    source.limits = None
    assert output.view() is None


def test_stale_silence_profile_goes_silent_at_once(tmp_path: Path) -> None:
    text = load_rs485_profile("pylontech-rs485").source
    yaml_text = Path(text).read_text(encoding="utf-8").replace("stale: zeros", "stale: silence")
    profile = load_rs485_profile_text(yaml_text, str(tmp_path / "quiet.yaml"))
    source = FixedSource()
    output = Rs485Output(profile, SerialEndpoint("/dev/null", 9600), 2, source, source.clock, SETTINGS)
    assert output.view() is not None
    source.clock.advance(11)
    assert output.view() is None


# --- sources ------------------------------------------------------------------------------------------------


def test_limits_feed() -> None:
    source = FixedSource()
    feed = LimitsFeed(source.clock, LimitsSettings(), SETTINGS)
    assert feed() == ((), None, FailsafeState.WAITING)
    feed.on_readings((reading(),))
    _readings, limits_now, state = feed()
    assert state is FailsafeState.NORMAL and limits_now is not None and limits_now.charge_current_limit_a > 0
    feed.on_poll_failed(GatewayError("timeout"))
    source.clock.advance(11)
    assert feed()[2] is FailsafeState.STALE
    source.clock.advance(60)
    assert feed()[2] is FailsafeState.SILENT
    feed.on_readings((reading(cell_voltages_v=(0.0,) * 16),))  # implausible: ignored
    assert feed()[2] is FailsafeState.SILENT


def test_snapshot_source() -> None:
    class Loop:
        def snapshot(self) -> Any:
            class Snap:
                state = FailsafeState.NORMAL
                reading = reading()
                limits = limits()

            return Snap()

    readings, got_limits, state = snapshot_source(Loop())()
    assert len(readings) == 1 and got_limits == limits() and state is FailsafeState.NORMAL


# --- assembly -------------------------------------------------------------------------------------------------


def _config(inverter: dict[str, Any], extra: list[dict[str, Any]] | None = None) -> Any:
    data: dict[str, Any] = {"bms": {"port": "/dev/ttyUSB0"}, "inverter": inverter}
    if extra is not None:
        data["extra_outputs"] = extra
    return parse_config(data)


def test_build_rs485_output() -> None:
    source = FixedSource()
    config = _config({"profile": "pylontech-rs485", "serial": {"port": "/dev/ttyUSB1"}, "address": 0x12})
    output = build_rs485_output(config, source, source.clock)
    assert (output.address, output.endpoint) == (0x12, SerialEndpoint("/dev/ttyUSB1", 9600))
    assert output.settings == OutputSettings(10.0, 60.0)
    growatt = build_rs485_output(
        _config({"profile": "growatt-rs485", "serial": {"port": "/dev/x", "baudrate": 19200}}), source, source.clock
    )
    assert (growatt.address, growatt.endpoint) == (1, SerialEndpoint("/dev/x", 19200))


STEERS = "steers an inverter; only inverter: may (extra outputs are read-only, e.g. modbus-battery)"


@pytest.mark.parametrize(
    ("inverter", "message"),
    [
        (
            {"profile": "pylontech-rs485"},
            "inverter.serial: missing: profile pylontech-rs485 talks RS485, so say which port",
        ),
        (
            {"profile": "pylontech-rs486", "serial": {"port": "p"}},
            "inverter.profile: no built-in RS485 profile named 'pylontech-rs486' (did you mean pylontech-rs485?)",
        ),
        (
            {"profile": "pylontech-rs485", "serial": {"port": "p"}, "address": 250},
            "inverter.address: 250 is outside 1-239 for profile pylontech-rs485",
        ),
        (
            {"profile": "growatt-rs485", "serial": {"port": "p"}, "address": 248},
            "inverter.address: 248 is outside 1-247 for profile growatt-rs485",
        ),
    ],
)
def test_build_rs485_output_errors(inverter: dict[str, Any], message: str) -> None:
    source = FixedSource()
    with pytest.raises(ConfigError) as caught:
        build_rs485_output(_config(inverter), source, source.clock)
    assert str(caught.value) == message


def test_build_extra_outputs() -> None:
    source = FixedSource()
    config = _config(
        {"profile": "pylontech-can"},
        [{"profile": "modbus-battery", "tcp": {}}, {"profile": "modbus-battery", "serial": {"port": "/dev/x"}}],
    )
    tcp, rtu = build_extra_outputs(config, source, source.clock)
    assert tcp.endpoint == TcpEndpoint("127.0.0.1", 5020) and rtu.endpoint == SerialEndpoint("/dev/x", 9600)
    assert build_extra_outputs(_config({"profile": "pylontech-can"}), source, source.clock) == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"profile": "pylontech-rs485", "serial": {"port": "p"}},
            f"extra_outputs[0].profile: pylontech-rs485 {STEERS}",
        ),
        ({"profile": "growatt-rs485", "tcp": {}}, f"extra_outputs[0].profile: growatt-rs485 {STEERS}"),
        (
            {"profile": "modbus-battery", "tcp": {}, "address": 0},
            "extra_outputs[0].address: expected an integer from 1 to 254, got 0",
        ),
    ],
)
def test_build_extra_output_errors(extra: dict[str, Any], message: str) -> None:
    source = FixedSource()
    with pytest.raises(ConfigError) as caught:
        build_extra_outputs(_config({"profile": "pylontech-can"}, [extra]), source, source.clock)
    assert str(caught.value) == message


def test_a_failing_extra_output_does_not_disturb_the_inverter_output(tmp_path: Path) -> None:
    source = FixedSource()
    with NullModem(tmp_path, names=("inverter", "battery")) as modem:
        config = _config(
            {"profile": "pylontech-rs485", "serial": {"port": str(modem.b_path)}},
            [{"profile": "modbus-battery", "serial": {"port": str(tmp_path / "unplugged")}}],
        )
        inverter = build_rs485_output(config, source, source.clock)
        (extra,) = build_extra_outputs(config, source, source.clock)
        extra.start()
        inverter.start()
        port = serial.Serial(str(modem.a_path), 9600, timeout=0.05)
        try:
            assert inverter.wait_serving() and not extra.wait_serving(0.2)
            assert exchange(port, build_request(2, 0x4F)) == b"~200246000000FDB2\r"
        finally:
            port.close()
            inverter.stop()
            extra.stop()
