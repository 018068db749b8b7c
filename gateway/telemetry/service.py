"""Telemetry assembled from the config, and the three hooks the runtime calls.

:meth:`Telemetry.from_config` checks the extras the config needs (a missing one is a one-line
:class:`~gateway.errors.ConfigError`); :meth:`Telemetry.start` opens the outputs (fail-safe relay dropped,
status endpoint, MQTT connecting in the background); :meth:`Telemetry.ready` tells systemd. In the loop,
:meth:`Telemetry.before_tick` is the fault hook and :meth:`Telemetry.after_tick` pings the watchdog, drives the
relay and hands a snapshot to the publishers, at most every :data:`SNAPSHOT_INTERVAL_S` (at once on a
fail-safe change). Nothing in the hooks does I/O but the relay's line (only on a change) and the
non-blocking notify datagram. :meth:`Telemetry.stop` drops the relay and says goodbye.

A status endpoint that cannot bind is logged and left out: monitoring must never stop the battery protocol.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from functools import partial
from typing import Any, Final

from gateway.clock import Clock
from gateway.config import Config
from gateway.control import Controller
from gateway.control_socket import ControlSocketServer, serve_control
from gateway.errors import GatewayError
from gateway.profiles import Profile
from gateway.runtime import ControlLoop, FailsafeState, Snapshot
from gateway.telemetry.fault import LoopFault
from gateway.telemetry.http_status import LatestSnapshot, StatusServer
from gateway.telemetry.mqtt import MqttPublisher, require_paho, resolve_node_id
from gateway.telemetry.page import Page
from gateway.telemetry.relay import FailsafeRelay, open_relay
from gateway.telemetry.sd_notify import Notifier, WatchdogPinger
from gateway.telemetry.support import SupportRings
from gateway.telemetry.switches import SwitchBridge

log = logging.getLogger(__name__)

SNAPSHOT_INTERVAL_S: Final = 0.5
"""Newest snapshot handed to HTTP and MQTT at least this often while the loop runs, s."""


class Telemetry:
    """The watchdog, the fail-safe relay, the status endpoint and MQTT, behind the runtime's hooks."""

    def __init__(
        self,
        config: Config,
        clock: Clock,
        *,
        notifier: Notifier,
        pinger: WatchdogPinger,
        fault: LoopFault,
        publisher: MqttPublisher | None = None,
        switches: SwitchBridge | None = None,
        controller: Controller | None = None,
        support: SupportRings | None = None,
        page: Page | None = None,
    ) -> None:
        self._config = config
        self.support = support
        """Frames, BMS replies and log lines for ``bms-gateway report`` (``GET /support``); None: not kept."""
        self._clock = clock
        self.notifier = notifier
        self.pinger = pinger
        self.fault = fault
        self.latest = LatestSnapshot()
        self.publisher = publisher
        self.switches = switches
        """The BMS control switches over MQTT; their commands run in :meth:`between_polls` (poller thread)."""
        self.status_server: StatusServer | None = None
        self.page = page
        """The local page's history, events and streams (served by the status endpoint); None: no page."""
        self.controller = controller
        self.control_socket: ControlSocketServer | None = None
        """Where ``bms-gateway control`` asks this service (control on); its requests run in :meth:`between_polls`."""
        self.relay: FailsafeRelay | None = None
        self._state: FailsafeState | None = None
        self._next_snapshot_s = 0.0

    @classmethod
    def from_config(
        cls,
        config: Config,
        clock: Clock,
        environ: Mapping[str, str] = os.environ,
        *,
        controller: Controller | None = None,
        support: SupportRings | None = None,
        profile: Profile | None = None,
    ) -> Telemetry:
        """:param controller: the BMS control, only when the config enables it: MQTT then offers its switches.
        :param profile: decodes the frames the local page shows; None: no page (the endpoint's ``/`` is one line).
        :raises ConfigError: an extra the config needs is not installed, or ``BMS_GATEWAY_FAULT`` is bad.
        """
        publisher = switches = None
        if config.mqtt.enabled:
            require_paho()  # fail now, with the extra's name, not later in a thread
            node_id = resolve_node_id(config.mqtt)
            switches = SwitchBridge(config, node_id, controller)
            publisher = MqttPublisher(
                config.mqtt, clock, node_id=node_id, switches=switches, bms_timeout_s=config.failsafe.bms_timeout_s
            )
        notifier = Notifier.from_env(environ)
        return cls(
            config,
            clock,
            notifier=notifier,
            pinger=WatchdogPinger.from_env(notifier, clock, environ),
            fault=LoopFault.from_env(clock, environ),
            publisher=publisher,
            switches=switches,
            controller=controller,
            support=support,
            page=Page(config, profile, clock) if profile is not None and config.status.enabled else None,
        )

    # --- start-up and shutdown (Gateway.run's thread) --------------------------------------------------------

    def start(self, loop: ControlLoop | None = None) -> None:
        """Open the outputs: relay (dropped), status endpoint, MQTT. :raises ConfigError: relay or TLS unusable.

        :param loop: takes the user's commands (``POST /packs/<id>/forget``); None: the endpoint takes none.
        """
        self.relay = open_relay(self._config.relay)
        if self.support is not None:
            logging.getLogger().addHandler(self.support.log)
        self.control_socket = serve_control(self.controller, self._config.state_dir)
        status = self._config.status
        if status.enabled:
            forget = None if loop is None else partial(loop.forget_pack, source="cli")
            server = StatusServer(
                status,
                self.latest,
                self._clock,
                mqtt_health=self._mqtt_health,
                forget_pack=forget,
                support=self.support,
                page=self.page,
            )
            try:
                server.start()
                self.status_server = server
            except GatewayError as error:
                log.error("%s; running without it", error)
        if self.publisher is not None:
            if loop is not None and self.publisher.forget_button is not None:
                self.publisher.forget_button.attach(loop)
            self.publisher.start()

    def ready(self, status: str) -> None:
        """Tell systemd the gateway is up (config valid, outputs open); a sleeping BMS is the fail-safe's job."""
        self.notifier.ready(status)
        if self.pinger.interval_s is not None:
            log.info("watchdog: pinging systemd every %g s while the control loop runs", self.pinger.interval_s)

    def stop(self, final: Snapshot | None = None) -> None:
        """Drop the relay, tell systemd, publish the last snapshot, close MQTT and the endpoint. Idempotent."""
        zero_set_sent = final is not None and final.zero_set_sent  # only when it went out: the bus may be down
        self.notifier.stopping("stopping: last frames sent with zero current limits" if zero_set_sent else "stopping")
        if self.control_socket is not None:
            self.control_socket.stop()
            self.control_socket = None
        if self.relay is not None:
            self.relay.shutdown()
            self.relay = None
        if final is not None:
            self.latest.offer(final)
            if self.page is not None:
                self.page.offer(final)
        if self.publisher is not None:
            if final is not None:
                self.publisher.offer(final)
            self.publisher.stop()
        if self.status_server is not None:
            self.status_server.stop()
            self.status_server = None
        if self.support is not None:
            logging.getLogger().removeHandler(self.support.log)
        self.notifier.close()

    # --- the control loop's hooks -----------------------------------------------------------------------------

    def before_tick(self) -> None:
        """Call before each :meth:`ControlLoop.tick`: the fault hook (blocks only while a test hangs the loop)."""
        self.fault()

    def after_tick(self, loop: ControlLoop) -> None:
        """Call after each :meth:`ControlLoop.tick`, on the loop's thread. Never blocks."""
        self.pinger.on_tick()
        state = loop.state
        if self.relay is not None:
            self.relay.update(state)
        now = self._clock.monotonic()
        if state is self._state and now < self._next_snapshot_s:
            return
        if state is not self._state:
            self.notifier.status(f"fail-safe {state.value}")
            self._state = state
        self._next_snapshot_s = now + SNAPSHOT_INTERVAL_S
        snapshot = loop.snapshot()
        self.latest.offer(snapshot)
        if self.page is not None:
            self.page.offer(snapshot)
        if self.publisher is not None:
            self.publisher.offer(snapshot)

    def between_polls(self) -> None:
        """The poller's hook, on its thread between two reads: run the switch commands MQTT brought. Never raises."""
        if self.switches is not None:
            self.switches.run_pending()
        if self.control_socket is not None:
            self.control_socket.run_pending()

    def _mqtt_health(self) -> dict[str, Any] | None:
        return None if self.publisher is None else self.publisher.health()
