"""The MQTT topic layout and its Home Assistant discovery: one table (:func:`entities`) says which JSON key of
which topic each entity shows, so that the payloads (:func:`topic_payloads`) and the discovery configs
(:func:`discovery_configs`) cannot drift apart.

Topics, under ``<topic_prefix>/<node_id>``: ``state`` (pack), ``cells``, ``limits`` (with the limiter and
reason of each), ``alarms``, ``settings`` (the BMS's protection settings), ``health`` (fail-safe, links,
counters), ``energy`` (kWh and Ah in and out as last kept, each pack's under ``packs``; :mod:`gateway.energy`),
``availability`` (the gateway's: ``online`` retained, ``offline`` as last will) and
``data_availability`` (the BMS data's: ``online`` while it is fresh, retained; :func:`data_available`).
Discovery configs go to ``<discovery_prefix>/<component>/<node_id>/<object_id>/config``, retained.

The entities that show BMS values (:data:`BMS_DATA_TOPICS`) list both availability topics with
``availability_mode: all``: Home Assistant shows them unavailable while the data is stale (a last value shown as
if it were live misleads) or the gateway is gone (its last will covers both). The fail-safe state, the alarms,
the limits the inverter is told and the gateway's diagnostics stay meaningful then: they list only the
gateway's availability.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from gateway import __version__
from gateway.limits.charge_voltage import ChargePhase
from gateway.runtime import FailsafeState, InverterState, Snapshot
from gateway.telemetry.status_doc import active_alarms, bms_link, to_json_text

AVAILABLE: Final = "online"
NOT_AVAILABLE: Final = "offline"
MAX_TEXT_CHARS: Final = 255
"""Home Assistant rejects longer sensor states."""
NO_PHASE: Final = "none"
"""``charge_phase`` while no charge logic runs (fail-safe)."""
LIMIT_KEYS: Final = (
    ("charge_voltage", "charge_voltage_limit_v"),
    ("charge_current", "charge_current_limit_a"),
    ("discharge_current", "discharge_current_limit_a"),
    ("discharge_voltage", "discharge_voltage_limit_v"),
)
"""Short name and :class:`~gateway.model.Limits` field of each limit with a reason."""
BMS_DATA_TOPICS: Final = frozenset({"state", "cells", "settings"})
"""Topic suffixes whose values come from the BMS's reading as it was last heard: their entities become
unavailable while that reading is stale."""


@dataclass(frozen=True, slots=True)
class Entity:
    """One Home Assistant entity: ``key`` of the JSON on ``topic`` (a suffix of the base topic)."""

    component: str
    """``sensor`` or ``binary_sensor``."""
    object_id: str
    name: str
    topic: str
    key: str
    unit: str | None = None
    device_class: str | None = None
    state_class: str | None = None
    diagnostic: bool = False
    precision: int | None = None
    """Digits Home Assistant shows after the point."""
    options: tuple[str, ...] = ()
    """The states of an ``enum`` sensor."""
    attributes_topic: str | None = None
    """A topic whose JSON becomes the entity's attributes (the list of active alarms, say)."""

    @property
    def shows_bms_data(self) -> bool:
        """Whether the entity shows a BMS value, unavailable in Home Assistant while the data is stale."""
        return self.topic in BMS_DATA_TOPICS


def _volts(object_id: str, name: str, topic: str, key: str, *, diagnostic: bool = False) -> Entity:
    return Entity("sensor", object_id, name, topic, key, "V", "voltage", "measurement", diagnostic, 3)


def _amps(object_id: str, name: str, topic: str, key: str, *, diagnostic: bool = False) -> Entity:
    return Entity("sensor", object_id, name, topic, key, "A", "current", "measurement", diagnostic, 1)


def _celsius(object_id: str, name: str, key: str) -> Entity:
    return Entity("sensor", object_id, name, "state", key, "°C", "temperature", "measurement", precision=1)


def _flag(object_id: str, name: str, topic: str, key: str, device_class: str | None = None) -> Entity:
    return Entity("binary_sensor", object_id, name, topic, key, device_class=device_class)


def _enum(object_id: str, name: str, topic: str, key: str, options: tuple[str, ...]) -> Entity:
    return Entity("sensor", object_id, name, topic, key, device_class="enum", options=options)


def _text(object_id: str, name: str, topic: str, key: str, *, diagnostic: bool = False) -> Entity:
    return Entity("sensor", object_id, name, topic, key, diagnostic=diagnostic)


