"""Assembly: turn a validated config and a profile into a running gateway (driver, CAN link, loop, poller)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import can

from gateway.bms.composite import CompositeDriver
from gateway.bms.driver import BmsDriver, driver_class
from gateway.bms.reply_ring import ReplyRing
from gateway.clock import Clock
from gateway.config import ADDRESSED_BMS_DRIVERS, BmsConfig, Config, limits_tuning
from gateway.control import Controller, control_enabled, open_controller
from gateway.effective import Effective, resolve
from gateway.errors import ControlRefused, GatewayError
from gateway.limits import LimitsSettings
from gateway.profiles import Profile, load_profile
from gateway.rs485.server import Rs485Output, build_extra_outputs, snapshot_source, start_all, stop_all
from gateway.runtime import ControlLoop, LoopSettings, Poller, run_loop
from gateway.state_store import StateStore, state_directory
from gateway.telemetry.service import Telemetry
from gateway.telemetry.support import SupportRings
from gateway.transport.can_link import CanLink, CanSettings
from gateway.transport.serial_link import open_serial_port

log = logging.getLogger(__name__)


def open_driver(
    bms: BmsConfig, clock: Clock, *, exclusive: bool = False, replies: ReplyRing | None = None
) -> BmsDriver:
    """The BMS driver the config names (nothing is opened until the first read).

    :param replies: keeps the last replies, password masked, for the support bundle (the service's).
    :param exclusive: lock the port (pyserial's ``exclusive``, flock) so that no other exclusive user shares it:
        the service and ``bms-gateway control`` never write frames into each other's exchanges.
    """
    factory = driver_class(bms.driver)
    options: dict[str, object] = {"addresses": bms.addresses} if bms.driver in ADDRESSED_BMS_DRIVERS else {}
    if exclusive:
        options["serial_factory"] = partial(open_serial_port, exclusive=True)
    if replies is not None:
        options["replies"] = replies
    return factory(
        port=bms.port, baudrate=bms.baudrate, timeout_s=bms.timeout_s, retries=bms.retries, clock=clock, **options
    )


def open_battery(
    config: Config, clock: Clock, *, exclusive: bool = False, replies: ReplyRing | None = None
) -> BmsDriver:
    """One driver for every BMS link of the config: the one bus's, or a composite polling each bus in turn."""
    if not config.more_bms:
        return open_driver(config.bms, clock, exclusive=exclusive, replies=replies)
    return CompositeDriver([open_driver(bus, clock, exclusive=exclusive, replies=replies) for bus in config.buses])


def open_control(config: Config, driver: BmsDriver, clock: Clock) -> Controller | None:
    """The BMS control, only when the config enables it (else None: nothing can write to the BMS).

    A driver without control is logged and the gateway runs without it: the inverter link comes first.
    """
    if not control_enabled(config):
        return None
    try:
        controller = open_controller(config, driver, clock)
    except ControlRefused as error:  # this driver has no control (a bad password is a ConfigError: raised)
        log.error("control: %s; running without BMS control", error)
        return None
    log.info("control: BMS control enabled (charge, discharge and balancer switches)")
    return controller


def describe_buses(config: Config) -> str:
    """The BMS links for a log line: ``jk-modbus on /dev/ttyUSB0 (units 1, 2) + jk-uart on /dev/ttyUSB1``."""
    parts = []
    for bus in config.buses:
        units = f" (units {', '.join(map(str, bus.addresses))})" if bus.driver in ADDRESSED_BMS_DRIVERS else ""
        parts.append(f"{bus.driver} on {bus.port}{units}")
    return " + ".join(parts)


def limits_settings(config: Config) -> LimitsSettings:
    """The limits engine's tuning from the config."""
    return limits_tuning(config.limits, config.charging)


def can_bus(**kwargs: Any) -> can.BusABC:
    """python-can's Bus, but only from our config: ignore ~/can.conf, /etc/can.conf and CAN_* variables."""
    return can.Bus(ignore_config=True, **kwargs)


@dataclass
class Gateway:
    """A gateway assembled and ready to run."""

    config: Config
    profile: Profile
    effective: Effective
    driver: BmsDriver
    link: CanLink
    loop: ControlLoop
    poller: Poller
    clock: Clock
    telemetry: Telemetry
    """sd_notify, watchdog, status endpoint, MQTT, relay: fed from the loop's thread, never blocking it."""
    extras: list[Rs485Output] = field(default_factory=list)
    """Read-only outputs beside the inverter link (``extra_outputs``); one failing never disturbs it."""

    def run(self, stop: threading.Event) -> None:
        """Run until ``stop`` is set; sends the final zero set and closes the BMS port and CAN bus."""
        self.link.open()
        telemetry = self.telemetry
        try:
            telemetry.start(self.loop)
        except GatewayError:
            self.link.close()
            raise
        log.info(
            "running: BMS %s every %g s → profile %s on %s at %d bit/s",
            describe_buses(self.config),
            self.config.bms.poll_interval_s,
            self.profile.name,
            self.link.settings.describe(),
            self.effective.can_bitrate.value,
        )
        start_all(self.extras)
        telemetry.ready(f"profile {self.profile.name} on {self.link.settings.describe()}")
        try:
            run_loop(
                self.loop,
                self.poller,
                self.clock,
                stop,
                before_tick=telemetry.before_tick,
                after_tick=telemetry.after_tick,
            )
        finally:
            stop_all(self.extras)
            telemetry.stop(self.loop.snapshot())
            self.driver.close()
            self.link.close()


def build_gateway(config: Config, clock: Clock, *, profile: Profile | None = None) -> Gateway:
    """Assemble a gateway. :raises ConfigError: / :raises ProfileError: when config or profile are unusable."""
    profile = profile or load_profile(config.inverter.profile)
    effective = resolve(config, profile)
    can_config = config.inverter.can
    assert can_config is not None  # resolve() insists on it for CAN profiles
    heartbeat_id = profile.heartbeat.can_id if profile.heartbeat else None
    loop: ControlLoop | None = None
    support = SupportRings()  # frames, BMS replies, log lines: bms-gateway report takes them (GET /support)

    def on_receive(can_id: int) -> None:
        if loop is not None:  # frames only arrive once the gateway runs, long after the loop exists
            loop.on_frame(can_id)

    link = CanLink(
        CanSettings(
            interface=can_config.interface,
            channel=can_config.channel,
            bitrate=effective.can_bitrate.value,
            extra=can_config.extra,
        ),
        clock,
        listen_ids=profile.listen_ids,
        bus_factory=can_bus,
        # Only frames that carry named values need decoding; the rest matter by their arrival alone.
        decoders={frame.can_id: frame.decode_values for frame in profile.inverter_frames if frame.spec.fields},
        on_receive=on_receive,
        ring=support.can,
    )
    loop = ControlLoop(
        profile,
        link,
        clock,
        LoopSettings(
            poll_interval_s=config.bms.poll_interval_s,
            fast_poll_interval_s=config.bms.fast_poll_interval_s,
            bms_timeout_s=effective.bms_timeout_s.value,
            silence_after_s=effective.silence_after_s.value,
            limits=limits_settings(config),
        ),
        heartbeat_age_s=None if heartbeat_id is None else (lambda: link.heartbeat_age_s(heartbeat_id)),
        inverter_values=link.received_values,
        send_error=lambda: link.last_error,
        store=StateStore(state_directory(config.state_dir)),
    )
    # The service's port, locked: the CLI's control never shares it.
    driver = open_battery(config, clock, exclusive=True, replies=support.bms)
    controller = open_control(config, driver, clock)
    telemetry = Telemetry.from_config(config, clock, controller=controller, support=support, profile=profile)
    poller = Poller(driver, loop, clock, config.bms.poll_interval_s, between_polls=telemetry.between_polls, rate=loop)
    extras = build_extra_outputs(config, snapshot_source(loop), clock)
    return Gateway(config, profile, effective, driver, link, loop, poller, clock, telemetry, extras)
