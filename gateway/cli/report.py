"""``bms-gateway report -c FILE [-o FILE.zip] [--minutes N]``: a support bundle, one zip to attach to a question.

It holds the config with its secrets redacted (``Config.to_json``), the versions (Python, OS, python-can,
pymodbus, the gateway, the BMS's model and firmware), the audit of the BMS's settings, the service's event log
(its last log lines), the last N minutes of CAN frames as a candump log (python-can's ``CanutilsLogWriter``,
``can.LogReader`` reads it back) and the BMS's last replies as hex with their decode. The frames, replies and log
lines come from the running service through its status endpoint (``GET /support``, this machine only), which
keeps them in bounded rings (:mod:`gateway.telemetry.support`) and has masked the BMS password in the replies
before they leave it. Without a running service the bundle says so and holds what it can: config, versions, and
a fresh reading of the BMS (with its replies) when the port is free.

Last, every file is searched for the config's own secrets (MQTT password, control password), as text and as
hex; any found is masked and the bundle's README says where. The service's redaction does not rely on it.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import re
import sys
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Final

import can

from gateway import __version__
from gateway.app import limits_settings, open_battery
from gateway.bms.reply_ring import ReplyRing
from gateway.cli.common import add_config_argument, load, uses_rs485
from gateway.cli.service_reading import reading_from_json
from gateway.cli.status import DEFAULT_TIMEOUT_S, EndpointAnswered, fetch, find_endpoint, open_endpoint
from gateway.clock import SystemClock
from gateway.config import Config
from gateway.errors import ConfigError, GatewayError
from gateway.limits import compute_limits
from gateway.model import PackReading
from gateway.telemetry.frame_ring import TX, CanRecord
from gateway.transport.port_lock import PortInUse

DEFAULT_MINUTES: Final = 10.0
SUPPORT_TIMEOUT_S: Final = 10.0
"""The /support answer can be a megabyte or two: more time than a status request."""
_CHANNEL_NAME: Final = re.compile(r"[A-Za-z0-9_.-]{1,32}")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "report", help="collect a support bundle (zip): config redacted, versions, audit, events, frames, BMS replies"
    )
    add_config_argument(parser)
    parser.add_argument(
        "-o", "--output", type=Path, metavar="FILE.zip", help="where to write it (default bms-gateway-report-TIME.zip)"
    )
    parser.add_argument(
        "--minutes", type=_positive_minutes, default=DEFAULT_MINUTES, metavar="N", help="minutes of frames (default 10)"
    )
    parser.set_defaults(func=run)


def _positive_minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of minutes: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of minutes, got {text!r}")
    return value


@dataclass
class Bundle:
    """The files of the zip, by name, and the notes its README lists."""

    files: dict[str, bytes] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add_text(self, name: str, text: str) -> None:
        self.files[name] = text.encode()

    def add_json(self, name: str, document: object) -> None:
        self.add_text(name, json.dumps(document, indent=2, ensure_ascii=False) + "\n")


@dataclass
class Collected:
    """What the service (or a fresh read) gave."""

    status: dict[str, Any] | None = None
    support: dict[str, Any] | None = None
    readings: tuple[PackReading, ...] = ()
    replies: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] | None = None
    """The local page's event log (``/page.json``), when the service serves the page."""


def run(args: argparse.Namespace) -> int:
    config = load(args)
    output: Path = args.output or Path(time.strftime("bms-gateway-report-%Y%m%d-%H%M%S.zip"))
    bundle = Bundle()
    bundle.add_json("config.json", config.to_json())
    collected = _from_service(config, args, bundle)
    if collected.status is None:
        _fresh_read(config, collected, bundle)
    bundle.add_json("versions.json", versions(collected.readings))
    _audit(config, collected.readings, bundle)
    _events(collected, bundle)
    _frames(config, collected, bundle)
    _replies(collected, bundle)
    if collected.status is not None:
        bundle.add_json("status.json", collected.status)
    mask_secrets(bundle, config_secrets(config))
    bundle.add_text("README.txt", readme(args, config, bundle))
    try:
        write_zip(output, bundle)
    except OSError as error:
        raise GatewayError(
            f"cannot write {output}: {error.strerror or error}", hint="choose another place with -o"
        ) from None
    print(f"{output}: {len(bundle.files)} files")
    for note in bundle.notes:
        print(f"  {note}")
    return 0


# --- collecting ------------------------------------------------------------------------------------------------


