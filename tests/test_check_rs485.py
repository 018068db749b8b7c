"""``bms-gateway check`` with an RS485 inverter profile (issue 18): it checks what it checks for CAN (the config,
the profile, this machine's ports, the fail-safe timeline, ``--bms`` thresholds) instead of refusing with "this
command needs a CAN profile", and refuses what ``run`` would refuse."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.cli import main
from gateway.clock import FakeClock
from gateway.config import load_config
from gateway.rs485.profile import rs485_profile_names
from gateway.rs485.server import SourceState, build_rs485_output
from gateway.runtime import FailsafeState

STEERING = sorted(name for name in rs485_profile_names() if name != "modbus-battery")


def never_asked() -> SourceState:
    return (), None, FailsafeState.STOPPED


def rs485_config(tmp_path: Path, profile: str, **inverter: Any) -> Path:
    data = {
        "bms": {"port": "/dev/null"},  # a character device: the port check passes; --bms is not asked
        "inverter": {"profile": profile, "serial": {"port": "/dev/null"}} | inverter,
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("profile", STEERING)
def test_check_accepts_an_rs485_profile_and_shows_its_settings_and_failsafe(
    profile: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = rs485_config(tmp_path, profile)
    assert main(["check", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: OK" in out
    assert f"profile {profile} (" in out
    assert f"  inverter.serial.baudrate  9600      from profile {profile}" in out
    assert "  failsafe.bms_timeout_s    10.0      from default" in out
    assert (
        f"  silent  after 60 s (failsafe.silence_after_s, from profile {profile}):"
        " no answer to the inverter's polls until fresh BMS data returns"
    ) in out
    assert "  stale   after 10 s (failsafe.bms_timeout_s, from default): charge and discharge limits 0 A" in out


def test_the_timeline_check_prints_is_the_one_run_serves_with(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = rs485_config(tmp_path, "pylontech-rs485")
    with path.open("a", encoding="utf-8") as file:
        file.write("failsafe: {bms_timeout_s: 4}\n")
    output = build_rs485_output(load_config(path), never_asked, FakeClock())  # as run builds it, not started
    assert main(["check", "-c", str(path), "--json"]) == 0
    steps = {step["state"]: step for step in json.loads(capsys.readouterr().out)["failsafe"]["steps"]}
    assert steps["stale"]["after_s"] == output.settings.bms_timeout_s == 4
    assert steps["silent"]["after_s"] == output.settings.silence_after_s == 60
    assert steps["silent"]["origin"] == "profile pylontech-rs485"


def test_check_json_gives_the_rs485_rows_with_their_origins(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = rs485_config(tmp_path, "voltronic-rs485", address=3, serial={"port": "/dev/null", "baudrate": 19200})
    with path.open("a", encoding="utf-8") as file:
        file.write("failsafe: {bms_timeout_s: 4, silence_after_s: 25}\n")
    assert main(["check", "-c", str(path), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["profile"]["name"] == "voltronic-rs485"
    assert document["effective"] == {
        "inverter.serial.baudrate": {"value": 19200, "origin": "config"},
        "inverter.address": {"value": 3, "origin": "config"},
        "failsafe.bms_timeout_s": {"value": 4, "origin": "config"},
        "failsafe.silence_after_s": {"value": 25, "origin": "config"},
    }
    steps = document["failsafe"]["steps"]
    assert [(s["state"], s["after_s"]) for s in steps] == [("stale", 4), ("silent", 25)]


def test_check_refuses_an_rs485_profile_without_its_port_as_run_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        yaml.safe_dump({"bms": {"port": "/dev/null"}, "inverter": {"profile": "growatt-rs485"}}), encoding="utf-8"
    )
    assert main(["check", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert "inverter.serial: missing: profile growatt-rs485 talks RS485, so say which port" in err
    assert "Traceback" not in err


def test_check_refuses_an_address_the_profile_cannot_serve(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """0xF5: within what the config takes, but Pylontech needs room above it for 16 packs' addresses."""
    assert main(["check", "-c", str(rs485_config(tmp_path, "pylontech-rs485", address=0xF5))]) == 2
    assert "inverter.address: 245 is outside 1-239 for profile pylontech-rs485" in capsys.readouterr().err


def test_check_with_the_read_only_map_says_it_keeps_answering(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "-c", str(rs485_config(tmp_path, "modbus-battery"))]) == 0
    assert "(failsafe.silence_after_s, from profile modbus-battery): keeps answering, with zero limits" in (
        capsys.readouterr().out
    )
