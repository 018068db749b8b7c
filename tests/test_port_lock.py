"""One program per serial port, and every first-day serial error with its fix (issue 18).

The lock file (``LCK..name``, the UUCP convention) and pyserial's flock on real ptys; a running ``bms-gateway run``
as a child process, whose port ``read`` and ``check --bms`` then take from its status endpoint; the hints of a
missing, forbidden, non-serial or silent port, and of bytes that belong to the other JK driver.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import serial
import yaml
from gateway_process import gateway_process
from jk_frames import REPLIES
from telemetry_fixtures import free_port

from gateway.bms import jk_modbus
from gateway.bms.jk_modbus_driver import RtuBus
from gateway.bms.jk_modbus_model import POLL_PLAN
from gateway.bms.jk_modbus_tables import LIVE
from gateway.bms.jk_uart import JkUartDriver
from gateway.bms.wiring_hints import looks_like
from gateway.cli import main
from gateway.clock import FakeClock, SystemClock
from gateway.errors import FrameError, LinkError, LinkTimeout, error_lines
from gateway.sim.jk_uart import JkUartSimulator
from gateway.sim.nullmodem import NullModem
from gateway.sim.scenarios import SCENARIOS
from gateway.transport.port_lock import PortInUse, PortLock, command_of, lock_directory, lock_name
from gateway.transport.serial_errors import missing_port_hint
from gateway.transport.serial_link import SerialLink

"""Generous: the child imports python-can and pymodbus on a shared two-core machine; waiting costs nothing when
all is well."""


@pytest.fixture
def modem(tmp_path: Path) -> Iterator[NullModem]:
    with NullModem(tmp_path) as nm:
        yield nm


def lock_file_of(port: Path | str) -> Path:
    name = lock_name(str(port))
    assert name is not None
    return lock_directory() / name


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(child.stdout)


# --- the lock file ---------------------------------------------------------------------------------------------


def test_the_lock_file_holds_the_pid_as_ten_ascii_digits_and_is_removed_on_close(modem: NullModem) -> None:
    link = SerialLink(str(modem.b_path))
    link.open()
    lock = lock_file_of(modem.b_path)
    assert lock.name == "LCK.." + os.path.realpath(modem.b_path).removeprefix("/dev/").replace("/", "_")
    assert lock.read_bytes() == f"{os.getpid():10d}\n".encode()
    link.close()
    assert not lock.exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(modem: NullModem) -> None:
    lock = lock_file_of(modem.b_path)
    lock.write_text(f"{dead_pid():10d}\n")
    link = SerialLink(str(modem.b_path))
    link.open()
    assert lock.read_text() == f"{os.getpid():10d}\n"
    link.close()


def test_a_lock_directory_that_cannot_be_written_is_skipped_silently(modem: NullModem, tmp_path: Path) -> None:
    not_a_directory = tmp_path / "plain-file"
    not_a_directory.write_text("")
    lock = PortLock(str(modem.b_path), not_a_directory / "lock")
    lock.acquire()
    assert not lock.held
    # The flock alone still guards the port.
    first = SerialLink(str(modem.b_path), lock_dir=not_a_directory / "lock")
    first.open()
    with pytest.raises(PortInUse):
        SerialLink(str(modem.b_path), lock_dir=not_a_directory / "lock").open()
    first.close()


def test_every_name_of_one_device_shares_its_lock(modem: NullModem, tmp_path: Path) -> None:
    other_name = tmp_path / "by-id-name"
    other_name.symlink_to(os.path.realpath(modem.b_path))
    first = SerialLink(str(modem.b_path))
    first.open()
    with pytest.raises(PortInUse) as refused:
        SerialLink(str(other_name)).open()
    assert str(refused.value) == f"port {other_name} is in use by pid {os.getpid()} ({command_of(os.getpid())})"
    first.close()


# --- another program holds the port ----------------------------------------------------------------------------

HOLD_WITH_FLOCK_ONLY = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_NOCTTY)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("holding", flush=True)
sys.stdin.read()
"""