def _energy(object_id: str, name: str, key: str) -> Entity:
    """A counter for Home Assistant's Energy dashboard: it only grows (a lower value is a meter reset)."""
    if key.endswith("_kwh"):
        return Entity("sensor", object_id, name, "energy", key, "kWh", "energy", "total_increasing", precision=3)
    return Entity("sensor", object_id, name, "energy", key, "Ah", state_class="total_increasing", precision=2)


def entities(cell_count: int, temperature_count: int) -> tuple[Entity, ...]:
    """Every entity for a pack of ``cell_count`` cells and ``temperature_count`` battery sensors."""
    pack = (
        Entity("sensor", "soc", "State of charge", "state", "soc_pct", "%", "battery", "measurement", precision=0),
        _volts("pack_voltage", "Pack voltage", "state", "pack_voltage_v"),
        _amps("current", "Current", "state", "current_a"),
        Entity("sensor", "power", "Power", "state", "power_w", "W", "power", "measurement", precision=0),
        _volts("min_cell_voltage", "Lowest cell voltage", "state", "min_cell_v"),
        _volts("max_cell_voltage", "Highest cell voltage", "state", "max_cell_v"),
        _volts("cell_delta", "Cell voltage difference", "state", "cell_delta_v"),
        Entity(
            "sensor",
            "remaining_capacity",
            "Remaining capacity",
            "state",
            "remaining_capacity_ah",
            "Ah",
            state_class="measurement",
            precision=1,
        ),
        Entity("sensor", "soh", "State of health", "state", "soh_pct", "%", state_class="measurement", diagnostic=True),
        Entity(
            "sensor",
            "cycle_count",
            "Charge cycles",
            "state",
            "cycle_count",
            state_class="total_increasing",
            diagnostic=True,
        ),
        _celsius("mos_temperature", "MOSFET temperature", "mos_temperature_c"),
        *(
            _celsius(f"temperature_{n}", f"Temperature {n}", f"temperature_{n}_c")
            for n in range(1, temperature_count + 1)
        ),
        _amps("balance_current", "Balance current", "state", "balance_current_a", diagnostic=True),
        _flag("charge_mos", "Charge MOSFET", "state", "charge_mos_on", "power"),
        _flag("discharge_mos", "Discharge MOSFET", "state", "discharge_mos_on", "power"),
        _flag("balancing", "Balancing", "state", "balancer_on", "running"),
    )
    cells = tuple(
        _volts(f"cell_{n:02d}_voltage", f"Cell {n} voltage", "cells", f"cell_{n:02d}_v")
        for n in range(1, cell_count + 1)
    )
    limits = (
        Entity(
            "sensor",
            "charge_voltage_limit",
            "Charge voltage limit",
            "limits",
            "charge_voltage_limit_v",
            "V",
            "voltage",
            "measurement",
            precision=2,
        ),
        _amps("charge_current_limit", "Charge current limit", "limits", "charge_current_limit_a"),
        _amps("discharge_current_limit", "Discharge current limit", "limits", "discharge_current_limit_a"),
        Entity(
            "sensor",
            "discharge_voltage_limit",
            "Discharge voltage limit",
            "limits",
            "discharge_voltage_limit_v",
            "V",
            "voltage",
            "measurement",
            precision=2,
        ),
        *(
            _text(
                f"{short}_limit_reason",
                f"{short.replace('_', ' ').capitalize()} limit reason",
                "limits",
                f"{short}_reason",
            )
            for short, _ in LIMIT_KEYS
        ),
        _flag("charge_enable", "Charge allowed", "limits", "charge_enable"),
        _flag("discharge_enable", "Discharge allowed", "limits", "discharge_enable"),
        _flag("force_charge", "Force charge request", "limits", "force_charge"),
        _enum("charge_phase", "Charge phase", "limits", "charge_phase", (*[p.value for p in ChargePhase], NO_PHASE)),
    )
    alarms = (
        Entity(
            "binary_sensor", "alarm", "BMS alarm", "alarms", "any", device_class="problem", attributes_topic="alarms"
        ),
        Entity("sensor", "alarm_count", "Active alarms", "alarms", "count", state_class="measurement"),
    )
    settings = (
        _volts("cell_ovp", "Cell over-voltage protection", "settings", "cell_ovp_v", diagnostic=True),
        _volts("cell_ovpr", "Cell over-voltage recovery", "settings", "cell_ovpr_v", diagnostic=True),
        _volts("cell_uvp", "Cell under-voltage protection", "settings", "cell_uvp_v", diagnostic=True),
        _volts("cell_uvpr", "Cell under-voltage recovery", "settings", "cell_uvpr_v", diagnostic=True),
        _amps("bms_max_charge_current", "BMS max charge current", "settings", "max_charge_current_a", diagnostic=True),
        _amps(
            "bms_max_discharge_current",
            "BMS max discharge current",
            "settings",
            "max_discharge_current_a",
            diagnostic=True,
        ),
    )
    health = (
        _enum("failsafe", "Fail-safe state", "health", "failsafe", tuple(s.value for s in FailsafeState)),
        _flag("bms_link", "BMS link", "health", "bms_ok", "connectivity"),
        Entity(
            "sensor",
            "bms_data_age",
            "BMS data age",
            "health",
            "bms_data_age_s",
            "s",
            "duration",
            "measurement",
            diagnostic=True,
            precision=0,
        ),
        _enum("inverter_link", "Inverter link", "health", "inverter_link", tuple(s.value for s in InverterState)),
        _text("last_error", "Last BMS error", "health", "last_error", diagnostic=True),
        Entity(
            "sensor",
            "frames_sent",
            "Frames sent",
            "health",
            "frames_sent",
            state_class="total_increasing",
            diagnostic=True,
        ),
        Entity(
            "sensor",
            "send_failures",
            "Send failures",
            "health",
            "send_failures",
            state_class="total_increasing",
            diagnostic=True,
        ),
    )
    energy = (
        _energy("energy_charged", "Energy charged", "charged_kwh"),
        _energy("energy_discharged", "Energy discharged", "discharged_kwh"),
        _energy("amp_hours_charged", "Amp-hours charged", "charged_ah"),
        _energy("amp_hours_discharged", "Amp-hours discharged", "discharged_ah"),
    )
    return pack + cells + limits + alarms + settings + health + energy


