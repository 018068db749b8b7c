"""Commissioning and bus tools: ``run --dry-run`` against the JK simulator, and ``monitor`` on a virtual bus.

python-can's ``virtual`` bus connects buses of one process only, so the bus tests call ``gateway.cli.main`` in
this process; the dry run's own subprocess test points its CAN config at an adapter that cannot exist.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import can
import pytest
import yaml
from frame_values import fixed_values

import gateway.app
from gateway.cli import main
from gateway.clock import SystemClock
from gateway.profiles import load_profile
from gateway.sim.jk_uart import JkUartSimulator
from gateway.sim.nullmodem import NullModem
from gateway.sim.scenarios import SCENARIOS

REPO: Final = Path(__file__).resolve().parent.parent
DRY_RUN_S: Final = 4.0
LIVE_RUN_S: Final = 3.0
FRAME_IDS: Final = ("0x351", "0x355", "0x356", "0x359", "0x35C", "0x35E")
# As in tests/test_chain_e2e.py: the simulated 16S LiFePO4 pack allows 150 A charge and 200 A discharge.
MAX_CHARGE_CAP_A: Final = 100.0  # below 0.9 × 150 A = 135 A: the cap wins
MAX_DISCHARGE_CAP_A: Final = 250.0  # above 0.9 × 200 A = 180 A: the BMS's share wins
EXPECTED_CVL_V: Final = 55.2  # 16 × min(3.45, OVP 3.65 − 0.10)
EXPECTED_CCL_A: Final = 100.0
EXPECTED_DCL_A: Final = 180.0
EXPECTED_DVL_V: Final = 44.8  # 16 × (UVP 2.70 + 0.10)
ERROR_PREFIX: Final = "bms-gateway: error:"


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """``main`` configures logging for a process; undo that for the tests that call it in-process."""
    loggers = [logging.getLogger(name) for name in ("", "can")]
    levels = [logger.level for logger in loggers]
    handlers = list(loggers[0].handlers)
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)
    for handler in loggers[0].handlers[:]:
        if handler not in handlers:
            loggers[0].removeHandler(handler)


def unique_channel() -> str:
    return f"bms-gateway-test-{uuid.uuid4().hex[:8]}"


def write_config(path: Path, bms_port: Path, can: dict[str, Any], profile: str = "pylontech-can") -> Path:
    data = {
        "bms": {"driver": "jk-uart", "port": str(bms_port), "poll_interval_s": 1.0, "timeout_s": 0.5},
        "inverter": {"profile": profile, "can": can},
        "limits": {"max_charge_current_a": MAX_CHARGE_CAP_A, "max_discharge_current_a": MAX_DISCHARGE_CAP_A},
        "logging": {"level": "info"},
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def drain(bus: can.BusABC, quiet_s: float = 0.5) -> list[can.Message]:
    heard: list[can.Message] = []
    while (message := bus.recv(timeout=quiet_s)) is not None:
        heard.append(message)
    return heard


def number(line: str, field: str, unit: str) -> float:
    match = re.search(rf"\b{field}=(-?[\d.]+) {re.escape(unit)}(?: |$)", line)
    assert match, f"no {field}=… {unit} in {line!r}"
    return float(match.group(1))


# ---------------------------------------------------------------------------------------------------------
# run --dry-run
# ---------------------------------------------------------------------------------------------------------


def test_dry_run_shows_the_limits_decoded_and_puts_nothing_on_the_bus(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    channel = unique_channel()
    opened: list[dict[str, Any]] = []

    def no_bus(**kwargs: Any) -> can.BusABC:
        opened.append(kwargs)
        raise AssertionError(f"the dry run opened a CAN bus: {kwargs}")

    with NullModem(tmp_path / "bms", names=("bms", "gateway")) as modem:
        simulator = JkUartSimulator(SCENARIOS["normal-charge"], SystemClock(), port=str(modem.a_path))
        simulator.start()
        # The inverter's end of the config's bus: it hears whatever anybody sends on the channel.
        inverter = can.Bus(interface="virtual", channel=channel, ignore_config=True)
        try:
            config = write_config(tmp_path / "config.yaml", modem.b_path, {"interface": "virtual", "channel": channel})
            with monkeypatch.context() as patch:
                patch.setattr(can, "Bus", no_bus)
                patch.setattr(gateway.app, "can_bus", no_bus)
                status = main(["run", "-c", str(config), "--dry-run", "--duration", str(DRY_RUN_S)])
            out, _ = capsys.readouterr()
            heard_in_dry_run = drain(inverter)
            # The control: the same config without --dry-run does reach this listener.
            live_status = main(["run", "-c", str(config), "--duration", str(LIVE_RUN_S)])
            heard_live = drain(inverter)
        finally:
            inverter.shutdown()
            simulator.stop()

    assert status == 0 and live_status == 0
    assert opened == []
    assert heard_in_dry_run == [], f"the dry run transmitted {len(heard_in_dry_run)} frames"
    assert {message.arbitration_id for message in heard_live} >= {0x351, 0x35E}, "the control run sent nothing"

    lines = out.splitlines()
    running = [line for line in lines if " stop " not in line]
    limits = [line for line in running if " 0x351 " in line]
    assert len(limits) >= 2, out  # once a second
    for line in limits:
        assert number(line, "charge_voltage_limit", "V") == pytest.approx(EXPECTED_CVL_V)
        assert number(line, "charge_current_limit", "A") == pytest.approx(EXPECTED_CCL_A)
        assert number(line, "discharge_current_limit", "A") == pytest.approx(EXPECTED_DCL_A)
        assert number(line, "discharge_voltage_limit", "V") == pytest.approx(EXPECTED_DVL_V)
    for frame_id in FRAME_IDS:
        assert any(f" {frame_id} " in line for line in running), f"{frame_id} never shown:\n{out}"
    requests = next(line for line in running if " 0x35C " in line)
    assert "charge_enable=1" in requests and "discharge_enable=1" in requests
    assert '"PYLON"' in next(line for line in running if " 0x35E " in line)
    # On stop the final set is shown too, with zero currents, as the real run sends it.
    (final,) = [line for line in lines if " stop " in line and " 0x351 " in line]
    assert number(final, "charge_current_limit", "A") == 0.0
    assert number(final, "discharge_current_limit", "A") == 0.0


def test_dry_run_needs_no_can_adapter(tmp_path: Path) -> None:
    """A subprocess whose CAN adapter cannot exist: the dry run runs, exits 0, and shows the frames."""
    with NullModem(tmp_path / "bms", names=("bms", "gateway")) as modem:
        simulator = JkUartSimulator(SCENARIOS["normal-charge"], SystemClock(), port=str(modem.a_path))
        simulator.start()
        try:
            config = write_config(
                tmp_path / "config.yaml",
                modem.b_path,
                {"interface": "slcan", "channel": str(tmp_path / "no-such-adapter"), "sleep_after_open": 0},
            )
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
            result = subprocess.run(
                [sys.executable, "-m", "gateway", "run", "-c", str(config), "--dry-run", "--duration", "3"],
                cwd=REPO,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        finally:
            simulator.stop()
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "CAN" not in result.stderr.replace("the CAN bus is not opened", ""), result.stderr
    assert "nothing is transmitted" in result.stderr
    limits = [line for line in result.stdout.splitlines() if " 0x351 " in line and " stop " not in line]
    assert limits, result.stdout
    assert number(limits[0], "charge_current_limit", "A") == pytest.approx(EXPECTED_CCL_A)


REQUEST_MODE_PROFILE: Final = """
name: request-test
description: answers each 0x301 with its set, as Growatt LV CAN does
transport: can
bitrate: 500000
byte_order: big
mode: request
request: {id: 0x301}
failsafe: {silence_after_s: 60}
frames:
  - id: 0x311
    name: limits
    dlc: 4
    fields:
      - {name: charge_voltage_limit, offset: 0, size: 2, value: charge_voltage_limit_v, scale: 0.1}
      - {name: charge_current_limit, offset: 2, size: 2, value: charge_current_limit_a, scale: 0.1}
