"""``read`` and ``check --bms`` while the service runs: its last reading, from its status endpoint.

The service holds the BMS port (locked, :mod:`gateway.transport.port_lock`), and a second program on it would
split the BMS's replies. So when opening the port finds it held by bms-gateway (or by an unknown holder), these
commands ask the running service's status endpoint (the config's ``status:`` section, as ``bms-gateway status``
does) for the reading it polled last, and say so in one line. When the endpoint is off or does not answer, the
port's holder is named with the fix: stop the service.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final

from gateway.cli.status import DEFAULT_TIMEOUT_S, fetch, find_endpoint
from gateway.errors import ConfigError, GatewayError
from gateway.model import Alarm, BatteryState, Chemistry, DeviceInfo, PackReading, ProtectionSettings
from gateway.transport.port_lock import PortInUse

STOP_THE_SERVICE: Final = "stop it first to read the port yourself (sudo systemctl stop bms-gateway)"
_TUPLES: Final = frozenset({"cell_voltages_v", "battery_temperatures_c"})


@dataclass(frozen=True, slots=True)
class ServiceReading:
    """The running service's last reading of each pack online, in polling order."""

    readings: tuple[PackReading, ...]
    age_s: float
    """How old the oldest of them is, s (the snapshot's age included)."""
    holder: str
    """Who holds the port, e.g. ``pid 1234 (bms-gateway run)``."""
    bms_link: str
    """The service's word for its BMS link: ``ok``, ``failing``, ``stale``, ``lost``, ..."""
    pack_errors: Mapping[str, str]
    """Packs the service knows but has no fresh reading of, and why."""

    def note(self) -> str:
        """The one line that says where the reading comes from."""
        link = "" if self.bms_link == "ok" else f"; its BMS link is {self.bms_link}"
        return f"from the running service ({self.holder}), reading {self.age_s:.1f} s old{link}"


def _plain(cls: type, data: Mapping[str, Any], **fixed: Any) -> Any:
    """A model dataclass from its ``to_json()`` (derived keys ignored, absent optional fields at their default)."""
    values: dict[str, Any] = {}
    for field in fields(cls):
        if field.name in fixed:
            values[field.name] = fixed[field.name]
        elif field.name in data:
            value = data[field.name]
            values[field.name] = tuple(value) if field.name in _TUPLES and value is not None else value
    return cls(**values)


def reading_from_json(pack: Mapping[str, Any], measured_at_s: float) -> PackReading:
    """A :class:`PackReading` from the status document's JSON of it (``PackReading.to_json()``).

    :raises GatewayError: the document lacks what a reading needs.
    """
    try:
        state_json, settings_json = pack["state"], pack["settings"]
        alarms = frozenset(Alarm(value) for value in state_json.get("alarms") or ())
        state = _plain(BatteryState, state_json, measured_at_s=measured_at_s, alarms=alarms)
        chemistry = settings_json.get("battery_type")
        settings = _plain(
            ProtectionSettings,
            settings_json,
            measured_at_s=measured_at_s,
            battery_type=None if chemistry is None else Chemistry(chemistry),
        )
        return PackReading(str(pack["pack_id"]), state, settings, _plain(DeviceInfo, pack.get("device") or {}))
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise GatewayError(f"the running service's status document holds no usable reading ({error})") from None


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def ask_service(
    busy: PortInUse, config_path: Path, *, timeout_s: float = DEFAULT_TIMEOUT_S, now_s: float | None = None
) -> ServiceReading:
    """The reading of the service that holds the port, from its status endpoint.

    :param busy: the error opening the port gave; raised again (with the fix) when the service cannot say.
    :param now_s: the monotonic now the readings' ages count back from (default: ``time.monotonic()``).
    :raises PortInUse: the holder is another program, or the service's endpoint is off or does not answer.
    :raises GatewayError: the service has no reading yet (its last error named).
    """
    holder = busy.holder
    if holder is not None and not holder.is_gateway:
        raise busy
    who = "another program" if holder is None else holder.describe()
    try:
        endpoint = find_endpoint(argparse.Namespace(url=None, config=config_path))
    except ConfigError as error:
        hint = f"the service's status endpoint is off ({error}): its last reading cannot be shown; {STOP_THE_SERVICE}"
        raise PortInUse(busy.port, holder, hint=hint) from None
    try:
        document = fetch(endpoint.url, timeout_s)
    except GatewayError as error:
        hint = f"the service's status endpoint does not answer ({error}): {STOP_THE_SERVICE}"
        raise PortInUse(busy.port, holder, hint=hint) from None
    now = time.monotonic() if now_s is None else now_s
    snapshot_age_s = _number(document.get("snapshot_age_s"))
    bms = document.get("bms") or {}
    packs = document.get("packs") or {}
    each: list[dict[str, Any]] = packs.get("each") or []
    if each:
        ages = [_number(entry.get("reading_age_s")) + snapshot_age_s for entry in each]
        readings = tuple(reading_from_json(entry, now - age) for entry, age in zip(each, ages, strict=True))
    elif bms.get("pack"):
        ages = [_number(bms.get("reading_age_s")) + snapshot_age_s]
        readings = (reading_from_json(bms["pack"], now - ages[0]),)
    else:
        last = bms.get("last_error")
        raise GatewayError(
            f"port {busy.port} is in use by the running service ({who}), which has no reading yet"
            + (f": {last}" if last else ""),
            hint=f"bms-gateway status shows what it sees; {STOP_THE_SERVICE}",
        )
    errors = {pack_id: "not answering the running service" for pack_id in packs.get("offline") or ()}
    return ServiceReading(readings, max(ages), who, str(bms.get("link", "?")), errors)


def announce(reading: ServiceReading) -> None:
    """Say where the reading comes from: one line on stderr (stdout may be JSON)."""
    print(f"bms-gateway: {reading.note()}", file=sys.stderr)
