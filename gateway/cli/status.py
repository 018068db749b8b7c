"""``bms-gateway status``: the live state of a running gateway, read from its HTTP status endpoint.

Cells, limits with their reasons, alarms, and the health of the BMS, inverter and MQTT links. The endpoint's
address comes from ``--url``, else from the config's ``status:`` section, else the default
``http://127.0.0.1:9480``. The default config is read only when this user may read it: after ``install.sh`` it
sits in a directory only root and the service's group may enter, and a normal user's ``status`` asks the
default endpoint instead (saying so if that fails).
"""

from __future__ import annotations

import argparse
import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gateway.cli.common import DEFAULT_CONFIG
from gateway.config import StatusConfig, load_config
from gateway.errors import ConfigError, GatewayError

DEFAULT_TIMEOUT_S: Final = 3.0
DEFAULT_STATUS: Final = StatusConfig()
"""The endpoint asked when no config names one."""
_ANY_ADDRESS: Final = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}
"""A wildcard bind is reached on loopback."""
LIMIT_ROWS: Final = (
    ("CVL", "charge_voltage_limit_v", ".2f", "V"),
    ("CCL", "charge_current_limit_a", ".1f", "A"),
    ("DCL", "discharge_current_limit_a", ".1f", "A"),
    ("DVL", "discharge_voltage_limit_v", ".2f", "V"),
)


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("status", help="show the live state of a running gateway (its status endpoint)")
    add_endpoint_arguments(parser, "the endpoint itself, e.g. http://127.0.0.1:9480/status")
    parser.add_argument("--json", action="store_true", help="print the status document as JSON")
    parser.add_argument(
        "--max-age",
        type=float,
        metavar="S",
        help="fail (exit 1) when the gateway's newest snapshot is older than S seconds: its loop is stuck",
    )
    parser.set_defaults(func=run)


def add_endpoint_arguments(parser: argparse.ArgumentParser, url_help: str) -> None:
    """``-c``, ``--url`` and ``--timeout``: how a command finds the running gateway's endpoint (:func:`status_url`)."""
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        metavar="FILE",
        help=f"take the endpoint from this config's status: section (default {DEFAULT_CONFIG}, if it exists)",
    )
    parser.add_argument("--url", help=url_help)
    parser.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S", help="seconds to wait for an answer"
    )


class EndpointAnswered(GatewayError):
    """The endpoint answered with an HTTP error; ``detail`` is its one-line body (or the reason)."""

    def __init__(self, url: str, code: int, detail: str) -> None:
        super().__init__(f"status endpoint {url} answered {code}: {detail}")
        self.code = code
        self.detail = detail


def open_endpoint(request: str | urllib.request.Request, timeout_s: float, hint: str | None = None) -> bytes:
    """The body the endpoint answers; ``hint``: what to add when there is no answer (:attr:`Endpoint.hint`).

    :raises EndpointAnswered: an HTTP error; GatewayError: no answer.
    """
    url = request if isinstance(request, str) else request.full_url
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace").strip()
        raise EndpointAnswered(url, error.code, detail or str(error.reason)) from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        reason = getattr(reason, "strerror", None) or reason
        raise GatewayError(
            f"cannot reach {url}: {reason} (is the gateway running, with status.enabled?)", hint=hint
        ) from None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """The status endpoint to ask, and what to tell the user if it does not answer."""

    url: str
    hint: str | None = None
    """Set when the default config was passed over (this user may not read it): the config may name another
    endpoint than the default one asked."""


def find_endpoint(args: argparse.Namespace) -> Endpoint:
    """The endpoint to ask (see the module docs).

    :raises ConfigError: the config named by ``-c`` cannot be read, or the config turns the endpoint off.
    """
    if args.url:
        url: str = args.url
        return Endpoint(url if url.rstrip("/").endswith("/status") else url.rstrip("/") + "/status")
    path: Path | None = args.config
    hint = None
    if path is None:
        path, passed_over = _readable_default_config()
        if passed_over is not None:
            hint = (
                f"{DEFAULT_CONFIG} cannot be read by this user ({passed_over}), so the default endpoint was asked: "
                "run it with sudo, or give the endpoint with --url"
            )
    status = DEFAULT_STATUS if path is None else load_config(path).status
    if not status.enabled:
        raise ConfigError("status.enabled", f"is false in {path}: the gateway serves no status")
    host = _ANY_ADDRESS.get(status.bind, status.bind)
    return Endpoint(f"http://{f'[{host}]' if ':' in host else host}:{status.port}/status", hint)


def _readable_default_config() -> tuple[Path | None, str | None]:
    """:data:`DEFAULT_CONFIG` if this user may read it; else None, and why not when it is not simply absent.

    Opening it is the only honest test: after install.sh its directory is 0750 root:bms-gateway, and there even
    ``Path.exists()`` raises PermissionError for anyone outside the group.
    """
    try:
        with DEFAULT_CONFIG.open("rb"):
            return DEFAULT_CONFIG, None
    except (FileNotFoundError, NotADirectoryError):
        return None, None
    except OSError as error:
        return None, error.strerror or type(error).__name__


