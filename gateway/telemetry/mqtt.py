"""MQTT publisher: snapshots in through a bounded queue, topics out on a thread of its own, Home Assistant
discovery, and a broker that may be down, slow or gone without the control loop ever noticing.

* The control loop calls :meth:`MqttPublisher.offer`: one ``deque.append`` (the deque holds
  :data:`QUEUE_DEPTH` snapshots and drops the oldest) and one ``Event.set``. It never waits for a lock held
  by the network, never does I/O, never raises.
* The publisher thread takes the newest snapshot and publishes the topics whose payload changed
  (:mod:`~gateway.telemetry.ha_discovery`), at most once per ``mqtt.min_interval_s``; a change of the fail-safe
  state or of the alarms goes out within :data:`URGENT_GAP_S`. Every message goes through the thread's
  :class:`~gateway.telemetry.mqtt_outbox.Outbox`, which hands paho only a few unsent messages at a time: a slow
  broker costs bounded memory (states dropped oldest first; availability and discovery never).
* paho-mqtt's own network thread connects, reconnects in the background (1 s doubling to 30 s) and keeps
  the session alive. The last will sets ``availability`` to ``offline`` (retained); every (re)connect publishes
  ``online`` (retained) and the discovery configs, and so does Home Assistant's restart (``<prefix>/status``),
  at most once per 30 s however often it is asked (:class:`~gateway.telemetry.mqtt_outbox.ResyncSchedule`).
  A failed connection is logged with its reason and a hint (:mod:`~gateway.telemetry.mqtt_errors`).
* ``data_availability`` (retained) says whether the BMS data is fresh
  (:func:`~gateway.telemetry.ha_discovery.data_available`); the entities showing BMS values list it beside the
  gateway's availability. It is queued as an availability message (never dropped) in the very round that takes
  a snapshot changing it, not with the next batch: the values go unavailable the moment the fail-safe leaves
  normal, and come back with the first fresh reading. The last will stays the gateway's availability alone.
* The BMS control switches (:mod:`~gateway.telemetry.switches`), when given: their discovery with the rest
  (empty, removing them, while MQTT control is off), their states retained with each batch, and their commands
  handed over to run on the poller thread, never on paho's. No command topic (the switches', the "Forget
  silent packs" button's) ever obeys a retained message (:mod:`~gateway.telemetry.commands`), and the gateway
  never publishes on one.

paho-mqtt is the ``mqtt`` extra, imported only when MQTT is enabled; the password never reaches a log line.
"""

from __future__ import annotations

import logging
import math
import socket
import ssl
import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from gateway.clock import Clock
from gateway.config import MqttConfig
from gateway.errors import ConfigError
from gateway.logging_setup import Throttle
from gateway.runtime import Snapshot
from gateway.telemetry.commands import RetainedCommands
from gateway.telemetry.ha_discovery import (
    AVAILABLE,
    NOT_AVAILABLE,
    Topics,
    data_available,
    discovery_configs,
    shape,
    topic_payloads,
)
from gateway.telemetry.mqtt_errors import connect_failure, refusal_hint
from gateway.telemetry.mqtt_outbox import Outbox, Outgoing, ResyncSchedule
from gateway.telemetry.pack_button import ForgetButton
from gateway.telemetry.status_doc import deeply_discharged

if TYPE_CHECKING:
    from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags, MQTTMessage
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

    from gateway.telemetry.switches import SwitchBridge

log = logging.getLogger(__name__)

QUEUE_DEPTH: Final = 4
"""Snapshots waiting for the publisher thread; older ones are dropped (only the newest matters)."""
URGENT_GAP_S: Final = 1.0
"""A fail-safe or alarm change is published this soon after the previous batch at the latest, s."""
RECONNECT_MIN_S: Final = 1
RECONNECT_MAX_S: Final = 30
CONNECT_TIMEOUT_S: Final = 5.0
STOP_TIMEOUT_S: Final = 2.0
"""Longest :meth:`MqttPublisher.stop` waits for the goodbye and the network thread, s."""
MISSING: Final = "needs paho-mqtt: pip install 'bms-gateway[mqtt]'"


def resolve_node_id(config: MqttConfig) -> str:
    """``mqtt.node_id``, or this machine's host name made fit for a topic level."""
    if config.node_id is not None:
        return config.node_id
    name = "".join(c if c.isascii() and (c.isalnum() or c in "_-") else "_" for c in socket.gethostname())
    return name.strip("_") or "bms_gateway"


def require_paho() -> Any:
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise ConfigError("mqtt.enabled", MISSING) from None
    return mqtt


