"""``check`` without the BMS catches what a newcomer gets wrong (newcomer audit, issue 18): a misspelt CAN interface
(refused by the config itself, so ``run`` refuses it too, before telling systemd it is ready), an option the CAN
interface does not take, a serial port that is missing or is no device, a serial speed no adapter uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_cli_bms import restore_logging  # noqa: F401 (autouse: main() sets the log levels of the process)
from test_sd_notify import NotifySocket, notify  # noqa: F401 (a fixture)

from gateway.can_options import INTERFACE_OPTIONS, interface_mistake, option_mistakes
from gateway.cli import main
from gateway.commissioning import Finding, Severity, likely_baudrate, port_finding, review
from gateway.config import parse_config
from gateway.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
PRESENT_PORT = "/dev/null"
"""A character device on every POSIX machine: a port that exists (``check`` never opens it)."""


def gateway_data(port: str = PRESENT_PORT, *, can: dict[str, Any] | None = None, **bms: Any) -> dict[str, Any]:
    return {
        "bms": {"driver": "jk-uart", "port": port, **bms},
        "inverter": {"profile": "pylontech-can", "can": {"interface": "socketcan", "channel": "can0", **(can or {})}},
    }


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


# --- the CAN interface: a config error, for every command ---------------------------------------------------


def test_a_misspelt_can_interface_is_a_config_error_with_a_suggestion() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(gateway_data(can={"interface": "socketcn"}))
    assert (
        str(caught.value) == "inverter.can.interface: python-can has no interface 'socketcn' (did you mean socketcan?)"
    )
    assert caught.value.hint is not None and "slcan" in caught.value.hint and "gs_usb" in caught.value.hint


@pytest.mark.parametrize(("written", "meant"), [("SocketCAN", "socketcan"), ("slcan0", "slcan"), ("vcan", "can")])
def test_near_misses_name_the_interface_meant(written: str, meant: str) -> None:
    mistake = interface_mistake(written, frozenset({"socketcan", "slcan", "can", "virtual"}))
    assert mistake is not None and mistake.problem.endswith(f"(did you mean {meant}?)")


def test_every_interface_python_can_knows_is_accepted() -> None:
    import can.interfaces

    assert {"socketcan", "slcan", "gs_usb", "pcan", "kvaser", "virtual"} <= can.interfaces.VALID_INTERFACES
    for interface in can.interfaces.VALID_INTERFACES:
        assert interface_mistake(interface) is None
        parse_config(gateway_data(can={"interface": interface}))


def test_check_refuses_a_misspelt_can_interface_in_one_line_and_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "-c", str(write(tmp_path, gateway_data(can={"interface": "socketcn"})))]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    error, hint = err.splitlines()
    assert error == (
        "bms-gateway: error: inverter.can.interface: python-can has no interface 'socketcn' (did you mean socketcan?)"
    )
    assert hint.startswith("hint: a CAN HAT (MCP2515) or a CANable with candleLight firmware is socketcan")


def test_run_refuses_a_misspelt_can_interface_before_telling_systemd_it_is_ready(
    tmp_path: Path,
    notify: NotifySocket,  # noqa: F811 (the fixture imported above)
) -> None:
    # The old code retried "CAN interface 'socketcn' not supported" every 5 s for ever, after READY=1.
    data = gateway_data(str(tmp_path / "no-adapter"), can={"interface": "socketcn"})
    data |= {"status": {"enabled": False}, "state_dir": str(tmp_path / "state")}
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "-c", str(write(tmp_path, data)), "--duration", "3"],
        cwd=REPO,
        env={**os.environ, "NOTIFY_SOCKET": notify.path},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 2 and lines[1].startswith("hint: "), result.stderr
    assert lines[0].endswith("inverter.can.interface: python-can has no interface 'socketcn' (did you mean socketcan?)")
    assert not any("READY=1" in message for message in notify.drain())


# --- options of the CAN interface: warnings ------------------------------------------------------------------


def test_an_option_the_interface_does_not_take_is_a_warning_naming_the_likely_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, gateway_data(can={"bitrat": 250000, "fd": False}))
    assert main(["check", "-c", str(config)]) == 0  # python-can accepts it: a warning, not an error
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{config}: OK, 1 warning"
    assert out[1] == "warning: inverter.can.bitrat: socketcan takes no option 'bitrat' (did you mean bitrate?)"
    assert out[2].startswith("  hint: python-can would hand it to the driver, which ignores it; socketcan's options:")


@pytest.mark.parametrize(
    ("interface", "options"),
    [
        ("slcan", {"tty_baudrate": 115200, "sleep_after_open": 0, "timeout": 0.1, "rtscts": False}),
        ("gs_usb", {"index": 0}),
        ("pcan", {"device_id": 1, "auto_reset": True, "f_clock_mhz": 80}),
        ("kvaser", {"accept_virtual": False, "f_clock": 8000000, "brp": 1, "tseg1": 13, "tseg2": 2, "sjw": 1}),
        ("virtual", {"receive_own_messages": True, "rx_queue_size": 10}),
        ("socketcan", {"receive_own_messages": True, "can_filters": []}),
    ],
)
def test_the_options_each_common_interface_takes_pass(interface: str, options: dict[str, object]) -> None:
    assert option_mistakes(interface, options) == []


def test_options_of_an_interface_without_a_list_are_not_judged() -> None:
    assert "seeedstudio" not in INTERFACE_OPTIONS
    assert option_mistakes("seeedstudio", {"frame_type": "STD", "anything": 1}) == []


def test_the_listed_options_are_the_constructors_own() -> None:
    # Guards the lists against a python-can upgrade: every named argument of the constructor is a known option.
    import inspect

    from can.interfaces.slcan import slcanBus
    from can.interfaces.socketcan import SocketcanBus
    from can.interfaces.virtual import VirtualBus

    for interface, bus in (("socketcan", SocketcanBus), ("slcan", slcanBus), ("virtual", VirtualBus)):
        named = {
            name
            for name, parameter in inspect.signature(bus.__init__).parameters.items()
            if parameter.kind is parameter.POSITIONAL_OR_KEYWORD and name not in {"self", "channel", "bitrate"}
        }
        assert named - {"timing"} <= INTERFACE_OPTIONS[interface], interface  # timing: a Python object, not YAML


# --- serial ports: problems ----------------------------------------------------------------------------------


def test_check_fails_for_a_missing_port_and_says_to_plug_the_adapter_in(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = str(tmp_path / "ttyUSB0")
    config = write(tmp_path, gateway_data(port))
    assert main(["check", "-c", str(config)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{config}: valid, but not ready on this machine: 1 problem"
    assert out[1] == f"problem: bms.port: {port} does not exist"
    assert out[2].startswith("  hint: plug the USB adapter in and use its stable name from ls -l /dev/serial/by-id/")
    assert main(["check", "-c", str(config), "--json"]) == 1
    findings = json.loads(capsys.readouterr().out)["findings"]
    assert [(f["severity"], f["key"]) for f in findings] == [("problem", "bms.port")]


def test_the_hint_names_the_adapters_plugged_in_now(tmp_path: Path) -> None:
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    (by_id / "usb-FTDI_FT232R_USB_UART_A10KZ3Q1-if00-port0").symlink_to(PRESENT_PORT)
    finding = port_finding("bms.port", "/dev/ttyUSB7", by_id_dir=by_id)
    assert finding is not None and finding.hint is not None
    assert finding.hint.endswith(f"adapters plugged in now: {by_id}/usb-FTDI_FT232R_USB_UART_A10KZ3Q1-if00-port0")
    gone = port_finding("bms.port", f"{by_id}/usb-CH340-if00-port0", by_id_dir=by_id)
    assert gone is not None and gone.hint is not None and gone.hint.startswith("that adapter is not plugged in")


def test_a_directory_or_a_plain_file_is_not_a_serial_port(tmp_path: Path) -> None:
    plain = tmp_path / "ttyUSB0"
    plain.write_bytes(b"")
    directory = port_finding("bms.port", str(tmp_path))
    assert directory is not None and directory.message == f"{tmp_path} is a directory, not a serial port"
    file = port_finding("bms.port", str(plain))
    assert file is not None and file.message == f"{plain} is a plain file, not a serial port"
    assert file.hint is not None and f"sudo rm {plain}" in file.hint
    assert port_finding("bms.port", PRESENT_PORT) is None


def test_every_port_the_config_uses_is_checked_under_its_own_key(tmp_path: Path) -> None:
    data = {
        "bms": [{"port": str(tmp_path / "a")}, {"port": str(tmp_path / "b"), "driver": "jk-modbus"}],
        "inverter": {"profile": "pylontech-rs485", "serial": {"port": str(tmp_path / "c")}},
        "extra_outputs": [{"profile": "modbus-battery", "serial": {"port": str(tmp_path / "d")}}],
    }
    findings = review(parse_config(data), by_id_dir=tmp_path / "none")
    assert [(f.severity, f.key) for f in findings] == [
        (Severity.PROBLEM, "bms[0].port"),
        (Severity.PROBLEM, "bms[1].port"),
        (Severity.PROBLEM, "inverter.serial.port"),
        (Severity.PROBLEM, "extra_outputs[0].serial.port"),
    ]


def test_a_network_port_and_an_unused_inverter_port_are_not_checked() -> None:
    data = gateway_data("rfc2217://gw.lan:4001", allow_network_port=True)
    data["inverter"]["serial"] = {"port": "/dev/nonexistent"}  # a CAN profile does not use it
    assert review(parse_config(data)) == []


# --- baud rates: warnings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("baudrate", "meant"),
    [(11520, 115200), (1152000, 115200), (960, 9600), (96000, 9600), (19201, 19200), (100000, 115200), (9600, None)],
)
def test_the_likely_meant_baudrate(baudrate: int, meant: int | None) -> None:
    assert likely_baudrate(baudrate) == meant


def test_check_warns_about_an_unusual_baudrate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path, gateway_data(baudrate=11520, can={"interface": "slcan", "tty_baudrate": 11520}))
    assert main(["check", "-c", str(config)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{config}: OK, 2 warnings"
    assert out[1] == "warning: inverter.can.tty_baudrate: 11520 is not a usual serial speed (did you mean 115200?)"
    assert out[3] == "warning: bms.baudrate: 11520 is not a usual serial speed (did you mean 115200?)"
    assert out[4].startswith("  hint: both ends must use the same speed: JK BMS 115200")


def test_a_clean_config_says_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write(tmp_path, gateway_data())
    assert main(["check", "-c", str(config)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"{config}: OK"


def test_a_finding_prints_as_a_line_and_a_hint() -> None:
    finding = Finding(Severity.WARNING, "bms.baudrate", "odd", "fix it")
    assert finding.lines() == ["warning: bms.baudrate: odd", "  hint: fix it"]
    assert Finding(Severity.PROBLEM, "k", "m").lines() == ["problem: k: m"]
