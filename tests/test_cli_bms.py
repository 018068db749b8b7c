"""The BMS-side commands: ``read`` against the simulator through a null-modem, ``check``, ``decode``,
``simulate``. Subprocesses where the real process matters (exit status, stderr, the serial port), otherwise
``gateway.cli.main`` in this process."""

from __future__ import annotations

import json
import logging
import os
import re
import selectors
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jk_frames import REPLIES, REQUESTS, with_current_raw, with_temperatures, without_protocol_version

from gateway.bms.jk_uart import JkUartDriver
from gateway.cli import main
from gateway.clock import FakeClock, SystemClock
from gateway.errors import LinkTimeout
from gateway.profiles import load_profile
from gateway.sim.jk_uart import JkUartSimulator
from gateway.sim.nullmodem import NullModem
from gateway.sim.scenarios import SCENARIOS, Behaviour

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_CONFIG = REPO / "config" / "example.yaml"
ERROR_PREFIX = "bms-gateway: error:"
SUBPROCESS_TIMEOUT_S = 60
PASSWORD = "123456"  # the factory password every real frame in tests/data carries, and the simulator's
PASSWORD_FORMS = (PASSWORD, PASSWORD.encode().hex(), PASSWORD.encode().hex().upper(), PASSWORD.encode().hex(" "))
"""The password as text and as the hex of its bytes (as a frame dump would show it)."""


def assert_no_password(*texts: str) -> None:
    for text in texts:
        for form in PASSWORD_FORMS:
            assert form not in text, (form, text)


def run_cli(*args: str, timeout_s: float = SUBPROCESS_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def assert_one_error_line(stderr: str, *needles: str) -> str:
    """``stderr`` is one ``bms-gateway: error:`` line mentioning every needle, perhaps with one ``hint:`` line,
    no traceback."""
    lines = stderr.splitlines()
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("hint: ")), stderr
    assert lines[0].startswith(ERROR_PREFIX), stderr
    assert "Traceback" not in stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """``main`` configures logging for a process; undo that for the tests that call it in-process."""
    loggers = [logging.getLogger(name) for name in ("", "can", "gateway.transport")]  # read sets the last
    levels = [logger.level for logger in loggers]
    root = loggers[0]
    handlers = list(root.handlers)
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def gateway_config(port: str, **bms: Any) -> dict[str, Any]:
    return {
        "bms": {"driver": "jk-uart", "port": port, **bms},
        "inverter": {"profile": "pylontech-can", "can": {"interface": "virtual", "channel": "bms-gateway-test"}},
    }


# ---------------------------------------------------------------------------------------------------------
# read
# ---------------------------------------------------------------------------------------------------------

# Per scenario: a scenario time at which the simulator answers (to know it is serving), and the time of the
# CLI's read. Every scenario must be listed here.
READ_PLAN: dict[str, tuple[float, float]] = {
    "normal-charge": (100.0, 100.0),
    "cell-ovp": (55.0, 55.0),  # cell 7 above OVP: tripped
    "cold": (10.0, 10.0),  # −7 °C: charging blocked
    "silent": (5.0, 30.0),  # into the silent window
    "corrupt": (3.5, 4.5),  # the bad-checksum second
}


def wait_until_serving(port: str) -> None:
    """The simulator opens its end of the cable in its own thread; poll until it answers."""
    driver = JkUartDriver(port=port, timeout_s=0.3, retries=0, clock=SystemClock())
    deadline = time.monotonic() + 10
    try:
        while True:
            try:
                driver.read()
                return
            except LinkTimeout:
                assert time.monotonic() < deadline, "the simulator never answered"
    finally:
        driver.close()