def shape(snapshot: Snapshot | None) -> tuple[int, int]:
    """(cells, battery temperature sensors) of the snapshot's pack: what the entity list depends on."""
    if snapshot is None or snapshot.reading is None:
        return (0, 0)
    state = snapshot.reading.state
    return (state.cell_count, len(state.battery_temperatures_c))


# --- payloads ------------------------------------------------------------------------------------------------


def topic_payloads(snapshot: Snapshot) -> dict[str, str]:
    """The JSON text for each topic suffix; topics without data yet (no reading) are left out."""
    out = {"health": _health(snapshot)}
    reading = snapshot.reading
    if reading is not None:
        state = reading.state
        pack: dict[str, Any] = {
            key: value
            for key, value in state.to_json().items()
            if key not in ("cell_voltages_v", "battery_temperatures_c", "alarms")
        }
        pack.update({f"temperature_{n}_c": t for n, t in enumerate(state.battery_temperatures_c, start=1)})
        pack["pack_id"] = reading.pack_id
        out["state"] = to_json_text(pack)
        out["cells"] = to_json_text(
            {f"cell_{n:02d}_v": v for n, v in enumerate(state.cell_voltages_v, start=1)}
            | {"cell_voltages_v": list(state.cell_voltages_v)}
        )
        active = active_alarms(snapshot)
        latched = sorted(snapshot.latched_packs)
        out["alarms"] = to_json_text(
            {"any": bool(active), "count": len(active), "active": active, "latched_packs": latched}
        )
        out["settings"] = to_json_text(reading.settings.to_json())
    if snapshot.limits is not None:
        limits = snapshot.limits.to_json()
        del limits["computed_at_s"]  # a monotonic time: meaningless off this machine, and new every batch
        limits["charge_phase"] = limits["charge_phase"] or NO_PHASE
        for short, key in LIMIT_KEYS:
            reason = snapshot.limits.reasons.get(key)
            limits[f"{short}_limiter"] = reason.limiter if reason else "none"
            text = f"{reason.limiter}: {reason.reason}" if reason else "none"
            limits[f"{short}_reason"] = text[: MAX_TEXT_CHARS - 1] + "…" if len(text) > MAX_TEXT_CHARS else text
        out["limits"] = to_json_text(limits)
    if snapshot.energy is not None:
        out["energy"] = to_json_text(snapshot.energy.to_json())
    return out