inverter_frames:
  - {id: 0x301, name: request, period_s: 1.0, dlc: 8, fields: []}
"""


def test_dry_run_of_a_request_mode_profile_plays_the_requests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No inverter asks in a dry run, so it plays the request frame itself: the answers are shown."""
    profile = tmp_path / "request-test.yaml"
    profile.write_text(REQUEST_MODE_PROFILE, encoding="utf-8")
    channel = unique_channel()
    with NullModem(tmp_path / "bms", names=("bms", "gateway")) as modem:
        simulator = JkUartSimulator(SCENARIOS["normal-charge"], SystemClock(), port=str(modem.a_path))
        simulator.start()
        inverter = can.Bus(interface="virtual", channel=channel, ignore_config=True)
        try:
            can_config = {"interface": "virtual", "channel": channel}
            config = write_config(tmp_path / "config.yaml", modem.b_path, can_config, profile=str(profile))
            status = main(["run", "-c", str(config), "--dry-run", "--duration", "3.5"])
            heard = drain(inverter)
        finally:
            inverter.shutdown()
            simulator.stop()
    assert status == 0
    assert heard == []
    answers = [line for line in capsys.readouterr().out.splitlines() if " 0x311 " in line and " stop " not in line]
    assert len(answers) >= 2, answers  # one per played request, a second apart
    for line in answers:
        assert number(line, "charge_voltage_limit", "V") == pytest.approx(EXPECTED_CVL_V)
        assert number(line, "charge_current_limit", "A") == pytest.approx(EXPECTED_CCL_A)


