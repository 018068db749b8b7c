"""``bms-gateway monitor`` on RS485: polling the gateway's Pylontech and Modbus outputs, listening to a line."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
import serial
from rs485_fixtures import FixedSource

from gateway.cli import main
from gateway.cli.monitor_rs485 import FrameSplitter
from gateway.rs485.profile import load_rs485_profile
from gateway.rs485.pylontech_ascii import build_frame, build_request
from gateway.rs485.server import OutputSettings, Rs485Output
from gateway.sim.nullmodem import NullModem
from gateway.transport.serial_server import SerialEndpoint, TcpEndpoint

ERROR_PREFIX: Final = "bms-gateway: error:"
SETTINGS = OutputSettings(bms_timeout_s=10, silence_after_s=60)


def number(line: str, name: str, unit: str) -> float:
    match = re.search(rf"\b{name}=(-?[\d.]+) {re.escape(unit)}(?:\s|$)", line)
    assert match, f"{name}=... {unit} not in {line!r}"
    return float(match.group(1))


def _serve(name: str, endpoint: SerialEndpoint | TcpEndpoint, source: FixedSource) -> Rs485Output:
    profile = load_rs485_profile(name)
    output = Rs485Output(profile, endpoint, profile.address, source, source.clock, SETTINGS, name=name)
    output.start()
    assert output.wait_serving()
    return output


@pytest.fixture
def modem(tmp_path: Path) -> Iterator[NullModem]:
    with NullModem(tmp_path, names=("inverter", "battery")) as modem:
        yield modem


def test_poll_pylontech_prints_the_limits_the_source_holds(
    modem: NullModem, capsys: pytest.CaptureFixture[str]
) -> None:
    output = _serve("pylontech-rs485", SerialEndpoint(str(modem.b_path), 9600), FixedSource())
    try:
        args = ["monitor", "--poll", "--profile", "pylontech-rs485", "--port", str(modem.a_path)]
        assert main([*args, "--count", "1", "--duration", "10"]) == 0
    finally:
        output.stop()
    out, err = capsys.readouterr()
    assert "polling address 2" in err
    lines = out.splitlines()
    requests = [line for line in lines if " inv " in line]
    assert [line.split()[4] for line in requests] == [
        "protocol_version",
        "manufacturer_info",
        "analog_values",
        "alarm_info",
        "system_parameters",
        "charge_discharge_management",
    ], out
    answers = [line for line in lines if " bat " in line]
    assert len(answers) == 6 and all(" ok " in line for line in answers), out
    limits = " ".join(next(line for line in answers if "charge_discharge_management" in line).split())
    assert number(limits, "charge_voltage_limit", "V") == 55.2
    assert number(limits, "charge_current_limit", "A") == 90.0
    assert number(limits, "discharge_current_limit", "A") == 135.0
    assert re.search(r"status=(charge_enable,discharge_enable|discharge_enable,charge_enable)\b", limits), limits
    analog = next(line for line in answers if "analog_values" in line)
    assert "[module 1]" in analog and number(analog, "voltage", "V") == 52.9
    assert 'manufacturer="PYLON"' in next(line for line in answers if "manufacturer_info" in line)


def test_listen_decodes_a_request_response_pair_and_shows_garbage_raw(
    modem: NullModem, capsys: pytest.CaptureFixture[str]
) -> None:
    result: dict[str, int] = {}
    args = ["monitor", "--profile", "pylontech-rs485", "--port", str(modem.a_path), "--count", "4", "--duration", "10"]
    thread = threading.Thread(target=lambda: result.setdefault("status", main(args)), daemon=True)
    thread.start()
    err = ""
    deadline = time.monotonic() + 10
    while "listening only" not in err:
        assert time.monotonic() < deadline, err
        time.sleep(0.02)
        err += capsys.readouterr().err
    line = serial.Serial(str(modem.b_path), 9600, timeout=0.05)
    try:
        bad = bytearray(build_request(2, 0x42, b"\x02"))
        bad[-2] ^= 1  # a bad CHKSUM
        response = build_frame(0x20, 2, 0x46, 0x00, bytes.fromhex("02D7A0C1C00384FABAC0"))
        line.write(b"\x00\xffxx" + build_request(2, 0x92, b"\x02") + response + bytes(bad))
        line.flush()
        thread.join(timeout=10)
    finally:
        line.close()
    assert not thread.is_alive()
    out, err = capsys.readouterr()
    assert result["status"] == 0, err
    garbage, request, answer, broken = (" ".join(text.split()) for text in out.splitlines())
    assert "--- garbage [4] 00 FF 78 78" in garbage
    assert "inv 0x02 0x92 charge_discharge_management request pack=2" in request
    assert "bat 0x02 0x00 charge_discharge_management ok" in answer
    assert number(answer, "charge_voltage_limit", "V") == 55.2
    assert number(answer, "discharge_voltage_limit", "V") == 49.6
    assert number(answer, "charge_current_limit", "A") == 90.0
    assert number(answer, "discharge_current_limit", "A") == 135.0
    assert "--- bad checksum [" in broken


def test_modbus_battery_poll_over_tcp_prints_live_values(capsys: pytest.CaptureFixture[str]) -> None:
    output = _serve("modbus-battery", TcpEndpoint("127.0.0.1", 0), FixedSource())
    try:
        port = str(output.server.bound_port)  # type: ignore[union-attr]
        args = ["monitor", "--poll", "--profile", "modbus-battery", "--host", "127.0.0.1", "--tcp-port", port]
        assert main([*args, "--count", "1", "--duration", "10"]) == 0
    finally:
        output.stop()
    out, err = capsys.readouterr()
    assert "Modbus TCP 127.0.0.1:" in err
    text = " ".join(out.split())
    assert "exception" not in text and "no answer" not in text, out
    assert number(text, "charge_voltage_limit", "V") == 55.2
    assert number(text, "charge_current_limit", "A") == 90.0
    assert number(text, "discharge_current_limit", "A") == 135.0
    assert number(text, "pack_voltage", "V") == 52.9
    assert number(text, "soc", "%") == 55.0
    assert "[module 1]" in text  # the pack's own block, one pack


def test_splitter_cuts_frames_from_garbage() -> None:
    splitter = FrameSplitter()
    assert splitter.feed(b"ab~20") == [(False, b"ab")]
    assert splitter.feed(b"02~x\rzz") == [(False, b"~2002"), (True, b"~x\r")]
    assert splitter.pending and splitter.flush() == b"zz"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--profile", "pylontech-rs485"], "give --port P"),
        (["--profile", "modbus-battery", "--port", "/dev/null"], "add --poll"),
        (["--profile", "pylontech-rs485", "--poll", "--host", "h"], "only --poll with a Modbus TCP profile"),
        (["--profile", "pylontech-rs485", "--port", "p", "--interface", "virtual"], "--interface is for CAN"),
        (["--profile", "pylontech-rs485", "--port", "p", "--count", "0"], "--count must be"),
        (["--profile", "pylontech-rs485", "--port", "p", "--address", "255"], "--address 255 is outside"),
        (["--profile", "pylontech-can", "--interface", "virtual", "--channel", "x", "--poll"], "--poll goes with"),
    ],
)
def test_bad_arguments_are_one_line_and_status_2(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["monitor", *args]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith(ERROR_PREFIX) and needle in line, line


def test_a_missing_port_is_one_line_and_status_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["monitor", "--profile", "pylontech-rs485", "--port", str(tmp_path / "nope"), "--duration", "1"]
    assert main(args) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(ERROR_PREFIX) and "cannot open" in line, line
