"""The control loop: poll the BMS, derive limits, publish frames, and fail safe.

Two threads, one clock:

* the **poller** calls the BMS driver every ``poll_interval_s`` and hands each result to the loop; a slow or
  silent BMS only ever delays the poller;
* the **control loop** (:meth:`ControlLoop.tick`) decides the fail-safe state from the age of the newest good
  reading and sends every frame that is due, itself, one frame at a time (never a kernel broadcast task: if
  this loop hangs, the inverter must stop hearing old limits).

Fail-safe states (:class:`FailsafeState`): ``waiting`` until the first good reading (nothing is sent);
``normal``; ``stale`` once the newest good reading is older than ``bms_timeout_s`` (both currents 0, both
enables cleared, the communication alarm raised); ``silent`` once it is older than ``silence_after_s`` (nothing
is sent, for inverters that ignore 0 A). A fresh good reading returns to ``normal`` by itself.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from gateway.bms.driver import BmsDriver
from gateway.clock import Clock
from gateway.errors import GatewayError
from gateway.limits import LimitsEngine, LimitsSettings, failsafe_limits
from gateway.model import Limits, PackReading
from gateway.plausibility import implausibility
from gateway.profiles import Profile
from gateway.values import Value, published_values

log = logging.getLogger(__name__)

IDLE_TICK_S = 0.1
"""Longest the loop sleeps when nothing is due, s: bounds how late a state change is noticed."""


class FailsafeState(enum.StrEnum):
    WAITING = "waiting"
    NORMAL = "normal"
    STALE = "stale"
    SILENT = "silent"
    STOPPED = "stopped"


class FrameSink(Protocol):
    """Where encoded frames go (a :class:`~gateway.transport.can_link.CanLink`)."""

    def send(self, can_id: int, data: bytes) -> bool: ...


@dataclass(frozen=True, slots=True)
class LoopSettings:
    poll_interval_s: float
    """Time between BMS polls, s."""
    bms_timeout_s: float
    """A good reading older than this is stale, s."""
    silence_after_s: float
    """A good reading older than this silences the output, s."""
    limits: LimitsSettings
    """Tuning of the limits engine (the user's caps among them)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the loop knows at one moment; for status views, never for control."""

    at_s: float
    state: FailsafeState
    reading: PackReading | None
    limits: Limits | None
    reading_age_s: float | None
    last_error: str | None
    heartbeat_age_s: float | None
    frames_sent: int
    send_failures: int
    sent: dict[int, bytes] = field(default_factory=dict)
    """The latest payload sent per CAN id."""


class ControlLoop:
    """Decides the fail-safe state and publishes the profile's frames. Thread-safe; see module docs."""

    def __init__(
        self,
        profile: Profile,
        sink: FrameSink,
        clock: Clock,
        settings: LoopSettings,
        *,
        heartbeat_age_s: Callable[[], float | None] = lambda: None,
    ) -> None:
        self._profile = profile
        self._sink = sink
        self._clock = clock
        self._settings = settings
        self._heartbeat_age_s = heartbeat_age_s
        self._lock = threading.Lock()
        self.wake = threading.Event()
        """Set when something arrived that the loop should act on now."""
        self._reading: PackReading | None = None
        self._limits: Limits | None = None
        self._limits_for: PackReading | None = None
        self._engine = LimitsEngine(settings.limits, max_age_s=settings.bms_timeout_s)
        self._warned: tuple[str, ...] = ()
        self._last_sent_limits: Limits | None = None
        self._last_error: str | None = None
        self._state = FailsafeState.WAITING
        self._next_due: dict[int, float] = {}
        self._sent: dict[int, bytes] = {}
        self.frames_sent = 0
        self.send_failures = 0

    # --- inputs (poller thread) -----------------------------------------------------------------------------

    def on_readings(self, readings: tuple[PackReading, ...]) -> None:
        """A poll succeeded. An implausible reading counts as a failed poll."""
        if not readings:
            self.on_poll_failed(GatewayError("BMS returned no pack"))
            return
        reading = readings[0]
        problem = implausibility(reading)
        if problem is not None:
            self.on_poll_failed(GatewayError(f"implausible reading from {reading.pack_id}: {problem}"))
            return
        with self._lock:
            recovered = self._last_error is not None
            self._reading = reading
            self._last_error = None
        if recovered:
            log.info("BMS: good reading again")
        self.wake.set()

    def on_poll_failed(self, error: GatewayError) -> None:
        message = str(error)
        with self._lock:
            changed = message != self._last_error
            self._last_error = message
        if changed:
            log.warning("BMS: %s", message)

    # --- the loop -----------------------------------------------------------------------------------------

    def tick(self) -> float:
        """Act on the current state: send what is due. Returns the monotonic time of the next due action."""
        now = self._clock.monotonic()
        with self._lock:
            reading, last_error = self._reading, self._last_error
        state, age = self._decide(reading, now)
        if state is not self._state:
            self._log_transition(state, age, last_error)
            if state is FailsafeState.NORMAL and self._state in (FailsafeState.STALE, FailsafeState.SILENT):
                self._engine.resume()
            self._state = state
            if state in (FailsafeState.STALE, FailsafeState.NORMAL):
                self._next_due.clear()  # a change of state goes out at once
        if state in (FailsafeState.WAITING, FailsafeState.SILENT, FailsafeState.STOPPED) or reading is None:
            return now + IDLE_TICK_S
        limits = self._limits_now(state, reading, now, last_error)
        if self._falls(limits):
            self._next_due.clear()  # a falling limit goes out at once, not at the next period
        values = published_values(reading, limits, comm_alarm=state is FailsafeState.STALE)
        next_due = self._send_due(values, now)
        self._last_sent_limits = limits
        return min(next_due, now + IDLE_TICK_S)

    def shutdown(self) -> None:
        """Send one last set with zero currents and enables cleared, then stop publishing."""
        now = self._clock.monotonic()
        with self._lock:
            reading = self._reading
        # Only while the inverter is hearing us: never break a silence, never speak first.
        sending = reading is not None and self._state in (FailsafeState.NORMAL, FailsafeState.STALE)
        if sending and reading is not None:
            limits = failsafe_limits(self._limits, now, "gateway stopping")
            values = published_values(reading, limits, comm_alarm=True)
            for frame in self._profile.frames:
                self._send(frame.can_id, frame.encode(values))
        if self._state is not FailsafeState.STOPPED:
            log.info("stopped: last frames sent with zero current limits" if sending else "stopped")
        self._state = FailsafeState.STOPPED

    def snapshot(self) -> Snapshot:
        now = self._clock.monotonic()
        with self._lock:
            reading, last_error = self._reading, self._last_error
        return Snapshot(
            at_s=now,
            state=self._state,
            reading=reading,
            limits=self._last_sent_limits,
            reading_age_s=None if reading is None else now - reading.measured_at_s,
            last_error=last_error,
            heartbeat_age_s=self._heartbeat_age_s(),
            frames_sent=self.frames_sent,
            send_failures=self.send_failures,
            sent=dict(self._sent),
        )

    @property
    def state(self) -> FailsafeState:
        return self._state

    # --- internals ----------------------------------------------------------------------------------------

    def _decide(self, reading: PackReading | None, now: float) -> tuple[FailsafeState, float | None]:
        if self._state is FailsafeState.STOPPED:
            return FailsafeState.STOPPED, None
        if reading is None:
            return FailsafeState.WAITING, None
        age = now - reading.measured_at_s
        if age <= self._settings.bms_timeout_s:
            return FailsafeState.NORMAL, age
        if age <= self._settings.silence_after_s:
            return FailsafeState.STALE, age
        return FailsafeState.SILENT, age

    def _limits_now(self, state: FailsafeState, reading: PackReading, now: float, error: str | None) -> Limits:
        if self._limits_for is not reading:
            result = self._engine.update(reading, now)
            self._limits = result.limits
            self._limits_for = reading
            for event in result.events:
                log.info("%s", event)
            warnings = result.thresholds.warnings if result.thresholds else ()
            for warning in warnings:
                if warning not in self._warned:
                    log.warning("settings: %s", warning)
            self._warned = warnings
        assert self._limits is not None
        if state is FailsafeState.NORMAL:
            return self._limits
        age = now - reading.measured_at_s
        return failsafe_limits(self._limits, now, f"BMS data {age:.0f} s old ({error or 'no new reading'})")

    def _falls(self, limits: Limits) -> bool:
        last = self._last_sent_limits
        if last is None:
            return False
        return (
            limits.charge_current_limit_a < last.charge_current_limit_a
            or limits.discharge_current_limit_a < last.discharge_current_limit_a
            or limits.charge_voltage_limit_v < last.charge_voltage_limit_v
            or (last.charge_enable and not limits.charge_enable)
            or (last.discharge_enable and not limits.discharge_enable)
        )

    def _send_due(self, values: dict[str, Value], now: float) -> float:
        next_due = now + IDLE_TICK_S
        for frame in self._profile.frames:
            due = self._next_due.get(frame.can_id, now)
            if due <= now:
                self._send(frame.can_id, frame.encode(values))
                # Drift-free: keep the schedule, unless we fell more than a period behind.
                due += frame.period_s
                if due <= now:
                    due = now + frame.period_s
                self._next_due[frame.can_id] = due
            next_due = min(next_due, due)
        return next_due

    def _send(self, can_id: int, data: bytes) -> None:
        if self._sink.send(can_id, data):
            self.frames_sent += 1
            self._sent[can_id] = data
        else:
            self.send_failures += 1

    def _log_transition(self, state: FailsafeState, age: float | None, error: str | None) -> None:
        settings = self._settings
        if state is FailsafeState.NORMAL:
            log.info("fail-safe: normal service (fresh BMS data)")
        elif state is FailsafeState.STALE:
            log.warning(
                "fail-safe: BMS data older than %g s (%s): charge and discharge limits 0 A, enables cleared",
                settings.bms_timeout_s,
                error or "no new reading",
            )
        elif state is FailsafeState.SILENT:
            log.warning(
                "fail-safe: BMS data older than %g s: transmitting nothing until fresh data returns",
                settings.silence_after_s,
            )
        elif state is FailsafeState.WAITING:
            log.info("waiting for the first good BMS reading; nothing is sent until then")


class Poller:
    """Polls the BMS driver on its own thread, so a slow BMS never delays the frames."""

    def __init__(self, driver: BmsDriver, loop: ControlLoop, clock: Clock, poll_interval_s: float) -> None:
        self._driver = driver
        self._loop = loop
        self._clock = clock
        self._interval_s = poll_interval_s
        self.polls = 0

    def poll_once(self) -> None:
        self.polls += 1
        try:
            readings = self._driver.read()
        except GatewayError as exc:
            self._loop.on_poll_failed(exc)
            return
        self._loop.on_readings(readings)

    def run(self, stop: threading.Event) -> None:
        next_poll = self._clock.monotonic()
        while not stop.is_set():
            self.poll_once()
            next_poll += self._interval_s
            now = self._clock.monotonic()
            if next_poll < now:
                next_poll = now  # a poll took longer than the interval: poll again at once
            stop.wait(next_poll - now)


def run_loop(loop: ControlLoop, poller: Poller, clock: Clock, stop: threading.Event) -> None:
    """Run poller and control loop until ``stop`` is set; then send the final zero set."""
    poll_thread = threading.Thread(target=poller.run, args=(stop,), name="bms-poller", daemon=True)
    poll_thread.start()
    try:
        while not stop.is_set():
            next_due = loop.tick()
            loop.wake.wait(max(0.0, min(next_due - clock.monotonic(), IDLE_TICK_S)))
            loop.wake.clear()
    finally:
        loop.shutdown()
        stop.set()
        poll_thread.join(timeout=5)