def test_jk_modbus_on_a_port_flocked_by_another_program_names_it_not_resource_unavailable(modem: NullModem) -> None:
    """The audit's "cannot open serial port …: Resource temporarily unavailable": a holder without a lock file
    (an older gateway, a tool that only flocks) is found in /proc/locks."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_WITH_FLOCK_ONLY, str(modem.b_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        bus = RtuBus(str(modem.b_path), 115200, 0.3)
        with pytest.raises(PortInUse) as refused:
            bus.read_registers(1, POLL_PLAN[LIVE][0])
        error = refused.value
        assert str(error) == f"port {modem.b_path} is in use by pid {holder.pid} (python)"
        assert "Resource temporarily unavailable" not in str(error)
        assert error.hint == "stop that program first: only one program at a time may use a serial port"
    finally:
        holder.communicate("", timeout=10)


def service_config(path: Path, port: Path, status_port: int | None) -> Path:
    """A gateway on the pty ``port`` with a CAN bus of its own (python-can's virtual) and its status endpoint on
    ``status_port`` (None: off)."""
    status: dict[str, Any] = {"enabled": False} if status_port is None else {"port": status_port, "metrics": False}
    config = {
        "bms": {"driver": "jk-uart", "port": str(port), "poll_interval_s": 0.5, "timeout_s": 0.5},
        "inverter": {
            "profile": "pylontech-can",
            "can": {"interface": "virtual", "channel": f"lock-test-{os.getpid()}"},
        },
        "status": status,
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def has_a_reading(document: dict[str, Any]) -> bool:
    """a reading"""
    return document["bms"]["pack"] is not None


@pytest.fixture
def service(modem: NullModem, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path, int]]:
    """``bms-gateway run`` as a child process polling the simulator; yields it, its config and its status port,
    once its endpoint shows a reading."""
    simulator = JkUartSimulator(SCENARIOS["normal-charge"], SystemClock(), port=str(modem.a_path))
    simulator.start()
    status_port = free_port()
    config = service_config(tmp_path / "service.yaml", modem.b_path, status_port)
    try:
        with gateway_process(config, status_port, has_a_reading) as process:
            yield process, config, status_port
    finally:
        simulator.stop()


def test_a_second_program_on_the_services_port_is_refused_naming_the_service(
    service: tuple[subprocess.Popen[str], Path, int], modem: NullModem
) -> None:
    process, _, _ = service
    driver = JkUartDriver(port=str(modem.b_path), timeout_s=0.5, retries=0, clock=FakeClock())
    with pytest.raises(PortInUse) as refused:
        driver.read()
    driver.close()
    assert error_lines(refused.value) == [
        f"port {modem.b_path} is in use by pid {process.pid} (bms-gateway run)",
        "hint: stop it first (sudo systemctl stop bms-gateway) or, while it runs, use bms-gateway status",
    ]


def test_read_and_check_bms_take_the_running_services_reading(
    service: tuple[subprocess.Popen[str], Path, int], capsys: pytest.CaptureFixture[str]
) -> None:
    process, config, _ = service
    assert main(["read", "-c", str(config)]) == 0
    out, err = capsys.readouterr()
    note = f"bms-gateway: from the running service (pid {process.pid} (bms-gateway run)), reading "
    assert err.startswith(note) and err.endswith(" s old\n") and err.count("\n") == 1, err
    assert "SOC" in out and "CCL" in out and "thresholds:" in out

    assert main(["read", "-c", str(config), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["state"]["cell_voltages_v"] and err.startswith(note)

    assert main(["check", "-c", str(config), "--bms"]) == 0
    out, err = capsys.readouterr()
    assert err.startswith(note)
    assert "limit thresholds for jk-uart:" in out


def test_read_while_the_service_runs_without_its_endpoint_names_it_and_says_to_stop_it(
    service: tuple[subprocess.Popen[str], Path, int],
    modem: NullModem,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    process, _, _ = service
    without_status = service_config(tmp_path / "no-status.yaml", modem.b_path, None)
    assert main(["read", "-c", str(without_status)]) != 0
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"bms-gateway: error: port {modem.b_path} is in use by pid {process.pid} (bms-gateway run)"
    assert lines[1].startswith("hint: the service's status endpoint is off (status.enabled: is false in")
    assert lines[1].endswith("stop it first to read the port yourself (sudo systemctl stop bms-gateway)")
    assert len(lines) == 2


# --- every first-day serial error with its fix ------------------------------------------------------------------


def read_error(config: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    assert main(["read", "-c", str(config)]) != 0
    lines = capsys.readouterr().err.splitlines()
    assert "Traceback" not in "\n".join(lines)
    return lines


def port_config(tmp_path: Path, port: Path | str) -> Path:
    return service_config(tmp_path / "config.yaml", Path(port), None)


@pytest.mark.parametrize("kind", ["plain file", "directory"])
def test_a_plain_file_or_a_directory_as_port_is_not_a_serial_device(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    port = tmp_path / "port"
    if kind == "directory":
        port.mkdir()
    else:
        port.write_text("")
    assert read_error(port_config(tmp_path, port), capsys) == [
        f"bms-gateway: error: cannot open serial port {port}: it is a {kind}, not a serial device",
        "hint: the port must be the adapter's device (/dev/ttyUSB0, /dev/ttyACM0, /dev/serial/by-id/...), not a file "
        "or a directory",
    ]


def test_a_missing_port_says_to_plug_the_adapter_in(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    port = tmp_path / "ttyUSB7"
    lines = read_error(port_config(tmp_path, port), capsys)
    assert lines[0] == f"bms-gateway: error: cannot open serial port {port}: No such file or directory"
    assert lines[1].startswith("hint: plug the USB adapter in and check the port's name")


def test_the_missing_port_hint_lists_the_adapters_plugged_in(tmp_path: Path) -> None:
    for name in ("usb-FTDI_FT232R_A1-if00-port0", "usb-1a86_USB_Serial-if00-port0"):
        (tmp_path / name).touch()
    assert missing_port_hint(tmp_path) == (
        "plug the USB adapter in and check the port's name; adapters plugged in now: "
        f"{tmp_path}/usb-1a86_USB_Serial-if00-port0, {tmp_path}/usb-FTDI_FT232R_A1-if00-port0"
    )


def test_permission_denied_names_the_dialout_group(tmp_path: Path) -> None:
    def forbidden(port: str, **settings: Any) -> Any:  # pyserial's own words for EACCES
        raise serial.SerialException(
            errno.EACCES, f"could not open port {port}: [Errno 13] Permission denied: {port!r}"
        )

    with pytest.raises(LinkError) as refused:
        SerialLink("/dev/ttyUSB0", serial_factory=forbidden, lock_dir=tmp_path).open()
    assert error_lines(refused.value) == [
        "cannot open serial port /dev/ttyUSB0: Permission denied",
        "hint: this user may not open serial ports: add it to the dialout group (sudo usermod -aG dialout $USER) "
        "and log in again; the service's user is in it after install.sh",
    ]


NO_REPLY_CAUSES = (
    "bms.driver (jk-uart for JK B-series/BD6A via the RS485 adapter, jk-modbus for JK-PB inverter BMSs)",
    "TX/RX not swapped",
    "GND connected",
    "115200 baud",
    "bms.addresses",
)


def test_a_silent_bms_gets_the_likely_causes_as_hint(modem: NullModem) -> None:
    driver = JkUartDriver(port=str(modem.b_path), timeout_s=0.3, retries=1, clock=FakeClock())
    with pytest.raises(LinkTimeout) as silent:
        driver.read()
    driver.close()
    assert str(silent.value) == f"no reply from {modem.b_path} within 0.3 s"
    assert silent.value.hint is not None
    assert all(cause in silent.value.hint for cause in NO_REPLY_CAUSES), silent.value.hint


class Replies:
    """A fake serial port that answers every write with ``reply`` (what a wire with the other protocol carries)."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.pending = b""
        self.timeout: float | None = None

    @property
    def in_waiting(self) -> int:
        return len(self.pending)

    def read(self, size: int = 1) -> bytes:
        data, self.pending = self.pending[:size], self.pending[size:]
        return data

    def write(self, data: bytes, /) -> int:
        self.pending += self.reply
        return len(data)

    def flush(self) -> None: ...

    def reset_input_buffer(self) -> None:
        self.pending = b""

    def close(self) -> None: ...


JK_PB_FRAME = jk_modbus.FRAME_START + bytes(40)
JK_PB_MASTER_POLL = jk_modbus.with_crc(bytes([2, 0x03, 0x12, 0x00, 0x00, 0x7C]))
"""What a JK-PB set to address 0 sends: it polls the others itself."""


@pytest.mark.parametrize("wire", [JK_PB_FRAME, JK_PB_MASTER_POLL], ids=["55AAEB90 frame", "master poll"])
def test_jk_uart_facing_a_jk_pb_says_the_bytes_look_like_jk_modbus(wire: bytes, tmp_path: Path) -> None:
    driver = JkUartDriver(
        port="fake", timeout_s=0.2, retries=0, clock=FakeClock(), serial_factory=lambda port, **_: Replies(wire)
    )
    with pytest.raises(LinkTimeout) as silent:
        driver.read()
    assert silent.value.hint is not None
    assert silent.value.hint.startswith(
        "the bytes that came back look like the JK-PB (Modbus RTU): try bms.driver: jk-modbus; else check bms.driver"
    )


def test_jk_modbus_facing_a_jk_b_series_says_the_bytes_look_like_jk_uart() -> None:
    frame = REPLIES[0].frame
    bus = RtuBus("fake", 115200, 0.2, serial_factory=lambda port, **_: Replies(frame), wire_sleep=lambda _s: None)
    with pytest.raises(FrameError) as bad:
        bus.trigger(1, LIVE)
    assert bad.value.hint is not None
    assert bad.value.hint.startswith("the bytes that came back look like the JK NW protocol: try bms.driver: jk-uart")


def test_bytes_of_neither_protocol_name_no_driver() -> None:
    assert looks_like(b"") is None
    assert looks_like(bytes(range(0x20, 0x40))) is None
    assert looks_like(jk_modbus.with_crc(bytes([1, 0x03, 2, 0, 7]))) == "jk-modbus"
