"""Assembly of a gateway whose inverter speaks an RS485 profile (Pylontech ASCII, Modbus battery maps).

Here the inverter is the master: there is no periodic control loop, the output answers each poll from the
freshest reading and limits that :class:`~gateway.rs485.server.LimitsFeed` holds, applying the same fail-safe
rules (stale → zero limits and cleared flags; silent → no answers).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from gateway.app import describe_buses, limits_settings, open_battery
from gateway.bms.driver import BmsDriver
from gateway.clock import Clock
from gateway.config import Config
from gateway.rs485.profile_spec import Rs485Profile
from gateway.rs485.server import (
    LimitsFeed,
    Rs485Output,
    build_extra_outputs,
    build_rs485_output,
    load_output_profile,
    output_settings,
    start_all,
    stop_all,
)
from gateway.runtime import Poller

log = logging.getLogger(__name__)


@dataclass
class Rs485Gateway:
    config: Config
    profile: Rs485Profile
    driver: BmsDriver
    feed: LimitsFeed
    poller: Poller
    output: Rs485Output
    extras: list[Rs485Output]

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set; the BMS is polled on its own thread."""
        outputs = [self.output, *self.extras]
        start_all(outputs)
        log.info(
            "running: BMS %s → profile %s on %s", describe_buses(self.config), self.profile.name, self.output.describe()
        )
        poll_thread = threading.Thread(target=self.poller.run, args=(stop,), name="bms-poller", daemon=True)
        poll_thread.start()
        try:
            stop.wait()
        finally:
            stop.set()
            stop_all(outputs)
            poll_thread.join(timeout=5)
            self.driver.close()
            log.info("stopped")


def build_rs485_gateway(config: Config, clock: Clock) -> Rs485Gateway:
    """:raises ConfigError: / :raises ProfileError: when config or profile are unusable."""
    profile = load_output_profile(config.inverter.profile, "inverter.profile")
    feed = LimitsFeed(clock, limits_settings(config), output_settings(config, profile))
    output = build_rs485_output(config, feed, clock, profile=profile)
    extras = build_extra_outputs(config, feed, clock)
    driver = open_battery(config, clock, exclusive=True)  # locked: bms-gateway control never shares the port
    poller = Poller(driver, feed, clock, config.bms.poll_interval_s)
    return Rs485Gateway(config, profile, driver, feed, poller, output, extras)