# ---------------------------------------------------------------------------------------------------------
# monitor
# ---------------------------------------------------------------------------------------------------------


class Output:
    """Everything ``capsys`` captured so far, read while ``main`` runs in another thread."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self._capsys = capsys
        self.out = ""
        self.err = ""

    def read(self) -> None:
        out, err = self._capsys.readouterr()
        self.out += out
        self.err += err

    def wait_for_err(self, text: str, within_s: float = 10.0) -> None:
        deadline = time.monotonic() + within_s
        while text not in self.err:
            assert time.monotonic() < deadline, f"{text!r} never on stderr: {self.err!r}"
            time.sleep(0.02)
            self.read()


def monitor_in_thread(args: list[str], output: Output) -> tuple[threading.Thread, dict[str, int]]:
    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.setdefault("status", main(args)), daemon=True)
    thread.start()
    output.wait_for_err("listening only")
    return thread, result


def test_monitor_decodes_every_profile_frame_and_shows_unknown_ids_raw(capsys: pytest.CaptureFixture[str]) -> None:
    profile = load_profile("pylontech-can")
    values = fixed_values()
    channel = unique_channel()
    output = Output(capsys)
    args = ["monitor", "--profile", "pylontech-can", "--interface", "virtual", "--channel", channel]
    thread, result = monitor_in_thread([*args, "--duration", "2"], output)
    sender = can.Bus(interface="virtual", channel=channel, ignore_config=True)
    try:
        for can_id, data in profile.encode_all(values):
            sender.send(can.Message(arbitration_id=can_id, data=data, is_extended_id=False))
        sender.send(can.Message(arbitration_id=0x305, data=bytes(8), is_extended_id=False))
        sender.send(can.Message(arbitration_id=0x123, data=b"\x01\x02\xab", is_extended_id=False))
        sender.send(can.Message(arbitration_id=0x351, data=b"\x28\x02", is_extended_id=False))  # short
        sender.send(can.Message(arbitration_id=0x18FF50E5, data=b"\xff", is_extended_id=True))
        thread.join(timeout=10)
    finally:
        sender.shutdown()
    assert not thread.is_alive()
    output.read()
    assert result["status"] == 0, output.err
    lines = output.out.splitlines()
    assert len(lines) == len(profile.frames) + 4, output.out

    def line_of(tag: str) -> str:
        """The first line holding ``tag``, with runs of spaces (column padding) as one."""
        return next(" ".join(line.split()) for line in lines if tag in " ".join(line.split()))

    limits = line_of("bat 0x351 limits")
    assert number(limits, "charge_voltage_limit", "V") == 55.2
    assert number(limits, "charge_current_limit", "A") == 87.3
    assert number(limits, "discharge_current_limit", "A") == 123.4
    assert number(limits, "discharge_voltage_limit", "V") == 44.8
    assert "[8] 28 02 69 03 D2 04 C0 01" in limits  # 552, 873, 1234, 448 little-endian
    measurements = line_of("bat 0x356")
    assert number(measurements, "voltage", "V") == 52.34
    assert number(measurements, "current", "A") == -23.4
    assert number(measurements, "temperature", "°C") == 21.7
    soc = line_of("bat 0x355")
    assert number(soc, "soc", "%") == 67 and number(soc, "soh", "%") == 98
    requests = line_of("bat 0x35C")
    # charge_enable, discharge_enable, force_charge, full_charge_request of tests/frame_values.py
    for flag, bit in (("charge_enable", 1), ("discharge_enable", 0), ("force_charge_1", 1), ("full_charge_request", 0)):
        assert f"{flag}={bit}" in requests, requests
    alarms = line_of("bat 0x359")
    assert "module_count=1" in alarms and 'pn="PN"' in alarms
    assert re.search(r"set \(\d+ of 14\): ", alarms), alarms  # 14 flag fields: only the set ones are named
    assert 'manufacturer="PYLON"' in line_of("bat 0x35E")
    assert "inv 0x305 inverter_heartbeat [8] 00 00 00 00 00 00 00 00" in line_of("0x305")  # no fields
    assert line_of("0x123").split()[1:] == ["---", "0x123", "?", "[3]", "01", "02", "AB"]
    assert "short frame" in [line for line in lines if "0x351" in line][-1]
    assert "--- 0x18FF50E5 ? [1] FF" in line_of("0x18FF50E5")


def test_monitor_shows_a_sunny_islands_charging_current_as_positive(capsys: pytest.CaptureFixture[str]) -> None:
    # SMA FSS-ConnectingBat-TI-en-10 p.30: 0x305 bytes 2-3, S16 0.1 A, "negative while charging". The Sunny
    # Island charging 12.3 A sends -123 = 85 ff; shown in our convention, + charging.
    channel = unique_channel()
    output = Output(capsys)
    args = ["monitor", "--profile", "sma-sunny-island", "--interface", "virtual", "--channel", channel]
    thread, result = monitor_in_thread([*args, "--duration", "1"], output)
    sender = can.Bus(interface="virtual", channel=channel, ignore_config=True)
    try:
        sender.send(can.Message(arbitration_id=0x305, data=bytes.fromhex("0902 85ff e600 de03"), is_extended_id=False))
        thread.join(timeout=10)
    finally:
        sender.shutdown()
    output.read()
    assert result["status"] == 0, output.err
    line = next(" ".join(x.split()) for x in output.out.splitlines() if "0x305" in x)
    assert number(line, "current", "A") == 12.3
    assert number(line, "voltage", "V") == 52.1


def test_monitor_takes_bus_and_profile_from_the_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    channel = unique_channel()
    config = write_config(
        tmp_path / "config.yaml", tmp_path / "unused-port", {"interface": "virtual", "channel": channel}
    )
    output = Output(capsys)
    thread, result = monitor_in_thread(["monitor", "-c", str(config), "--changes", "--duration", "1.5"], output)
    sender = can.Bus(interface="virtual", channel=channel, ignore_config=True)
    try:
        for _ in range(3):  # --changes: the same payload three times is one line
            sender.send(can.Message(arbitration_id=0x355, data=bytes([67, 0, 98, 0]), is_extended_id=False))
        thread.join(timeout=10)
    finally:
        sender.shutdown()
    output.read()
    assert result["status"] == 0, output.err
    assert "profile pylontech-can on virtual channel " + channel in output.err
    (line,) = output.out.splitlines()
    assert "bat 0x355 soc_soh" in line and "soc=67 %" in line and "soh=98 %" in line


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--interface", "virtual"], "--interface needs --channel and --profile"),
        (["--channel", "x"], "--channel goes with --interface"),
        (["--interface", "no-such-can", "--channel", "x", "--profile", "pylontech-can"], "no-such-can"),
        (["--interface", "virtual", "--channel", "x", "--profile", "no-such-profile"], "unknown profile"),
    ],
)
def test_monitor_bad_input_is_one_line_and_status_2(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["monitor", *args]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith(ERROR_PREFIX) and needle in line, line


def test_an_error_the_user_can_fix_gets_a_hint_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # Newcomer audit: a tab in the YAML gave only PyYAML's words ("found character '\t' that cannot start any
    # token"). The error keeps its one line; a second line says what to do.
    config = tmp_path / "tabs.yaml"
    config.write_text("bms:\n\tport: /dev/ttyUSB0\ninverter:\n  profile: deye\n", encoding="utf-8")
    assert main(["check", "-c", str(config)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith(f"{ERROR_PREFIX} config file {config}: invalid YAML at line 2, column 1")
    assert lines[1:] == ["hint: YAML indents with spaces, never tabs: replace the tab(s) on that line with spaces"]