def fetch(url: str, timeout_s: float, hint: str | None = None) -> dict[str, Any]:
    """The status document. :raises GatewayError: one line, whatever went wrong."""
    body = open_endpoint(url, timeout_s, hint)
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise GatewayError(f"status endpoint {url} did not answer with JSON") from None
    if not isinstance(document, dict):
        raise GatewayError(f"status endpoint {url} answered JSON that is not a status document")
    return document


def run(args: argparse.Namespace) -> int:
    endpoint = find_endpoint(args)
    document = fetch(endpoint.url, args.timeout, endpoint.hint)
    age_s = document.get("snapshot_age_s")
    if args.max_age is not None and (not isinstance(age_s, int | float) or age_s > args.max_age):
        raise GatewayError(f"the gateway's newest snapshot is {_seconds(age_s)} old: its control loop is stuck")
    if args.json:
        print(json.dumps(document, indent=2, ensure_ascii=False))
    else:
        print(render(document))
    return 0


# --- rendering -----------------------------------------------------------------------------------------------

STALE_LINKS: Final = frozenset({"stale", "lost"})
"""BMS link words under which the BMS values shown are the last ones heard, not live ones."""
CELLS_PER_ROW: Final = 8


def render(doc: dict[str, Any]) -> str:
    """The status document as a terminal view: one pack as it is, several packs as the battery the inverter sees
    (its total) and then each pack, cells labelled ``P1 C07``. BMS values that are no longer live (the fail-safe
    is stale or silent) carry ``[STALE: … old]``."""
    lines = [
        f"bms-gateway {doc.get('version', '?')}: fail-safe {doc.get('failsafe', '?')}"
        f" (snapshot {_seconds(doc.get('snapshot_age_s'))} old)",
        *_links(doc),
    ]
    bms = doc.get("bms") or {}
    packs = doc.get("packs") or {}
    each: list[dict[str, Any]] = packs.get("each") or []
    stale = bms.get("link") in STALE_LINKS
    pack = bms.get("pack")
    if each:
        lines.extend(_battery(pack or {}, each, _stale_mark(stale, bms.get("reading_age_s"))))
    elif pack is not None:
        lines.extend(_pack(pack, _stale_mark(stale, bms.get("reading_age_s"))))
    lines.extend(_packs(packs))
    for entry in each:
        lines.extend(_one_of_several(entry, _stale_mark(stale, entry.get("reading_age_s"))))
    limits = doc.get("limits")
    title = "limits (the battery's, what the inverter is told):" if each else "limits:"
    lines.extend(_limits(limits, title) if limits else ["limits: none sent yet"])
    alarms = doc.get("alarms") or []
    lines.append(f"alarms: {', '.join(alarms) if alarms else 'none'}")
    return "\n".join(lines)


def _seconds(value: object) -> str:
    return "?" if not isinstance(value, int | float) else f"{value:.1f} s"


def _stale_mark(stale: bool, age_s: object) -> str:
    """What ends a line of BMS values that are no longer live: the mark and their age; else nothing."""
    return f"  [STALE: {_seconds(age_s)} old]" if stale else ""


def _links(doc: dict[str, Any]) -> list[str]:
    bms = doc.get("bms") or {}
    inverter = doc.get("inverter") or {}
    mqtt = doc.get("mqtt")
    lines = [f"BMS link: {bms.get('link', '?')}, newest reading {_seconds(bms.get('reading_age_s'))} old"]
    if bms.get("last_error"):
        lines[-1] += f"; last error: {bms['last_error']}"
    rate = bms.get("poll_rate")
    if isinstance(rate, dict):  # adaptive polling (gateway.poll_rate): which rate is in force and why
        lines.append(f"BMS polled every {_seconds(rate.get('interval_s'))} ({rate.get('why', '?')})")
    heartbeat = inverter.get("heartbeat_age_s")
    lines.append(
        f"inverter link: {inverter.get('link', '?')}"
        + ("" if heartbeat is None else f", heartbeat {_seconds(heartbeat)} old")
        + f"; frames sent {inverter.get('frames_sent', 0)}, send failures {inverter.get('send_failures', 0)}"
    )
    if inverter.get("send_failures") and inverter.get("last_send_error"):  # a count says nothing of the cause
        lines[-1] += f"; last error: {inverter['last_send_error']}"
    if mqtt is None:
        lines.append("MQTT: off")
    else:
        state = "connected" if mqtt.get("connected") else "not connected"
        lines.append(f"MQTT: {state} to {mqtt.get('broker', '?')}, {mqtt.get('dropped', 0)} snapshots dropped")
        if mqtt.get("last_error") and not mqtt.get("connected"):
            lines[-1] += f"; {mqtt['last_error']}"
    return lines


