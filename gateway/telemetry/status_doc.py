"""One JSON document of the gateway's live state, built from a :class:`~gateway.runtime.Snapshot`.

The HTTP endpoint serves it, ``bms-gateway status`` prints it, and the MQTT topics are cut from the same
values: what a user sees is the same everywhere. Links get one word each (:func:`bms_link`): ``ok``,
``failing`` (polls fail but the last reading is still fresh), ``stale``, ``lost``, ``waiting``, ``stopped``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final

from gateway import __version__
from gateway.model import Limits
from gateway.runtime import FailsafeState, Snapshot

SCHEMA: Final = 1
"""Version of the document's layout; bumped when a key changes meaning."""

_BMS_LINK: Final = {
    FailsafeState.WAITING: "waiting",
    FailsafeState.NORMAL: "ok",
    FailsafeState.STALE: "stale",
    FailsafeState.SILENT: "lost",
    FailsafeState.STOPPED: "stopped",
}


def bms_link(snapshot: Snapshot) -> str:
    """One word for the BMS link (see the module docs)."""
    if snapshot.state is FailsafeState.NORMAL and snapshot.last_error is not None:
        return "failing"
    return _BMS_LINK[snapshot.state]


PACK_LATCHED: Final = "pack_latched"
"""The gateway's own alarm: a silent pack's last blocks and limits are latched (it may still be on the bus)."""
CELL_DEEPLY_DISCHARGED: Final = "cell_deeply_discharged"
"""The gateway's own alarm: a pack's lowest cell is at or below its chemistry's recovery threshold (LiFePO4 2.5 V):
charging is limited to the recovery current, or 0 A below the no-charge threshold (:mod:`gateway.limits.limiters`)."""


def deeply_discharged(snapshot: Snapshot) -> bool:
    """Whether any pack's own limits (or the battery's) hold a deeply discharged cell."""
    return any(
        limits is not None and limits.cell_deeply_discharged
        for limits in (snapshot.limits, *snapshot.pack_limits.values())
    )


def active_alarms(snapshot: Snapshot) -> list[str]:
    """The BMS's alarms and the gateway's own (:data:`PACK_LATCHED`, :data:`CELL_DEEPLY_DISCHARGED`), sorted: what
    status and MQTT show."""
    alarms = set() if snapshot.reading is None else {a.value for a in snapshot.reading.state.alarms}
    if snapshot.latched_packs:
        alarms.add(PACK_LATCHED)
    if deeply_discharged(snapshot):
        alarms.add(CELL_DEEPLY_DISCHARGED)
    return sorted(alarms)


def packs_section(snapshot: Snapshot) -> dict[str, Any]:
    """Which packs are online, offline and latched, how the current is shared among them, and each pack online
    (:func:`each_pack`)."""
    battery = snapshot.battery
    return {
        "online": [] if battery is None else list(battery.online),
        "offline": [] if battery is None else list(battery.offline),
        "latched": sorted(snapshot.latched_packs),
        "current_sharing": snapshot.current_sharing,
        "each": each_pack(snapshot),
    }


def each_pack(snapshot: Snapshot) -> list[dict[str, Any]]:
    """Each pack online, in polling order, with its own state, its own limits and the age of its reading; empty
    for a battery of one pack (``bms.pack`` is that pack). ``label`` is ``P1``, ``P2``, ... as the inverter's
    text values name the packs (a cell is ``P2 C07``): the position among the packs online, so it moves when a
    pack drops out; ``pack_id`` stays."""
    battery = snapshot.battery
    if battery is None or len(battery.online) + len(battery.offline) < 2:
        return []
    return [
        {
            "label": f"P{number}",
            "pack_id": reading.pack_id,
            "reading_age_s": _round(snapshot.at_s - reading.measured_at_s, 2),
            "state": reading.state.to_json(),
            "settings": reading.settings.to_json(),  # read and check --bms while the service holds the port
            "device": reading.device.to_json(),
            "limits": _limits_json(snapshot.pack_limits.get(reading.pack_id)),
        }
        for number, reading in enumerate(battery.packs, start=1)
    ]


def _limits_json(limits: Limits | None) -> dict[str, Any] | None:
    return None if limits is None else limits.to_json()


def status_document(snapshot: Snapshot, *, mqtt: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The whole live state; ``mqtt``: the publisher's health, None when MQTT is off."""
    reading = snapshot.reading
    return {
        "schema": SCHEMA,
        "version": __version__,
        "failsafe": snapshot.state.value,
        "bms": {
            "link": bms_link(snapshot),
            "reading_age_s": _round(snapshot.reading_age_s, 2),
            "last_error": snapshot.last_error,
            "poll_rate": None if snapshot.poll_rate is None else snapshot.poll_rate.to_json(),
            "pack": None if reading is None else reading.to_json(),
        },
        "limits": None if snapshot.limits is None else snapshot.limits.to_json(),
        "alarms": active_alarms(snapshot),
        "packs": packs_section(snapshot),
        "energy": None if snapshot.energy is None else snapshot.energy.to_json(),  # as last kept (gateway.energy)
        "inverter": {
            "link": snapshot.inverter_state.value,
            "heartbeat_age_s": _round(snapshot.heartbeat_age_s, 2),
            "frames_sent": snapshot.frames_sent,
            "send_failures": snapshot.send_failures,
            "last_send_error": snapshot.send_error,
            "requests_received": snapshot.requests_received,
            "next_retry_in_s": _round(snapshot.next_retry_in_s, 1),
            "values": {
                name: {"value": item.value, "age_s": _round(item.age_s, 2)}
                for name, item in sorted(snapshot.inverter_values.items())
            },
            "sent": {f"{can_id:#05x}": data.hex() for can_id, data in sorted(snapshot.sent.items())},
        },
        "mqtt": None if mqtt is None else dict(mqtt),
    }


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def to_json_text(document: Mapping[str, Any]) -> str:
    """``document`` as strict JSON: a NaN or infinity (a pack without cells, say) becomes ``null``."""
    return json.dumps(_finite(document), ensure_ascii=False, allow_nan=False)


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value
