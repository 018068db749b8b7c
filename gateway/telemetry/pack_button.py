"""Home Assistant's "Forget silent packs" button: the MQTT side of ``bms-gateway packs forget``.

A silent pack's last blocks and limits stay latched (it may still be on the bus); the alarm ``pack_latched``
says so. Pressing the button tells the control loop that every pack latched at that moment is gone for good
(:meth:`~gateway.runtime.ControlLoop.forget_pack`, which only queues: safe on paho's network thread). A
retained press is refused (:class:`~gateway.telemetry.commands.RetainedCommands`, the rule of every command
topic): it would be replayed to every new connection, long after anyone pressed anything.
"""

from __future__ import annotations

import json
import logging
from typing import Final, Protocol

from gateway.errors import GatewayError
from gateway.telemetry.commands import RetainedCommands
from gateway.telemetry.ha_discovery import AVAILABLE, NOT_AVAILABLE, Topics, device_block

log = logging.getLogger(__name__)

PAYLOAD_PRESS: Final = "PRESS"
"""Home Assistant's button payload (its default ``payload_press``)."""


class PackForgetter(Protocol):
    """What the button needs of the control loop."""

    @property
    def latched_packs(self) -> frozenset[str]: ...

    def forget_pack(self, pack_id: str, *, source: str) -> str: ...


class ForgetButton:
    """The button's discovery, its command topic, and what a press does."""

    def __init__(self, topics: Topics, retained: RetainedCommands | None = None) -> None:
        """:param retained: the refusal of retained commands, shared with the other command topics; None: its own."""
        self._topics = topics
        self.retained = retained or RetainedCommands()
        self.command_topic = f"{topics.base}/packs/forget"
        self._loop: PackForgetter | None = None

    def attach(self, loop: PackForgetter) -> None:
        """The control loop the presses go to (until then a press is refused)."""
        self._loop = loop

    def discovery(self) -> dict[str, str]:
        """Discovery topic → retained config of the button."""
        payload = {
            "name": "Forget silent packs",
            "unique_id": f"{self._topics.node_id}_forget_silent_packs",
            "icon": "mdi:battery-remove",
            "entity_category": "config",
            "command_topic": self.command_topic,
            "payload_press": PAYLOAD_PRESS,
            "availability_topic": self._topics.availability,
            "payload_available": AVAILABLE,
            "payload_not_available": NOT_AVAILABLE,
            "device": device_block(self._topics.node_id),
        }
        topic = f"{self._topics.discovery_prefix}/button/{self._topics.node_id}/forget_silent_packs/config"
        return {topic: json.dumps(payload, ensure_ascii=False)}

    def on_command(self, topic: str, payload: bytes | bytearray, *, retained: bool) -> bool:
        """Act on a press if ``topic`` is the button's; False: not ours. Never raises, never blocks."""
        if topic != self.command_topic:
            return False
        if self.retained.refuse(topic, retained, "'forget silent packs' press"):
            pass  # logged once per topic, counted
        elif bytes(payload) != PAYLOAD_PRESS.encode():
            log.warning("mqtt: refused 'forget silent packs': payload %r is not %s", bytes(payload[:20]), PAYLOAD_PRESS)
        elif self._loop is None:
            log.warning("mqtt: refused 'forget silent packs': the control loop is not running")
        elif not self._loop.latched_packs:
            log.info("mqtt: 'forget silent packs' pressed: no pack is latched, nothing to forget")
        else:
            for pack_id in sorted(self._loop.latched_packs):
                try:
                    self._loop.forget_pack(pack_id, source="mqtt")  # the loop logs it when it drops the latch
                except GatewayError as error:  # it answered again in the meantime
                    log.info("mqtt: 'forget silent packs': %s", error)
        return True