def _packs(packs: dict[str, Any]) -> list[str]:
    """Several packs: which answer, which are latched, how the current is shared (one pack: nothing)."""
    online, offline, latched = packs.get("online") or [], packs.get("offline") or [], packs.get("latched") or []
    if len(online) + len(offline) < 2:
        return []
    sharing = packs.get("current_sharing", "?")
    lines = [f"packs: {len(online)} of {len(online) + len(offline)} online; current shared by {sharing}"]
    for pack_id in latched:
        lines.append(
            f"ALARM pack {pack_id} silent, its last blocks and limits latched; if it is gone for good: "
            f"bms-gateway packs forget {pack_id}"
        )
    return lines


def _electrical(state: dict[str, Any]) -> str:
    return (
        f"{state.get('pack_voltage_v', 0):.2f} V  {state.get('current_a', 0):+.2f} A"
        f"  {state.get('power_w', 0):+.0f} W  SOC {state.get('soc_pct', 0):.0f} %"
    )


def _temperatures(state: dict[str, Any]) -> str:
    mos = state.get("mos_temperature_c")
    sensors = [f"T{n} {t:.0f} °C" for n, t in enumerate(state.get("battery_temperatures_c") or [], 1) if t is not None]
    return "  ".join(([] if mos is None else [f"MOS {mos:.0f} °C"]) + sensors)


def _pack(pack: dict[str, Any], stale: str) -> list[str]:
    """One pack, the whole battery."""
    state = pack.get("state") or {}
    cells = state.get("cell_voltages_v") or []
    lines = [f"pack {pack.get('pack_id', '?')}: {_electrical(state)}{stale}"]
    if cells:
        low, high = min(cells), max(cells)
        lines.append(
            f"cells ({len(cells)}): min {low:.3f} V (#{cells.index(low) + 1})  max {high:.3f} V"
            f" (#{cells.index(high) + 1})  Δ {(high - low) * 1000:.0f} mV{stale}"
        )
        for start in range(0, len(cells), CELLS_PER_ROW):
            lines.append("  " + " ".join(f"{v:.3f}" for v in cells[start : start + CELLS_PER_ROW]))
    lines.append(f"temperatures: {_temperatures(state)}{stale}")
    return lines


def _battery(battery: dict[str, Any], each: list[dict[str, Any]], stale: str) -> list[str]:
    """Several packs: the battery the inverter is told about, and where its extreme cells are."""
    state = battery.get("state") or {}
    lines = [f"battery of {len(each)} packs online: {_electrical(state)}{stale}"]
    cells = [
        (float(volts), f"{entry.get('label', 'P?')} C{number:02d}")
        for entry in each
        for number, volts in enumerate((entry.get("state") or {}).get("cell_voltages_v") or [], 1)
    ]
    if cells:
        (low, low_at), (high, high_at) = min(cells), max(cells)
        lines.append(
            f"cells ({len(cells)} in {len(each)} packs): min {low:.3f} V ({low_at})  max {high:.3f} V ({high_at})"
            f"  Δ {(high - low) * 1000:.0f} mV{stale}"
        )
    return lines


def _one_of_several(entry: dict[str, Any], stale: str) -> list[str]:
    """One pack of several: its values and own limits, then its cells and temperatures, labelled ``P2 C07``."""
    label = entry.get("label", "P?")
    state = entry.get("state") or {}
    limits = entry.get("limits") or {}
    own = "".join(
        f"  own {name} {limits[key]:.1f} A"
        for name, key in (("CCL", "charge_current_limit_a"), ("DCL", "discharge_current_limit_a"))
        if isinstance(limits.get(key), int | float)
    )
    lines = [f"{label} {entry.get('pack_id', '?')}: {_electrical(state)}{own}{stale}"]
    cells = state.get("cell_voltages_v") or []
    for start in range(0, len(cells), CELLS_PER_ROW):
        row = cells[start : start + CELLS_PER_ROW]
        span = f"{label} C{start + 1:02d}-C{start + len(row):02d}"
        lines.append(f"  {span}  " + " ".join(f"{v:.3f}" for v in row))
    lines.append(f"  {label} temperatures: {_temperatures(state)}")
    return lines


def _limits(limits: dict[str, Any], title: str = "limits:") -> list[str]:
    reasons = limits.get("reasons") or {}
    lines = [title]
    for label, key, fmt, unit in LIMIT_ROWS:
        value = limits.get(key)
        shown = "?" if not isinstance(value, int | float) else f"{value:{fmt}} {unit}"
        reason = reasons.get(key)
        why = f"{reason.get('limiter')}: {reason.get('reason')}" if isinstance(reason, dict) else ""
        lines.append(f"  {label} {shown}".ljust(18) + why)
    flags = "  ".join(
        f"{name} {'yes' if limits.get(key) else 'no'}"
        for name, key in (
            ("charge", "charge_enable"),
            ("discharge", "discharge_enable"),
            ("force charge", "force_charge"),
        )
    )
    phase = limits.get("charge_phase")
    lines.append(f"  {flags}" + ("" if phase is None else f"  phase {phase}"))
    return lines