def _from_service(config: Config, args: argparse.Namespace, bundle: Bundle) -> Collected:
    """The running service's status and its rings; an empty :class:`Collected` (and a note) without one."""
    collected = Collected()
    if uses_rs485(config):
        bundle.notes.append(
            "RS485 profile: the service serves no status endpoint on RS485 profiles yet, so it hands over no "
            "requests, answers or log lines; the BMS is read afresh if its port is free"
        )
        return collected
    try:
        endpoint = find_endpoint(argparse.Namespace(url=None, config=args.config))
        collected.status = fetch(endpoint.url, DEFAULT_TIMEOUT_S)
    except (ConfigError, GatewayError) as error:
        bundle.notes.append(f"no running service answered ({error}): frames, BMS replies and events are not included")
        return collected
    url = endpoint.url.removesuffix("/status") + f"/support?minutes={args.minutes:g}"
    try:
        support = json.loads(open_endpoint(url, SUPPORT_TIMEOUT_S))
    except EndpointAnswered as error:
        bundle.notes.append(f"the running service keeps no frames for a bundle ({error}): an older version?")
    except (GatewayError, ValueError) as error:
        bundle.notes.append(f"the running service's frames could not be fetched: {error}")
    else:
        collected.support = support if isinstance(support, dict) else None
        collected.replies = list((collected.support or {}).get("bms_replies") or [])
    collected.events = _page_events(endpoint.url.removesuffix("/status") + "/page.json")
    collected.readings = _service_readings(collected.status)
    bundle.notes.append(f"from the running service ({endpoint.url}), its last {args.minutes:g} minutes")
    return collected


def _page_events(url: str) -> list[dict[str, Any]] | None:
    """The local page's event log (fail-safe changes, alarms, limit changes, ...); None: no page served."""
    try:
        events = json.loads(open_endpoint(url, SUPPORT_TIMEOUT_S)).get("events")
    except (GatewayError, ValueError, AttributeError):
        return None
    return [event for event in events if isinstance(event, dict)] if isinstance(events, list) else None


def _service_readings(status: Mapping[str, Any]) -> tuple[PackReading, ...]:
    packs = (status.get("packs") or {}).get("each") or []
    pack = (status.get("bms") or {}).get("pack")
    documents = packs or ([pack] if pack else [])
    readings = []
    for document in documents:
        try:
            readings.append(reading_from_json(document, 0.0))
        except GatewayError:
            continue
    return tuple(readings)


def _fresh_read(config: Config, collected: Collected, bundle: Bundle) -> None:
    """One poll of the BMS, if its port is free, its replies kept as the service keeps them."""
    ring = ReplyRing()
    driver = open_battery(config, SystemClock(), replies=ring)
    try:
        collected.readings = driver.read()
        bundle.notes.append("the BMS was read afresh for this bundle (no running service)")
    except PortInUse as busy:
        bundle.notes.append(f"the BMS was not read: {busy}")
    except GatewayError as error:
        bundle.notes.append(f"the BMS was not read: {error}")
    finally:
        driver.close()
    collected.replies = [reply.to_json() for reply in ring.since(0.0)]


def versions(readings: tuple[PackReading, ...]) -> dict[str, Any]:
    """Python, OS, the libraries that speak the wires, the gateway, and each BMS's model and firmware."""

    def version_of(package: str) -> str | None:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return None

    return {
        "bms-gateway": __version__,
        "python": sys.version.split()[0],
        "os": platform.platform(),
        "machine": platform.machine(),
        "python-can": can.__version__,
        "pymodbus": version_of("pymodbus"),
        "pyserial": version_of("pyserial"),
        "bms": [{"pack_id": reading.pack_id, **reading.device.to_json()} for reading in readings],
    }


def _audit(config: Config, readings: tuple[PackReading, ...], bundle: Bundle) -> None:
    """The BMS settings audit of each reading, as ``read`` shows it."""
    tuning = limits_settings(config)
    lines: list[str] = []
    document: list[dict[str, Any]] = []
    for reading in readings:
        result = compute_limits(reading, tuning, None, reading.measured_at_s, max_age_s=float("inf"))
        findings = () if result.thresholds is None else result.thresholds.findings
        lines.append(f"{reading.pack_id}: {len(findings)} findings")
        lines += [f"  {finding.line()}" for finding in findings]
        document.append({"pack_id": reading.pack_id, "findings": [finding.to_json() for finding in findings]})
    if not readings:
        lines.append("no reading of the BMS: no audit")
    bundle.add_text("audit.txt", "\n".join(lines) + "\n")
    bundle.add_json("audit.json", document)


def _events(collected: Collected, bundle: Bundle) -> None:
    """The page's event log (when served) and the service's last log lines, in events.txt."""
    log = (collected.support or {}).get("log")
    if log is None:
        bundle.add_text("events.txt", "no running service: no event log\n")
        return
    lines: list[str] = []
    if collected.events is not None:
        lines.append("events (the local page's event log):")
        lines += [f"{_stamp(float(e.get('wall_s', 0.0)))} {e.get('kind')}: {e.get('text')}" for e in collected.events]
        lines += ["", "log lines:"]
    lines += [f"{_stamp(float(stamp))} {line}" for stamp, line in log]
    bundle.add_text("events.txt", "\n".join(lines) + "\n" if lines else "no log lines in these minutes\n")


