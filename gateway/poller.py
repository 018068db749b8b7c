"""The BMS poller: calls the driver on its own thread and hands each result to the control loop.

The interval between two polls is ``bms.poll_interval_s``, or, with a rate source (the control loop, see
:mod:`gateway.poll_rate`), whatever that says now: fast near a threshold, slow away from every one. A switch to
a faster rate wakes the poller at once (:attr:`PollRateSource.poll_rate_wake`), so the first fast poll is one fast
interval after the last poll, not after the rest of a slow one. A poll that takes longer than the interval (several
packs on one bus) is followed by the next at once: as fast as the bus allows.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from gateway.bms.driver import BmsDriver, MultiPackDriver
from gateway.clock import Clock
from gateway.errors import GatewayError
from gateway.model import PackReading

log = logging.getLogger("gateway.runtime")


class ReadingSink(Protocol):
    """Where the poller hands its results: a :class:`~gateway.runtime.ControlLoop`, or an RS485 output's feed."""

    def on_readings(self, readings: tuple[PackReading, ...]) -> None: ...

    def on_poll_failed(self, error: GatewayError) -> None: ...


@runtime_checkable
class PackReadingSink(ReadingSink, Protocol):
    """A sink that tracks packs one by one (a :class:`~gateway.runtime.ControlLoop`): told every pack a
    multi-pack driver polls, and why some were missing from a poll."""

    def expect_packs(self, pack_ids: Sequence[str]) -> None: ...

    def on_readings(
        self, readings: tuple[PackReading, ...], pack_errors: Mapping[str, GatewayError] | None = None
    ) -> None: ...


class PollRateSource(Protocol):
    """Who decides the poll interval (a :class:`~gateway.runtime.ControlLoop`)."""

    poll_rate_wake: threading.Event
    """Set when the interval became shorter: the poller recomputes its wait at once."""

    def poll_interval_s(self) -> float:
        """The interval in force now, s."""
        ...


class Poller:
    """Polls the BMS driver on its own thread, so a slow BMS never delays the frames.

    ``between_polls`` runs on that thread after each poll, before the wait for the next one: what else must use
    the BMS link (the switch commands of :mod:`gateway.control`) runs there, so its frames never interleave
    with a poll's. An exception from it is logged and the polling goes on.
    """

    def __init__(
        self,
        driver: BmsDriver,
        loop: ReadingSink,
        clock: Clock,
        poll_interval_s: float,
        *,
        between_polls: Callable[[], None] | None = None,
        rate: PollRateSource | None = None,
    ) -> None:
        """:param rate: decides the interval from poll to poll (adaptive polling); None: always
        ``poll_interval_s``."""
        self._driver = driver
        self._loop = loop
        self._clock = clock
        self._interval_s = poll_interval_s
        self._between_polls = between_polls
        self._rate = rate
        self.polls = 0
        multi = driver if isinstance(driver, MultiPackDriver) else None
        self._by_pack = (multi, loop) if multi is not None and isinstance(loop, PackReadingSink) else None
        """Set when both sides know packs one by one: then pack errors travel with the readings."""
        if self._by_pack is not None:
            loop_by_pack = self._by_pack[1]
            loop_by_pack.expect_packs(self._by_pack[0].pack_ids)

    def interval_s(self) -> float:
        """The interval between the starts of two polls in force now, s."""
        return self._interval_s if self._rate is None else self._rate.poll_interval_s()

    def next_poll_s(self, started_s: float, now_s: float) -> float:
        """When the poll after one due at ``started_s`` is due, s (monotonic): one interval later, drift-free, but
        never in the past (a poll that took longer than the interval is followed by the next at once)."""
        return max(started_s + self.interval_s(), now_s)

    def poll_once(self) -> None:
        self.polls += 1
        try:
            readings = self._driver.read()
        except GatewayError as exc:
            self._loop.on_poll_failed(exc)
            return
        if self._by_pack is not None:
            driver, sink = self._by_pack
            sink.on_readings(readings, driver.pack_errors)
        else:
            self._loop.on_readings(readings)

    def run(self, stop: threading.Event) -> None:
        wake = self._rate.poll_rate_wake if self._rate is not None else stop
        if self._rate is not None:  # a stop must end a wait on the rate's event too
            threading.Thread(target=_set_on, args=(stop, wake), name="poller-stop", daemon=True).start()
        due_s = self._clock.monotonic()
        while not stop.is_set():
            self.poll_once()
            if self._between_polls is not None:
                try:
                    self._between_polls()
                except Exception:  # the hook must not stop the polling, and so the fail-safe's data
                    log.exception("poller: between_polls hook failed")
            started_s = due_s
            while not stop.is_set():
                if wake is not stop:
                    wake.clear()
                now = self._clock.monotonic()
                due_s = self.next_poll_s(started_s, now)
                if due_s <= now or not wake.wait(due_s - now):
                    break  # due: poll; else the rate changed: recompute the wait


def _set_on(stop: threading.Event, wake: threading.Event) -> None:
    stop.wait()
    wake.set()
