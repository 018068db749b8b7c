"""What ``bms-gateway check`` verifies without the BMS: the mistakes a newcomer makes that the config's own
validation cannot see.

The config's validation (:mod:`gateway.config`) is pure: it must accept a file written on another machine, so it
never looks at devices. ``check`` is the commissioning tool, run on the gateway itself: here each serial port the
config names must exist and be a character device, a serial speed that no adapter uses (``11520``) is named with
the speed most likely meant, and a pass-through option of ``inverter.can`` that the interface does not take
(``bitrat``) is named with its likely spelling. Each finding is a :class:`Finding`: a *problem* (the gateway
cannot work on this machine as configured: ``check`` exits 1) or a *warning* (it may work, but probably not as
meant).
"""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gateway.can_options import option_mistakes
from gateway.config import Config
from gateway.rs485.profile import is_rs485_profile
from gateway.yaml_schema import _join

BY_ID_DIR: Final = Path("/dev/serial/by-id")
"""Where udev names each USB serial adapter by its vendor, model and serial number: stable across reboots."""
USUAL_BAUDRATES: Final = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)
"""The serial speeds adapters, BMSes and inverters use, bit/s."""
_SHOWN_ADAPTERS: Final = 3
"""At most this many adapters found in :data:`BY_ID_DIR` are named in a hint."""


