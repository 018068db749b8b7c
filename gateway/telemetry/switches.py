"""The BMS control switches over MQTT: their discovery, their states, and commands carried to the poller thread.

Home Assistant's commands arrive on paho's network thread, but a write uses the serial link the poller reads
on: running it there would interleave frames. So :meth:`SwitchBridge.on_command` only records the command (the
newest per switch: at most three wait) and :meth:`SwitchBridge.run_pending`, the poller's ``between_polls``
hook, runs them between two reads through :func:`~gateway.control.handle_switch_command`, which never raises.

Control off (no controller), or on without ``control.mqtt``: no command topic is subscribed, and the discovery
topics get empty retained payloads, which remove switches left from a time MQTT control was on. A command the
broker delivers retained is never obeyed (:class:`~gateway.telemetry.commands.RetainedCommands`).
"""

from __future__ import annotations

import json
import threading
from typing import Final

from gateway.bms.control import Switch
from gateway.config import Config
from gateway.control import (
    Controller,
    command_topic,
    control_entities,
    discovery_topic,
    handle_switch_command,
    switch_state_messages,
)
from gateway.model import PackReading
from gateway.telemetry.commands import RetainedCommands
from gateway.telemetry.ha_discovery import device_block

MAX_PAYLOAD_BYTES: Final = 64
"""Longer command payloads are cut here before they wait (they are refused anyway: only ON / OFF count)."""


class SwitchBridge:
    """Discovery and states of the three switches, and the commands waiting for the poller thread."""

    def __init__(
        self, config: Config, node_id: str, controller: Controller | None, retained: RetainedCommands | None = None
    ) -> None:
        """:param controller: the BMS control when the config enables it; used only with ``control.mqtt``.
        :param retained: the refusal of retained commands, shared with the other command topics; None: its own.
        """
        self._config = config
        self._node_id = node_id
        self._controller = controller if config.control.mqtt else None  # MQTT control is its own opt-in
        self.retained = retained or RetainedCommands()
        self._lock = threading.Lock()
        self._pending: dict[Switch, bytes] = {}
        self._by_topic = {command_topic(config, node_id, switch): switch for switch in Switch}

    @property
    def enabled(self) -> bool:
        return self._controller is not None

    def command_topics(self) -> list[str]:
        """The topics to subscribe to: none unless control is on."""
        return list(self._by_topic) if self.enabled else []

    def discovery(self) -> dict[str, str]:
        """Discovery topic → retained payload: the switch configs, or ``""`` for each (removal) when off."""
        if not self.enabled:
            return {discovery_topic(self._config, self._node_id, switch): "" for switch in Switch}
        entities = control_entities(self._config, self._node_id, device_block(self._node_id))
        return {topic: json.dumps(payload, ensure_ascii=False) for topic, payload in entities}

    def states(self, reading: PackReading | None) -> list[tuple[str, str]]:
        """(state topic, ``ON``/``OFF``) of each switch the reading reports; none when off."""
        if reading is None or not self.enabled:
            return []
        return switch_state_messages(self._config, self._node_id, reading)

    # --- paho's network thread ---------------------------------------------------------------------------

    def on_command(self, topic: str, payload: bytes | bytearray, *, retained: bool) -> bool:
        """Keep a command for the poller thread if ``topic`` is a command topic (a retained one is refused: True,
        it was ours); never blocks on the BMS."""
        switch = self._by_topic.get(topic)
        if switch is None or not self.enabled:
            return False
        if self.retained.refuse(topic, retained, f"{switch} switch command"):
            return True
        with self._lock:
            self._pending.pop(switch, None)  # the newest command per switch wins, in arrival order
            self._pending[switch] = bytes(payload[:MAX_PAYLOAD_BYTES])
        return True

    # --- the poller thread -------------------------------------------------------------------------------

    def run_pending(self) -> None:
        """Run the waiting commands, one after the other (the poller's ``between_polls`` hook). Never raises."""
        with self._lock:
            pending, self._pending = self._pending, {}
        for switch, payload in pending.items():
            handle_switch_command(self._controller, switch, payload, source="mqtt")  # logs what became of it