def test_read_plan_covers_every_scenario() -> None:
    assert set(READ_PLAN) == set(SCENARIOS)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_read_against_the_simulator(
    scenario: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    warm_t, read_t = READ_PLAN[scenario]
    step = SCENARIOS[scenario].step(read_t)
    assert SCENARIOS[scenario].step(warm_t).behaviour is Behaviour.ANSWER
    clock = FakeClock()
    with NullModem(tmp_path / "cable") as modem:
        simulator = JkUartSimulator(SCENARIOS[scenario], clock, port=str(modem.a_path))
        simulator.start()
        try:
            clock.advance(warm_t)
            wait_until_serving(str(modem.b_path))
            clock.advance(read_t - warm_t)
            config = write_config(tmp_path / "config.yaml", gateway_config(str(modem.b_path), timeout_s=0.3, retries=0))
            result = run_cli("read", "-c", str(config), "--json")
            # Once more in this process, logging everything, so that caplog sees what read logs.
            verbose = gateway_config(str(modem.b_path), timeout_s=0.3, retries=0) | {"logging": {"level": "debug"}}
            status = main(["read", "-c", str(write_config(tmp_path / "verbose.yaml", verbose)), "--json"])
        finally:
            simulator.stop()

    assert "Traceback" not in result.stderr
    assert status == result.returncode
    out, err = capsys.readouterr()
    assert_no_password(result.stdout, result.stderr, out, err, caplog.text)
    assert_no_password(*(str(record.args) for record in caplog.records))
    if step.behaviour is Behaviour.ANSWER:
        assert result.returncode == 0, result.stderr
        out = json.loads(result.stdout)
        expected = step.reading
        state, settings = out["state"], out["settings"]
        assert out["pack_id"] == f"jk-uart:{modem.b_path}"
        assert state["cell_count"] == len(state["cell_voltages_v"]) == 16
        assert state["cell_voltages_v"] == pytest.approx(list(expected.state.cell_voltages_v), abs=0.0005)
        assert state["soc_pct"] == expected.state.soc_pct
        assert state["current_a"] == pytest.approx(expected.state.current_a, abs=0.005)
        assert state["alarms"] == sorted(alarm.value for alarm in expected.state.alarms)
        assert state["charge_mos_on"] is expected.state.charge_mos_on
        assert settings["cell_count"] == 16
        assert settings["cell_ovp_v"] == pytest.approx(3.65)  # the scenario's stated OVP
        assert settings["cell_ovp_v"] == pytest.approx(expected.settings.cell_ovp_v)
        assert settings["cell_uvp_v"] == pytest.approx(expected.settings.cell_uvp_v)
        assert out["implausible"] is None
        limits = out["limits"]
        assert set(limits["reasons"]) >= {
            "charge_current_limit_a",
            "discharge_current_limit_a",
            "charge_voltage_limit_v",
            "discharge_voltage_limit_v",
        }
        assert out["thresholds"]["bulk_cell_v"] == pytest.approx(3.45)  # LiFePO4, OVP 3.65: min(3.45, 3.55)
        if scenario == "normal-charge":
            assert limits["charge_current_limit_a"] > 0 and limits["charge_enable"] is True
        if scenario == "cold":
            assert "battery_under_temperature" in state["alarms"]
            assert state["charge_mos_on"] is False
            assert limits["charge_current_limit_a"] == 0 and limits["charge_enable"] is False
            assert limits["reasons"]["charge_current_limit_a"]["limiter"] == "alarm"
        if scenario == "cell-ovp":
            assert "cell_over_voltage" in state["alarms"]
            assert state["cell_voltages_v"][6] > settings["cell_ovp_v"]
            assert limits["charge_current_limit_a"] == 0
            assert "cell_over_voltage" in limits["reasons"]["charge_current_limit_a"]["reason"]
            # Adaptive polling: the service would poll this pack fast, and read says why.
            rate = out["poll_rate"]
            assert (rate["interval_s"], rate["fast"]) == (0.2, True)
            assert rate["why"].startswith("fast: cell 7 past the charge knee 3.400 V (3.7")
        if scenario == "normal-charge":
            assert out["poll_rate"]["fast"] is False and out["poll_rate"]["interval_s"] == 1.0
    elif step.behaviour is Behaviour.SILENT:
        assert result.returncode == 1
        assert result.stdout == ""
        assert_one_error_line(result.stderr, str(modem.b_path), "no reply")
    elif step.behaviour is Behaviour.BAD_CHECKSUM:
        assert result.returncode == 1
        assert result.stdout == ""
        assert_one_error_line(result.stderr, "bad checksum")
    else:  # pragma: no cover - READ_PLAN picks only the behaviours above
        pytest.fail(f"no expectation for {step.behaviour}")


def test_read_of_a_missing_port_is_one_line_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "ttyUSB-gone"
    config = write_config(tmp_path / "config.yaml", gateway_config(str(missing), timeout_s=0.3, retries=0))
    result = run_cli("read", "-c", str(config))
    assert result.returncode == 1
    assert result.stdout == ""
    assert_one_error_line(result.stderr, str(missing))


# ---------------------------------------------------------------------------------------------------------
# check
# ---------------------------------------------------------------------------------------------------------


def effective_lines(stdout: str) -> dict[str, str]:
    """``check``'s indented "key  value  from origin" lines, by key."""
    rows: dict[str, str] = {}
    for line in stdout.splitlines():
        if line.startswith("  ") and " from " in line:
            rows[line.split()[0]] = line
    return rows


def example_config_here(tmp_path: Path) -> Path:
    """The example config with a BMS port that exists on every machine (check fails for a missing port)."""
    path = tmp_path / "example.yaml"
    path.write_text(EXAMPLE_CONFIG.read_text().replace("port: /dev/ttyUSB0", "port: /dev/null"), encoding="utf-8")
    return path


def test_check_accepts_the_example_config_and_shows_origins(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = example_config_here(tmp_path)
    assert main(["check", "-c", str(config)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert f"{config}: OK" in out
    profile = load_profile("pylontech-can")
    rows = effective_lines(out)
    bitrate = rows["inverter.can.bitrate"].split()
    assert bitrate[1] == str(yaml.safe_load(EXAMPLE_CONFIG.read_text())["inverter"]["can"]["bitrate"])
    assert rows["inverter.can.bitrate"].endswith("from config")
    silence = rows["failsafe.silence_after_s"].split()
    assert float(silence[1]) == profile.silence_after_s  # the example leaves it to the profile
    assert rows["failsafe.silence_after_s"].endswith("from profile pylontech-can")
    # The example writes the default value 10 out: it is still the config's value.
    assert rows["failsafe.bms_timeout_s"].split()[1:] == ["10.0", "from", "config"]
    assert rows["heartbeat.timeout_s"].endswith("from profile pylontech-can")


def test_check_shows_default_for_keys_the_config_leaves_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "config.yaml", gateway_config("/dev/null"))
    assert main(["check", "-c", str(config)]) == 0
    rows = effective_lines(capsys.readouterr().out)
    assert rows["failsafe.bms_timeout_s"].endswith("from default")
    assert rows["inverter.can.bitrate"].endswith("from profile pylontech-can")
    assert rows["failsafe.silence_after_s"].endswith("from profile pylontech-can")


def test_check_json_reports_config_values_over_profile_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = gateway_config("/dev/null")
    data["failsafe"] = {"bms_timeout_s": 12, "silence_after_s": 30}
    config = write_config(tmp_path / "config.yaml", data)
    assert main(["check", "-c", str(config), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    profile = load_profile("pylontech-can")
    effective = out["effective"]
    assert effective["failsafe.silence_after_s"] == {"value": 30, "origin": "config"}
    assert effective["failsafe.bms_timeout_s"] == {"value": 12, "origin": "config"}
    assert effective["inverter.can.bitrate"] == {"value": profile.bitrate, "origin": "profile pylontech-can"}
    assert out["config"]["bms"]["port"] == "/dev/null"


def _bad_configs(tmp_path: Path) -> dict[str, tuple[Path, tuple[str, ...]]]:
    """Name → (config file, what its one error line must mention)."""
    base = gateway_config("/dev/ttyUSB0")

    def variant(name: str, change: dict[str, Any]) -> Path:
        data = json.loads(json.dumps(base))
        for section, values in change.items():
            data.setdefault(section, {}).update(values)
        return write_config(tmp_path / f"{name}.yaml", data)

    bad_yaml = tmp_path / "bad-yaml.yaml"
    bad_yaml.write_text("bms:\n  port: /dev/ttyUSB0\n  baudrate: [115200\ninverter: {}\n", encoding="utf-8")
    missing = tmp_path / "does-not-exist.yaml"
    return {
        "wrong-type": (variant("wrong-type", {"bms": {"baudrate": "fast"}}), ("bms.baudrate",)),
        "unknown-key": (variant("unknown-key", {"bms": {"timeout": 0.5}}), ("bms.timeout",)),
        "missing-file": (missing, (str(missing),)),
        "bad-yaml": (bad_yaml, (str(bad_yaml), "line")),
        "silence-not-after-timeout": (
            variant("silence", {"failsafe": {"bms_timeout_s": 20, "silence_after_s": 20}}),
            ("failsafe.silence_after_s", "failsafe.bms_timeout_s"),
        ),
        "timeout-beyond-profile-silence": (
            # silence_after_s comes from the profile here; the timeout must still be below it.
            variant("timeout", {"failsafe": {"bms_timeout_s": 1000}}),
            ("failsafe.silence_after_s",),
        ),
        "unknown-profile": (
            variant("profile", {"inverter": {"profile": "no-such-profile"}}),
            # The message lists every built-in profile; pylontech-can is one of them.
            ("inverter.profile: unknown profile 'no-such-profile' (built-in: ", "pylontech-can"),
        ),
        "missing-profile-file": (
            variant("profile-file", {"inverter": {"profile": str(tmp_path / "gone.yaml")}}),
            (f"inverter.profile: {tmp_path / 'gone.yaml'}: cannot read: No such file or directory",),
        ),
    }


BAD_CONFIG_NAMES = [
    "wrong-type",
    "unknown-key",
    "missing-file",
    "bad-yaml",
    "silence-not-after-timeout",
    "timeout-beyond-profile-silence",
    "unknown-profile",
    "missing-profile-file",
]


@pytest.mark.parametrize("name", BAD_CONFIG_NAMES)
def test_check_rejects_a_bad_config_in_one_line(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, needles = _bad_configs(tmp_path)[name]
    assert main(["check", "-c", str(config)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_error_line(err, *needles)


@pytest.mark.parametrize("command", ["read", "run"])
@pytest.mark.parametrize("name", ["unknown-profile", "missing-profile-file"])
def test_other_commands_name_the_profile_key(
    command: str, name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``read`` and ``run`` reject the profile before they open the BMS port or the CAN bus."""
    config, needles = _bad_configs(tmp_path)[name]
    assert main([command, "-c", str(config)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_error_line(err, *needles)


def test_run_with_an_unknown_profile_as_a_process(tmp_path: Path) -> None:
    config, needles = _bad_configs(tmp_path)["unknown-profile"]
    result = run_cli("run", "-c", str(config))
    assert result.returncode == 2
    assert result.stdout == ""
    assert_one_error_line(result.stderr, *needles)


def test_check_bad_config_as_a_process(tmp_path: Path) -> None:
    config, needles = _bad_configs(tmp_path)["wrong-type"]
    result = run_cli("check", "-c", str(config))
    assert result.returncode == 2
    assert result.stdout == ""
    assert_one_error_line(result.stderr, *needles)


# ---------------------------------------------------------------------------------------------------------
# decode
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reply", REPLIES, ids=[r.id for r in REPLIES])
def test_decode_real_frames(reply: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["decode", "jk-uart", *reply.frame.hex(" ").split()]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    decoded = json.loads(out)
    expected = reply.expected
    state, settings, device = decoded["state"], decoded["settings"], decoded["device"]
    assert state["cell_voltages_v"] == pytest.approx(expected["cell_voltages_v"])
    assert state["pack_voltage_v"] == pytest.approx(expected["total_voltage_v"])
    assert state["current_a"] == pytest.approx(expected["current_a"])
    assert state["soc_pct"] == expected["soc_pct"]
    assert state["cycle_count"] == expected["cycles"]
    assert settings["cell_ovp_v"] == pytest.approx(expected["cell_ovp_v"])
    assert settings["cell_uvp_v"] == pytest.approx(expected["cell_uvp_v"])
    assert settings["cell_count"] == expected["cell_count_setting_a9"]
    assert settings["max_charge_current_a"] == expected["charge_ocp_a"]
    assert settings["charge_utp_c"] == expected["charge_utp_c"]
    assert device["software_version"] == expected["software_version"]
    assert expected["password"] == PASSWORD
    assert PASSWORD not in out


def test_decode_accepts_one_unbroken_hex_word(capsys: pytest.CaptureFixture[str]) -> None:
    reply = REPLIES[2]
    assert main(["decode", "jk-uart", reply.frame.hex().upper()]) == 0
    assert json.loads(capsys.readouterr().out)["state"]["soc_pct"] == reply.expected["soc_pct"]


def test_decode_of_a_real_frame_at_raw_temperature_100_shows_0_c() -> None:
    # Raw 100 is 0 °C (vendor table "100 benchmark", field reports dbus-serialbattery #354, esphome-jk-bms #685).
    frame = with_temperatures(REPLIES[2].frame, 100)
    result = run_cli("decode", "jk-uart", *frame.hex(" ").split())
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout)["state"]
    assert state["mos_temperature_c"] == 0
    assert state["battery_temperatures_c"] == [0, 0]


def test_decode_notes_a_frame_without_protocol_version(capsys: pytest.CaptureFixture[str]) -> None:
    frame = without_protocol_version(with_current_raw(REPLIES[1].frame, 11000))  # −10 A in version 0
    assert main(["decode", "jk-uart", frame.hex()]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["state"]["current_a"] == -10.0
    assert "tag 0xC0" in err and "version 0" in err


def _with_bad_checksum(frame: bytes) -> bytes:
    return frame[:-1] + bytes([(frame[-1] + 1) & 0xFF])


@pytest.mark.parametrize(
    ("words", "needle"),
    [
        pytest.param(["4E", "57", "ZZ"], "hex", id="not-hex"),
        pytest.param(["4E5"], "hex", id="odd-digits"),
        pytest.param(_with_bad_checksum(REPLIES[0].frame).hex(" ").split(), "bad checksum", id="bad-checksum"),
        pytest.param(REPLIES[0].frame[:100].hex(" ").split(), "truncated", id="truncated"),
        pytest.param(REQUESTS[0].frame.hex(" ").split(), "not a reply", id="a-request"),
    ],
)
def test_decode_rejects_bad_input_in_one_line(
    words: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["decode", "jk-uart", *words]) in (1, 2)
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_error_line(err, needle)


def test_decode_bad_input_as_a_process() -> None:
    result = run_cli("decode", "jk-uart", *_with_bad_checksum(REPLIES[1].frame).hex(" ").split())
    assert result.returncode in (1, 2)
    assert result.stdout == ""
    assert_one_error_line(result.stderr, "bad checksum")
    assert PASSWORD not in result.stderr


# ---------------------------------------------------------------------------------------------------------
# simulate
# ---------------------------------------------------------------------------------------------------------


def read_line(stream: Any, within_s: float) -> str:
    """One line from a pipe, without hanging the test if the process never writes it."""
    fd = stream.fileno()
    data = b""
    deadline = time.monotonic() + within_s
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while not data.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no line within {within_s} s (got {data!r})"
            if selector.select(remaining):
                chunk = os.read(fd, 1)
                assert chunk, f"stream closed (got {data!r})"
                data += chunk
    return data.decode()


def test_simulate_serves_a_pty_a_driver_can_read() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "simulate", "jk-uart", "--duration", "2"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        path = read_line(process.stdout, within_s=30).strip()
        assert path.startswith("/dev/")
        driver = JkUartDriver(port=path, timeout_s=0.3, retries=2, clock=SystemClock())
        try:
            (reading,) = driver.read()
        finally:
            driver.close()
        assert len(reading.state.cell_voltages_v) == reading.settings.cell_count == 16
        assert reading.settings.cell_ovp_v == pytest.approx(3.65)
        assert reading.state.current_a > 0  # normal-charge: charging
        assert process.wait(timeout=SUBPROCESS_TIMEOUT_S) == 0
        assert process.stderr is not None
        err = process.stderr.read().decode()
        assert path in err
        assert "Traceback" not in err
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()


def test_simulate_on_a_port_that_cannot_be_opened_is_one_error_line() -> None:
    port = "/dev/nonexist/x"
    result = run_cli("simulate", "jk-uart", "--port", port, "--duration", "5")
    assert result.returncode == 1
    assert result.stdout == ""
    assert_one_error_line(result.stderr, f"cannot open serial port {port}: No such file or directory")


def test_check_shows_the_thresholds_derived_for_a_simulated_bms(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = example_config_here(tmp_path)
    assert main(["check", "-c", str(config), "--scenario", "normal-charge"]) == 0
    out = capsys.readouterr().out
    # The simulated 16S LiFePO4 pack: OVP 3.65 V → bulk min(3.45, 3.55) = 3.45 V, cut-off (3.45 + 3.65) / 2.
    assert "limit thresholds for sim (16 cells)" in out
    assert re.search(r"bulk / float\s+3\.450 / 3\.375 V\s+default \(lifepo4\)", out), out
    assert re.search(r"charge taper\s+3\.400 → 0 A at 3\.550 V", out), out
    assert main(["check", "-c", str(config), "--scenario", "normal-charge", "--json"]) == 0
    thresholds = json.loads(capsys.readouterr().out)["thresholds"]
    assert thresholds["charge_cutoff_v"] == pytest.approx(3.55)
    assert thresholds["origins"]["chemistry"] == "BMS"