class MqttPublisher:
    """Publishes snapshots to one broker; :meth:`start` once, :meth:`offer` per snapshot, :meth:`stop` at the end."""

    def __init__(
        self,
        config: MqttConfig,
        clock: Clock,
        *,
        node_id: str | None = None,
        client_factory: Callable[[str], Client] | None = None,
        switches: SwitchBridge | None = None,
        forget_button: bool = True,
        bms_timeout_s: float | None = None,
    ) -> None:
        """:param client_factory: makes the paho client from a client id (tests); default: paho's own.
        :param switches: the BMS control switches (discovery, retained states, commands); None: none.
        :param forget_button: offer Home Assistant's "Forget silent packs" button (:attr:`forget_button`).
        :param bms_timeout_s: ``failsafe.bms_timeout_s``: an older reading is stale data whatever the fail-safe
            state the snapshot carries; None: the fail-safe state alone decides.
        """
        self._config = config
        self._clock = clock
        self._bms_timeout_s = bms_timeout_s
        node = node_id or resolve_node_id(config)
        self.topics = Topics(node, f"{config.topic_prefix}/{node}", config.discovery_prefix)
        self._client_id = config.client_id or f"bms-gateway-{node}"
        self._client_factory = client_factory
        self._switches = switches
        self.retained = switches.retained if switches is not None else RetainedCommands()
        """Refuses retained commands on every command topic (one rule, one count)."""
        self.forget_button = ForgetButton(self.topics, self.retained) if forget_button else None
        """Presses go to the control loop once :meth:`ForgetButton.attach` got it."""
        self._client: Client | None = None
        self._queue: deque[Snapshot] = deque(maxlen=QUEUE_DEPTH)
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._reconnected = threading.Event()
        """Set on each (re)connect: publish availability, discovery, everything, at once."""
        self.ha_restarts = ResyncSchedule(clock)
        """Home Assistant's requests for everything again, paced."""
        self._outbox = Outbox()
        self._thread: threading.Thread | None = None
        # The publisher thread's own state (only :meth:`_step` touches it).
        self._pending: Snapshot | None = None
        self._newest: Snapshot | None = None
        self._sent: dict[str, str] = {}
        """Topic → payload last queued for the broker: only changes are published."""
        self._data_payload: str | None = None
        """``data_availability`` last queued for the broker (None: not since the last resync)."""
        self._discovered: tuple[int, int] | None = None
        self._discovery_topics: set[str] = set()
        self._last_batch_s = -math.inf
        self._last_key: tuple[object, ...] | None = None
        self._connected = False
        self._broker = f"{config.host}:{config.port}"
        self._throttle = Throttle(log)
        self.offered = 0
        self.dropped = 0
        """Snapshots pushed out of the full queue before the publisher thread took them."""
        self.published = 0
        self.skipped = 0
        """Batches queued while state messages of an earlier one still waited for paho (a slow broker)."""
        self.last_error: str | None = None
        self.connect_failures = 0
        """Connection attempts that failed before the broker answered (TLS, refused, unreachable)."""

    # --- the control loop's side ---------------------------------------------------------------------------

    def offer(self, snapshot: Snapshot) -> None:
        """Hand over a snapshot. Never blocks, never raises; drops the oldest queued one when full."""
        self.offered += 1
        if len(self._queue) == QUEUE_DEPTH:
            self.dropped += 1
        self._queue.append(snapshot)  # deque with maxlen: atomic, drops from the other end
        self._wake.set()

    # --- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Create the client and start connecting in the background; returns at once.

        :raises ConfigError: paho-mqtt is missing, or a TLS file cannot be loaded (names the key).
        """
        client = self._make_client()
        client.connect_async(self._config.host, self._config.port, keepalive=self._config.keepalive_s)
        client.loop_start()
        self._client = client
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self._thread.start()
        log.info("mqtt: publishing to %s as %s (topics %s/...)", self._broker, self._client_id, self.topics.base)

    def stop(self) -> None:
        """Say ``offline`` (retained) if connected and disconnect; waits at most about :data:`STOP_TIMEOUT_S`."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
        client, self._client = self._client, None
        if client is None:
            return
        # paho may sit in a connect to an unreachable broker: tear down on a helper thread, wait a bounded time.
        teardown = threading.Thread(target=self._teardown, args=(client,), name="mqtt-stop", daemon=True)
        teardown.start()
        teardown.join(STOP_TIMEOUT_S + CONNECT_TIMEOUT_S)

    def health(self) -> dict[str, Any]:
        return {
            "broker": self._broker,
            "connected": self._connected,
            "offered": self.offered,
            "dropped": self.dropped,
            "published": self.published,
            "skipped": self.skipped,
            "states_dropped": self._outbox.dropped_states,
            "resyncs": self.ha_restarts.resyncs,
            "retained_commands_refused": self.retained.refused,
            "connect_failures": self.connect_failures,
            "last_error": self.last_error,
        }

    @property
    def connected(self) -> bool:
        return self._connected

    def _make_client(self) -> Client:
        mqtt = require_paho()
        if self._client_factory is not None:
            client = self._client_factory(self._client_id)
        else:
            client = mqtt.Client(
                callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
                client_id=self._client_id,
                protocol=mqtt.MQTTv311,
                clean_session=True,
            )
        config = self._config
        client.will_set(self.topics.availability, NOT_AVAILABLE, qos=1, retain=True)
        if config.username is not None:
            client.username_pw_set(config.username, None if config.password is None else config.password.reveal())
        if config.tls.enabled:
            self._set_tls(client)
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        client.connect_timeout = CONNECT_TIMEOUT_S
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        return client

    def _set_tls(self, client: Client) -> None:
        tls = self._config.tls
        try:
            client.tls_set(ca_certs=tls.ca_file, certfile=tls.cert_file, keyfile=tls.key_file)
        except (OSError, ssl.SSLError, ValueError) as error:
            key = "mqtt.tls.ca_file" if tls.cert_file is None else "mqtt.tls.cert_file"
            raise ConfigError(key, f"cannot load the TLS files: {getattr(error, 'strerror', None) or error}") from None
        if tls.insecure:
            client.tls_insecure_set(True)

    def _teardown(self, client: Client) -> None:
        try:
            if self._connected:
                info = client.publish(self.topics.availability, NOT_AVAILABLE, qos=1, retain=True)
                info.wait_for_publish(STOP_TIMEOUT_S)
            client.disconnect()
        except (OSError, RuntimeError, ValueError) as error:
            log.debug("mqtt: goodbye failed: %s", error)
        client.loop_stop()
        self._connected = False

    # --- paho's network thread -------------------------------------------------------------------------------

    def _on_connect(
        self, client: Client, userdata: Any, flags: ConnectFlags, reason: ReasonCode, properties: Properties | None
    ) -> None:
        if reason.is_failure:
            self.last_error = f"broker {self._broker} refused the connection: {reason}; {refusal_hint(reason)}"
            self._throttle.problem(f"mqtt: {self.last_error} (retrying in the background)")
            return
        self._connected = True
        self.last_error = None
        client.subscribe(f"{self.topics.discovery_prefix}/status", qos=1)
        if self.forget_button is not None:
            client.subscribe(self.forget_button.command_topic, qos=1)
        if self._switches is not None:
            for topic in self._switches.command_topics():  # none unless control is on
                client.subscribe(topic, qos=1)
        if self._throttle.failing:
            self._throttle.resolved(f"mqtt: connected to {self._broker} again")
        else:
            log.info("mqtt: connected to %s", self._broker)
        self._reconnected.set()
        self._wake.set()

    def _on_connect_fail(self, client: Client, userdata: Any) -> None:
        # paho calls this from inside its ``except OSError``: the exception being handled is the reason.
        self.connect_failures += 1
        self.last_error = connect_failure(sys.exc_info()[1], self._config)
        self._throttle.problem(f"mqtt: {self.last_error} (retrying in the background)")

    def _on_disconnect(
        self,
        client: Client,
        userdata: Any,
        flags: DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_connected, self._connected = self._connected, False
        if self._stopping.is_set() or not was_connected:
            return
        self.last_error = f"connection to {self._broker} lost ({reason})"
        self._throttle.problem(f"mqtt: {self.last_error}; reconnecting in the background")

    def _on_message(self, client: Client, userdata: Any, message: MQTTMessage) -> None:
        retained = bool(message.retain)
        if message.topic == f"{self.topics.discovery_prefix}/status" and message.payload == AVAILABLE.encode():
            self.ha_restarts.request()  # Home Assistant restarted: it needs discovery and current values again
            self._wake.set()
        elif self.forget_button is not None and self.forget_button.on_command(
            message.topic, message.payload, retained=retained
        ):
            pass  # queued for the control loop, or refused with a log line
        elif self._switches is not None:
            self._switches.on_command(message.topic, message.payload, retained=retained)  # runs on the poller thread

    def _on_publish(
        self, client: Client, userdata: Any, mid: int, reason: ReasonCode, properties: Properties | None
    ) -> None:
        self._wake.set()  # room in paho's window: the outbox may hand over more

    # --- the publisher thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        timeout_s: float | None = None
        while True:
            self._wake.wait(timeout_s)
            self._wake.clear()
            if self._stopping.is_set():
                return
            timeout_s = self._step()

    def _step(self) -> float | None:
        """One round of the publisher thread: queue what is due, hand paho what fits. Returns the seconds until
        something falls due (None: nothing until woken)."""
        while self._queue:
            self._pending = self._newest = self._queue.popleft()
        client = self._client
        if client is None or not self._connected:
            return None
        waits: list[float] = []
        if self._reconnected.is_set():
            self._reconnected.clear()
            self._outbox.reconnected()
            self._resync()
        else:
            due_s = self.ha_restarts.due()
            if due_s == 0:
                self._resync()
            elif due_s is not None:
                waits.append(due_s)  # coalesced: one resync when the pause is over
        self._queue_data_availability()
        if self._config.discovery and shape(self._newest) != self._discovered:
            self._discovered = shape(self._newest)
            self._discovery_topics = self._queue_discovery(self._discovered, self._discovery_topics)
        batch_due_s = self._queue_batch()
        if batch_due_s is not None:
            waits.append(batch_due_s)
        self.published += self._outbox.drain(client)
        if self._outbox.waiting:
            waits.append(URGENT_GAP_S)  # paho's window is full: its on_publish wakes us sooner
        return min(waits, default=None)

    def _resync(self) -> None:
        """Everything again: availability, discovery and every value (a new connection, Home Assistant's restart)."""
        self.ha_restarts.done()
        self._sent.clear()
        self._discovered = None
        self._data_payload = None  # sent again after the gateway's (a broker without persistence forgot it)
        self._last_batch_s = -math.inf
        self._pending = self._newest
        self._outbox.put_first(Outgoing(self.topics.availability, AVAILABLE, qos=1, retain=True))

    def _queue_data_availability(self) -> None:
        """Queue ``data_availability`` if the newest snapshot changed it: at once, never dropped, retained."""
        payload = AVAILABLE if data_available(self._newest, self._bms_timeout_s) else NOT_AVAILABLE
        if payload != self._data_payload:
            self._data_payload = payload
            self._outbox.put_first(Outgoing(self.topics.data_availability, payload, qos=1, retain=True))

    def _queue_batch(self) -> float | None:
        """Queue the changed values of the pending snapshot if due; else the seconds until it is (None: none)."""
        pending = self._pending
        if pending is None:
            return None
        now = self._clock.monotonic()
        key = _urgent_key(pending)
        due_s = self._last_batch_s + (URGENT_GAP_S if key != self._last_key else self._config.min_interval_s)
        if now < due_s:
            return due_s - now
        if self._outbox.states_waiting:
            self.skipped += 1  # the previous batch has not left yet: its values are replaced, not piled up
        for suffix, payload in topic_payloads(pending).items():
            self._queue_state(Outgoing(self.topics.of(suffix), payload))
        for topic, payload in self._switches.states(pending.reading) if self._switches is not None else ():
            self._queue_state(Outgoing(topic, payload, qos=1, retain=True))
        self._last_batch_s, self._last_key, self._pending = now, key, None
        return None

    def _queue_state(self, message: Outgoing) -> None:
        if self._sent.get(message.topic) == message.payload:
            return
        self._sent[message.topic] = message.payload
        dropped = self._outbox.put_state(message)
        if dropped is not None and self._sent.get(dropped.topic) == dropped.payload:
            del self._sent[dropped.topic]  # the broker never got it: send that topic again with the next batch

    def _queue_discovery(self, cells_temps: tuple[int, int], previous: set[str]) -> set[str]:
        configs = discovery_configs(self.topics, *cells_temps)
        if self._switches is not None:
            configs |= self._switches.discovery()  # empty payloads while MQTT control is off: old switches go
        if self.forget_button is not None:
            configs |= self.forget_button.discovery()
        for topic in previous - configs.keys():
            self._outbox.put_first(Outgoing(topic, "", qos=1, retain=True))  # an empty retained config removes it
        for topic, payload in configs.items():
            self._outbox.put_first(Outgoing(topic, payload, qos=1, retain=True))
        return set(configs)


def _urgent_key(snapshot: Snapshot) -> tuple[object, ...]:
    """What must reach the broker within :data:`URGENT_GAP_S` when it changes."""
    alarms = frozenset() if snapshot.reading is None else snapshot.reading.state.alarms
    limits = snapshot.limits
    enables = None if limits is None else (limits.charge_enable, limits.discharge_enable)
    return (
        snapshot.state,
        snapshot.inverter_state,
        alarms,
        snapshot.latched_packs,
        deeply_discharged(snapshot),
        enables,
    )