def data_available(snapshot: Snapshot | None, bms_timeout_s: float | None = None) -> bool:
    """Whether the snapshot's BMS values are fresh: the fail-safe is normal (not waiting, stale, silent or
    stopped) and the reading is at most ``bms_timeout_s`` old (None: the fail-safe's word alone)."""
    if snapshot is None or snapshot.reading is None or snapshot.state is not FailsafeState.NORMAL:
        return False
    age_s = snapshot.reading_age_s
    return bms_timeout_s is None or age_s is None or age_s <= bms_timeout_s


def _health(snapshot: Snapshot) -> str:
    link = bms_link(snapshot)
    age = snapshot.reading_age_s
    return to_json_text(
        {
            "failsafe": snapshot.state.value,
            "bms_link": link,
            "bms_ok": link in ("ok", "failing"),
            "bms_data_age_s": None if age is None else round(age),  # whole seconds: publish on change, not noise
            "last_error": (snapshot.last_error or "none")[:MAX_TEXT_CHARS],
            "inverter_link": snapshot.inverter_state.value,
            "heartbeat_age_s": None if snapshot.heartbeat_age_s is None else round(snapshot.heartbeat_age_s),
            "frames_sent": snapshot.frames_sent,
            "send_failures": snapshot.send_failures,
        }
    )


# --- discovery -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Topics:
    """Where this gateway publishes."""

    node_id: str
    base: str
    """``<topic_prefix>/<node_id>``."""
    discovery_prefix: str

    @property
    def availability(self) -> str:
        """The gateway's: ``online`` while it runs, ``offline`` on stop and as its last will."""
        return f"{self.base}/availability"

    @property
    def data_availability(self) -> str:
        """The BMS data's: ``online`` while it is fresh (:func:`data_available`)."""
        return f"{self.base}/data_availability"

    def of(self, suffix: str) -> str:
        return f"{self.base}/{suffix}"

    def config(self, entity: Entity) -> str:
        return f"{self.discovery_prefix}/{entity.component}/{self.node_id}/{entity.object_id}/config"


def device_block(node_id: str) -> dict[str, Any]:
    return {
        "identifiers": [f"bms-gateway_{node_id}"],
        "name": f"BMS gateway {node_id}",
        "manufacturer": "bms-gateway",
        "model": "JK BMS to inverter gateway",
        "sw_version": __version__,
    }


def discovery_configs(topics: Topics, cell_count: int, temperature_count: int) -> dict[str, str]:
    """Discovery topic → retained JSON config, for every entity."""
    device = device_block(topics.node_id)
    out: dict[str, str] = {}
    for entity in entities(cell_count, temperature_count):
        out[topics.config(entity)] = json.dumps(_config(topics, entity, device), ensure_ascii=False)
    return out


def _config(topics: Topics, entity: Entity, device: Mapping[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {
        "name": entity.name,
        "unique_id": f"{topics.node_id}_{entity.object_id}",
        "state_topic": topics.of(entity.topic),
        **_availability(topics, bms_data=entity.shows_bms_data),
        "device": device,
        "origin": {"name": "bms-gateway", "sw_version": __version__},
    }
    if entity.component == "binary_sensor":
        config["value_template"] = f"{{{{ 'ON' if value_json.{entity.key} else 'OFF' }}}}"
        config["payload_on"], config["payload_off"] = "ON", "OFF"
    else:
        config["value_template"] = f"{{{{ value_json.{entity.key} }}}}"
    optional = {
        "unit_of_measurement": entity.unit,
        "device_class": entity.device_class,
        "state_class": entity.state_class,
        "suggested_display_precision": entity.precision,
        "entity_category": "diagnostic" if entity.diagnostic else None,
        "options": list(entity.options) or None,
        "json_attributes_topic": None if entity.attributes_topic is None else topics.of(entity.attributes_topic),
    }
    config.update({key: value for key, value in optional.items() if value is not None})
    return config


def _availability(topics: Topics, *, bms_data: bool) -> dict[str, Any]:
    """The availability part of a config: the gateway's topic, and for BMS values the data's too (both must say
    ``online``; Home Assistant refuses ``availability_topic`` beside the ``availability`` list)."""
    if not bms_data:
        return {
            "availability_topic": topics.availability,
            "payload_available": AVAILABLE,
            "payload_not_available": NOT_AVAILABLE,
        }
    return {
        "availability": [
            {"topic": topic, "payload_available": AVAILABLE, "payload_not_available": NOT_AVAILABLE}
            for topic in (topics.availability, topics.data_availability)
        ],
        "availability_mode": "all",
    }