def _frames(config: Config, collected: Collected, bundle: Bundle) -> None:
    """The frames as a candump log (``-L`` format, ``T`` sent, ``R`` received), written by python-can."""
    if collected.support is None:
        return
    channel = config.inverter.can.channel if config.inverter.can is not None else "can0"
    channel = channel if _CHANNEL_NAME.fullmatch(channel) else "can0"
    text = io.StringIO()
    writer = can.CanutilsLogWriter(text, channel=channel)
    count = 0
    for item in collected.support.get("can_frames") or []:
        record = CanRecord.from_json(item)
        writer.on_message_received(
            can.Message(
                timestamp=record.at_s,
                arbitration_id=record.can_id,
                data=record.data,
                is_extended_id=False,
                is_rx=record.direction != TX,
                channel=channel,
            )
        )
        count += 1
    bundle.add_text("can.log", text.getvalue())
    bundle.notes.append(f"can.log: {count} frames (candump -L format; T sent by the gateway, R received)")


def _replies(collected: Collected, bundle: Bundle) -> None:
    blocks = []
    for reply in collected.replies:
        decode = json.dumps(reply.get("decode"), indent=2, ensure_ascii=False)
        blocks.append(
            f"{_stamp(float(reply.get('at_s', 0.0)))} {reply.get('source')}\n{reply.get('note')}\n"
            f"hex: {reply.get('hex')}\ndecode: {decode}\n"
        )
    text = "\n".join(blocks) if blocks else "no BMS reply\n"
    bundle.add_text("bms-replies.txt", text)


def _stamp(at_s: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at_s)) + f".{int(at_s % 1 * 1000):03d}"


# --- secrets and the zip ---------------------------------------------------------------------------------------


def config_secrets(config: Config) -> dict[str, str]:
    """The secrets the config holds, by key: none of them may be in the bundle."""
    secrets = {"mqtt.password": config.mqtt.password, "control.password": config.control.password}
    return {key: secret.reveal() for key, secret in secrets.items() if secret is not None and secret.reveal()}


def secret_forms(secret: str) -> list[bytes]:
    """How ``secret`` could appear in a file: as text, and as hex (lower and upper case, bare or spaced)."""
    raw = secret.encode("latin-1", errors="replace")
    hexes = [raw.hex(), raw.hex(" ")]
    return [raw, *(form.encode() for text in hexes for form in (text, text.upper()))]


def mask_secrets(bundle: Bundle, secrets: Mapping[str, str]) -> None:
    """Mask every form of every secret in every file, with a note naming the key and the file."""
    for name, data in list(bundle.files.items()):
        for key, secret in secrets.items():
            for form in secret_forms(secret):
                if form in data:
                    data = data.replace(form, b"*" * len(form))
                    bundle.notes.append(f"{key} appeared in {name} and was masked there")
        bundle.files[name] = data


def readme(args: argparse.Namespace, config: Config, bundle: Bundle) -> str:
    lines = [
        f"bms-gateway {__version__} support bundle, {time.strftime('%Y-%m-%d %H:%M:%S %z')}",
        f"config: {args.config} (config.json: passwords redacted); minutes asked: {args.minutes:g}",
        "",
        "files:",
        "  config.json      the config as the gateway read it, secrets as <redacted>",
        "  versions.json    Python, OS, python-can, pymodbus, the gateway, each BMS's model and firmware",
        "  audit.txt/.json  the BMS settings audit (what check --bms and read show)",
        "  events.txt       the page's event log, when served, and the service's last log lines (at most 500)",
        "  can.log          CAN frames, candump -L format (python-can: can.LogReader('can.log'))",
        "  bms-replies.txt  the BMS's last replies (at most 16) as hex, with their decode",
        "  status.json      the service's status document (when a service answered)",
        "",
        "The BMS password travels in every JK read-all reply (tag 0xB2) and in a JK-PB's info block: the service",
        "masks it before anything leaves it (JK NW: its 10 bytes become 2A, the length is kept and nothing else",
        "changes, so the frame's checksum no longer matches; JK-PB: passcodes are zero bytes).",
        "The service keeps at most 30 000 CAN frames (600 000 bytes), 16 BMS replies and 500 log lines.",
        "",
        "notes:",
        *(f"  {note}" for note in bundle.notes),
    ]
    return "\n".join(lines) + "\n"


def write_zip(path: Path, bundle: Bundle) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in bundle.files.items():
            archive.writestr(f"bms-gateway-report/{name}", data)