class Severity(enum.Enum):
    PROBLEM = "problem"
    """The gateway cannot work on this machine as configured."""
    WARNING = "warning"
    """It may work, but probably not as meant."""


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing ``check`` found: its severity, the dotted config key, one line naming it, and what to do."""

    severity: Severity
    key: str
    message: str
    hint: str | None = None

    def lines(self) -> list[str]:
        """As ``check`` prints it: ``problem: bms.port: ...``, then ``  hint: ...`` when there is one."""
        return [f"{self.severity.value}: {self.key}: {self.message}", *([f"  hint: {self.hint}"] if self.hint else [])]

    def to_json(self) -> dict[str, str | None]:
        return {"severity": self.severity.value, "key": self.key, "message": self.message, "hint": self.hint}


def review(config: Config, *, by_id_dir: Path = BY_ID_DIR) -> list[Finding]:
    """Everything :mod:`gateway.commissioning` checks, problems first, each group in the config's order.

    :param by_id_dir: where to look for the adapters plugged in now (for the hint of a missing port).
    """
    findings = [*_can_option_findings(config), *_port_findings(config, by_id_dir), *_baudrate_findings(config)]
    return sorted(findings, key=lambda finding: finding.severity is not Severity.PROBLEM)


# --- CAN options -------------------------------------------------------------------------------------------


def _can_option_findings(config: Config) -> Iterator[Finding]:
    can = config.inverter.can
    if can is None:
        return
    for mistake in option_mistakes(can.interface, can.extra):
        yield Finding(Severity.WARNING, _join("inverter.can", mistake.key), mistake.problem, mistake.hint)
    tty_baudrate = can.extra.get("tty_baudrate")  # slcan's adapter speed: the same typo as any serial port's
    if isinstance(tty_baudrate, int) and not isinstance(tty_baudrate, bool):
        yield from _baudrate_finding("inverter.can.tty_baudrate", tty_baudrate)


# --- serial ports ------------------------------------------------------------------------------------------


def serial_ports(config: Config) -> list[tuple[str, str]]:
    """Every serial port the config uses, as (dotted key, port): the BMS bus(es), the inverter's RS485 port (with
    an RS485 profile) and the extra outputs' ports. Network ports (``rfc2217://``, ``socket://``) are left out:
    they are no device files."""
    buses = config.buses
    ports = [(f"bms[{index}].port" if len(buses) > 1 else "bms.port", bus.port) for index, bus in enumerate(buses)]
    if config.inverter.serial is not None and is_rs485_profile(config.inverter.profile):  # else it is not used
        ports.append(("inverter.serial.port", config.inverter.serial.port))
    for index, output in enumerate(config.extra_outputs):
        if output.serial is not None:
            ports.append((f"extra_outputs[{index}].serial.port", output.serial.port))
    return [(key, port) for key, port in ports if "://" not in port]


def _port_findings(config: Config, by_id_dir: Path) -> Iterator[Finding]:
    for key, port in serial_ports(config):
        finding = port_finding(key, port, by_id_dir=by_id_dir)
        if finding is not None:
            yield finding


def port_finding(key: str, port: str, *, by_id_dir: Path = BY_ID_DIR) -> Finding | None:
    """None when ``port`` is a character device (what a serial port is); else the problem, with what to do."""
    try:
        mode = os.stat(port).st_mode  # follows the /dev/serial/by-id link to the device
    except FileNotFoundError:
        return Finding(Severity.PROBLEM, key, f"{port} does not exist", _missing_port_hint(port, by_id_dir))
    except OSError as error:
        return Finding(
            Severity.PROBLEM,
            key,
            f"{port} cannot be checked: {error.strerror or error}",
            "run check as the user the service runs as, or with sudo",
        )
    if stat.S_ISCHR(mode):
        return None
    pick = "give the device itself: its /dev/serial/by-id/... name (ls -l /dev/serial/by-id/)"
    if stat.S_ISDIR(mode):
        return Finding(Severity.PROBLEM, key, f"{port} is a directory, not a serial port", pick)
    if stat.S_ISREG(mode):
        return Finding(
            Severity.PROBLEM,
            key,
            f"{port} is a plain file, not a serial port",
            "a file appears where the device should be when something wrote to the path while no adapter was "
            f"plugged in: remove it (sudo rm {port}), plug the adapter in and {pick}",
        )
    return Finding(Severity.PROBLEM, key, f"{port} is not a character device, so not a serial port", pick)


def _missing_port_hint(port: str, by_id_dir: Path) -> str:
    try:
        plugged = sorted(str(path) for path in by_id_dir.iterdir())
    except OSError:
        plugged = []
    if plugged:
        shown = ", ".join(plugged[:_SHOWN_ADAPTERS]) + (", ..." if len(plugged) > _SHOWN_ADAPTERS else "")
        now = f"adapters plugged in now: {shown}"
    else:
        now = "no USB serial adapter is plugged in now"
    if port.startswith(f"{by_id_dir}/"):
        return f"that adapter is not plugged in, or has another name: plug it in and check ls -l {by_id_dir}/ ({now})"
    return (
        f"plug the USB adapter in and use its stable name from ls -l {by_id_dir}/ (a /dev/ttyUSB number can "
        f"change at the next boot); {now}"
    )


# --- baud rates --------------------------------------------------------------------------------------------


def likely_baudrate(baudrate: int) -> int | None:
    """The usual speed a non-standard ``baudrate`` most likely meant (None: it is a usual one).

    A digit dropped or added (``11520``, ``1152000``) points at the usual speed with the same leading digits;
    otherwise the nearest one by ratio.
    """
    if baudrate in USUAL_BAUDRATES:
        return None
    digits = str(baudrate)
    for usual in sorted(USUAL_BAUDRATES, reverse=True):
        if str(usual).startswith(digits) or digits.startswith(str(usual)):
            return usual
    return min(USUAL_BAUDRATES, key=lambda usual: max(usual / baudrate, baudrate / usual))


def _baudrate_finding(key: str, baudrate: int) -> Iterator[Finding]:
    meant = likely_baudrate(baudrate)
    if meant is not None:
        yield Finding(
            Severity.WARNING,
            key,
            f"{baudrate} is not a usual serial speed (did you mean {meant}?)",
            f"both ends must use the same speed: JK BMS 115200, RS485 inverters 9600; usual speeds: "
            f"{', '.join(map(str, USUAL_BAUDRATES))}",
        )


def _baudrate_findings(config: Config) -> Iterator[Finding]:
    buses = config.buses
    for index, bus in enumerate(buses):
        yield from _baudrate_finding(f"bms[{index}].baudrate" if len(buses) > 1 else "bms.baudrate", bus.baudrate)
    serial = config.inverter.serial
    if serial is not None and serial.baudrate is not None and is_rs485_profile(config.inverter.profile):
        yield from _baudrate_finding("inverter.serial.baudrate", serial.baudrate)
    for index, output in enumerate(config.extra_outputs):
        if output.serial is not None and output.serial.baudrate is not None:
            yield from _baudrate_finding(f"extra_outputs[{index}].serial.baudrate", output.serial.baudrate)


def verdict(findings: list[Finding]) -> str:
    """``check``'s first word on the config: ``OK``, ``OK, 1 warning``, or ``valid, but not ready here: ...``."""
    problems = sum(finding.severity is Severity.PROBLEM for finding in findings)
    warnings = len(findings) - problems
    counts = [f"{n} {word}{'s' if n != 1 else ''}" for n, word in ((problems, "problem"), (warnings, "warning")) if n]
    if problems:
        return f"valid, but not ready on this machine: {', '.join(counts)}"
    return ", ".join(["OK", *counts])
