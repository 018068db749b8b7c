"""The control loop: poll the BMS, derive limits, publish frames, and fail safe.

Two threads, one clock:

* the **poller** (:mod:`gateway.poller`) calls the BMS driver every ``poll_interval_s`` (every
  ``fast_poll_interval_s`` near a threshold: :mod:`gateway.poll_rate`, decided here each tick) and hands each result
  to the loop; a slow or silent BMS only ever delays the poller;
* the **control loop** (:meth:`ControlLoop.tick`) decides the fail-safe state from the age of the newest good
  reading and sends every frame that is due, itself, one frame at a time (never a kernel broadcast task: if
  this loop hangs, the inverter must stop hearing old limits). Between ticks it sleeps until the next thing
  due: a frame's schedule, a deadline it computed (a reading or the heartbeat timing out, a retry), or a wake
  (a reading, a request or heartbeat frame, stop); ``IDLE_TICK_S`` only caps that sleep.

Fail-safe states (:class:`FailsafeState`): ``waiting`` until the first good reading (nothing is sent);
``normal``; ``stale`` once the newest good reading is older than ``bms_timeout_s`` (both currents 0, both
enables cleared, the communication alarm raised; a profile with ``failsafe: {stale: silence}`` goes silent
instead); ``silent`` once it is older than ``silence_after_s`` (nothing is sent, for inverters that ignore 0 A).
A fresh good reading returns to ``normal`` by itself.

Several packs (:mod:`gateway.packs`): each pack has its own limits engine; a pack is online while its newest
good reading is at most ``bms_timeout_s`` old, and the inverter hears the aggregate of the packs online
(:mod:`gateway.battery`) with the system limits (:mod:`gateway.limits.system`) and the number online as
module count. A pack that drops out while others answer is logged once, and once when it is back; the
fail-safe states above follow the newest reading of any pack, so only when every pack is offline does the
battery go stale. A battery of one pack behaves exactly as that pack.

Sending (:meth:`ControlLoop.tick`):

* **broadcast** profiles send each frame every ``period_s`` on a drift-free schedule; a change of state or a
  falling limit sends at once; never is one id sent twice within its ``min_gap_s`` (a frame held back by the
  gap goes out the moment the gap ends).
* **request** profiles send nothing by themselves: each request frame (:meth:`ControlLoop.on_frame`, called by
  the CAN link's reader) is answered with one whole set; requests that arrive before a frame of the answer went
  out share that frame. While nothing may be sent (waiting, silent) requests are dropped, not answered later.

Inverter supervision (:class:`InverterState`, profiles with a heartbeat): ``waiting`` until the first
heartbeat, ``alive`` while the newest is at most ``timeout_s`` old, ``lost`` once it is older (or when none came
within ``timeout_s`` of our first frame). Each change logs one line. With ``on_lost: stop`` nothing is sent
while lost except one whole set every ``retry_after_s`` (the first at once when the output resumes after a
silence), so that an inverter that waits for the battery to speak first is never waited for forever; the first
heartbeat after that resumes normal sending at once.
"""

from __future__ import annotations

import enum
import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.battery import BatteryAggregate
from gateway.clock import Clock
from gateway.energy import EnergyMeter, EnergyTotals
from gateway.errors import GatewayError, error_line
from gateway.limits import LimitsSettings, failsafe_limits
from gateway.model import Limits, PackReading
from gateway.packs import PackSet, battery_at
from gateway.plausibility import implausibility
from gateway.poll_rate import PackThresholds, PollRate, decide_poll_rate, initial_rate
from gateway.poller import PackReadingSink, Poller, ReadingSink
from gateway.profiles import OnLost, Profile, SendMode, StaleAction
from gateway.profiles.codec import CanFrameCodec
from gateway.state_store import StateStore
from gateway.values import Value, published_values

log = logging.getLogger(__name__)

__all__ = ["ControlLoop", "FailsafeState", "LoopSettings", "PackReadingSink", "Poller", "ReadingSink", "run_loop"]

ENGINE_STATE = "limits-memory"
"""The state store's kind for the limits engines' memory."""
STATE_SAVE_INTERVAL_S = 60.0
"""The engines' memory is saved at most this often (and on stop), s: an SD card is not written every second."""
STATE_MAX_AGE_S = 3600.0
"""A saved memory older than this is not used at start, s: the pack has moved on since."""

IDLE_TICK_S = 1.0
"""Longest the loop sleeps, s. A safety net only: every change the loop must act on is either a wake
(a reading, a request, a heartbeat, stop) or a deadline it computes (:meth:`ControlLoop.tick`'s return)."""
DEADLINE_SLACK_S = 0.001
"""How far past a deadline the loop wakes, s: the limits compare ``age <= timeout``, so at the deadline itself
nothing has changed yet."""


class FailsafeState(enum.StrEnum):
    WAITING = "waiting"
    NORMAL = "normal"
    STALE = "stale"
    SILENT = "silent"
    STOPPED = "stopped"


_SENDING_STATES = (FailsafeState.NORMAL, FailsafeState.STALE)


class InverterState(enum.StrEnum):
    """What the gateway knows of the inverter, from the age of its heartbeat."""

    UNSUPERVISED = "unsupervised"
    """The profile expects no heartbeat (or no receiver is wired)."""
    WAITING = "waiting"
    """No heartbeat yet, and our first frame went out less than ``timeout_s`` ago (or none has)."""
    ALIVE = "alive"
    LOST = "lost"


@dataclass(frozen=True, slots=True)
class InverterValue:
    """One value decoded from an inverter frame (SMA 0x305: the inverter's own measurements)."""

    value: Value
    age_s: float
    """Seconds since the frame carrying it arrived."""


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
    fast_poll_interval_s: float | None = None
    """Time between BMS polls near a threshold, s (:mod:`gateway.poll_rate`); None: always ``poll_interval_s``."""


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
    inverter_state: InverterState = InverterState.UNSUPERVISED
    """Heartbeat supervision: waiting, alive or lost (unsupervised without a heartbeat)."""
    inverter_values: dict[str, InverterValue] = field(default_factory=dict)
    """The newest value of each named field of the inverter frames (names: ``INVERTER_VALUE_NAMES``)."""
    requests_received: int = 0
    """Request frames heard so far (request-mode profiles)."""
    next_retry_in_s: float | None = None
    """With ``on_lost: stop`` while the inverter is lost: seconds until the next retry set; else None."""
    battery: BatteryAggregate | None = None
    """The packs behind :attr:`reading` (which are online, where the extremes are); None before any reading."""
    pack_limits: Mapping[str, Limits] = field(default_factory=dict)
    """Each pack's own limits, by pack id (:attr:`limits` is the battery's)."""
    pack_errors: Mapping[str, str] = field(default_factory=dict)
    """Pack id → why it was missing from the last poll that others answered."""
    latched_packs: frozenset[str] = frozenset()
    """Silent packs whose last blocks and limits stay latched (an alarm until they answer or are forgotten)."""
    current_sharing: str = "equal"
    """How the battery's current is shared among its packs now: ``equal`` or ``capacity``."""
    send_error: str | None = None
    """Why the latest failed send (or bus open) failed, as the link words it; None if none ever failed."""
    zero_set_sent: bool = False
    """At stop: the last set, with zero current limits, went out (at least one frame of it)."""
    energy: EnergyTotals | None = None
    """The energy counters as last kept in the state store (:mod:`gateway.energy`); None: no meter."""
    poll_rate: PollRate | None = None
    """The BMS poll rate in force and why (adaptive polling, :mod:`gateway.poll_rate`); None: a fixed rate."""


class ControlLoop:
    """Decides the fail-safe state and publishes the profile's frames. Thread-safe; see module docs."""

    def __init__(
        self,
        profile: Profile,
        sink: FrameSink,
        clock: Clock,
        settings: LoopSettings,
        *,
        heartbeat_age_s: Callable[[], float | None] | None = None,
        inverter_values: Callable[[], Mapping[str, tuple[Value, float]]] = dict,
        store: StateStore | None = None,
        send_error: Callable[[], str | None] = lambda: None,
    ) -> None:
        """:param heartbeat_age_s: seconds since the inverter's newest heartbeat (None: never heard); without
            it the inverter is not supervised.
        :param inverter_values: the newest decoded inverter values with their monotonic arrival times, s.
        :param send_error: the sink's latest failure and its cause (the CAN link's), for status views.
        :param store: where the limits engines' memory survives a restart (saved at most every
            :data:`STATE_SAVE_INTERVAL_S` and on stop, used at start when younger than :data:`STATE_MAX_AGE_S`).
        """
        self._profile = profile
        self._sink = sink
        self._clock = clock
        self._settings = settings
        self._heartbeat_age_s = heartbeat_age_s
        self._inverter_values = inverter_values
        self._send_error = send_error
        self._zero_set_sent = False
        self._lock = threading.Lock()
        self.wake = threading.Event()
        """Set when something arrived that the loop should act on now."""
        # Pack state from the poller (guarded by _lock): newest good reading per pack, every pack known in
        # polling order, the known packs missing from the last poll that others answered, and why.
        self._latest: dict[str, PackReading] = {}
        self._known: tuple[str, ...] = ()
        self._missed: frozenset[str] = frozenset()
        self._pack_errors: dict[str, str] = {}
        self._forget: dict[str, str] = {}
        """Pack id → who asked (guarded by _lock): latched packs the user said are gone, for the next tick."""
        self._packs = PackSet(settings.limits, max_age_s=settings.bms_timeout_s)
        self._store = store
        self._saved_at_s: float | None = None
        if store is not None:
            self._packs.restore(store.load(ENGINE_STATE), clock.monotonic(), clock.wall(), STATE_MAX_AGE_S)
        self.energy = EnergyMeter(clock, settings.bms_timeout_s, store, save_interval_s=STATE_SAVE_INTERVAL_S)
        """kWh and Ah in and out, integrated from the good readings (on the poller thread, which writes its record)."""
        self._limits: Limits | None = None
        self._last_sent_limits: Limits | None = None
        self._last_error: str | None = None
        self._state = FailsafeState.WAITING
        self._next_due: dict[int, float] = {}
        """Broadcast schedule: monotonic time each id is next due, s."""
        self._last_sent_at: dict[int, float] = {}
        """Monotonic time each id last went to the sink, s: enforces min_gap_s."""
        self._wanted = 0
        """One-shot sets asked for so far (requests, or retries while the inverter is lost)."""
        self._done: dict[int, int] = {}
        """Per id: the value of ``_wanted`` when the frame last went out as part of a one-shot set."""
        self._requests = 0
        """Request frames heard (guarded by ``_lock``: the link's reader thread counts them)."""
        self._first_sent_s: float | None = None
        self._inverter_state = (
            InverterState.UNSUPERVISED
            if heartbeat_age_s is None or profile.heartbeat is None
            else InverterState.WAITING
        )
        self._lost_since_s: float | None = None
        self._retry_due_s: float | None = None
        self._sent: dict[int, bytes] = {}
        self._poll_rate = None if settings.fast_poll_interval_s is None else initial_rate(settings.fast_poll_interval_s)
        self.poll_rate_wake = threading.Event()
        """Set when the poll interval became shorter (the poller waits on it: :mod:`gateway.poller`)."""
        self.frames_sent = 0
        self.send_failures = 0

    # --- inputs (poller thread) -----------------------------------------------------------------------------

    def expect_packs(self, pack_ids: Sequence[str]) -> None:
        """Every pack the driver polls, in polling order: one that never answers is offline from the start."""
        with self._lock:
            self._known = (*self._known, *(p for p in pack_ids if p not in self._known))

    def on_readings(
        self, readings: tuple[PackReading, ...], pack_errors: Mapping[str, GatewayError] | None = None
    ) -> None:
        """A poll succeeded, for the packs in ``readings``; ``pack_errors`` says why the others are missing.

        An implausible reading counts as that pack failing; when no reading is plausible, as a failed poll.
        """
        if not readings:
            self.on_poll_failed(GatewayError("BMS returned no pack"))
            return
        good: list[PackReading] = []
        implausible: dict[str, str] = {}
        for reading in readings:
            problem = implausibility(reading)
            if problem is None:
                good.append(reading)
            else:
                implausible[reading.pack_id] = f"implausible reading from {reading.pack_id}: {problem}"
        if not good:
            self.on_poll_failed(GatewayError(next(iter(implausible.values()))))
            return
        errors = {pack_id: str(error) for pack_id, error in (pack_errors or {}).items()} | implausible
        self.energy.on_readings(good)
        with self._lock:
            recovered = self._last_error is not None
            self._known = (*self._known, *(r.pack_id for r in readings if r.pack_id not in self._known))
            self._latest.update((r.pack_id, r) for r in good)
            answered = {r.pack_id for r in good}
            self._missed = frozenset(p for p in self._known if p not in answered)
            new_problems = [e for p, e in implausible.items() if e != self._pack_errors.get(p)]
            self._pack_errors = errors
            self._last_error = None
        for message in new_problems:  # the driver reports missing packs; only we see implausible ones
            log.warning("BMS: %s", message)
        if recovered:
            log.info("BMS: good reading again")
        self.wake.set()

    def on_poll_failed(self, error: GatewayError) -> None:
        message = str(error)
        with self._lock:
            changed = message != self._last_error
            self._last_error = message
        if changed:  # once per cause, not per retry, with its fix (a serial error's hint)
            log.warning("BMS: %s", error_line(error))

    # --- inputs (CAN reader thread) ---------------------------------------------------------------------------

    def on_frame(self, can_id: int) -> None:
        """A listened-to frame arrived: count a request (request mode) and wake the loop to act on it now."""
        if can_id == self._profile.request_id:
            with self._lock:
                self._requests += 1
            self.wake.set()
        elif self._profile.heartbeat is not None and can_id == self._profile.heartbeat.can_id:
            self.wake.set()  # a lost inverter that answers again gets its frames at once

    # --- inputs (a user's command, any thread) --------------------------------------------------------------

    def forget_pack(self, pack_id: str, *, source: str) -> str:
        """The user says a silent pack is gone: its latched blocks and limits are dropped on the next tick.

        :param source: who asked (``cli``, ``mqtt``), for the log line.
        :returns: one line saying what will happen.
        :raises GatewayError: the pack is not latched (unknown, or answering): nothing is done.
        """
        latched = self._packs.latched
        if pack_id not in latched:
            with self._lock:
                known = self._known
            if pack_id not in known:
                raise GatewayError(f"no pack {pack_id!r}: the packs are {', '.join(known) or 'not known yet'}")
            raise GatewayError(
                f"pack {pack_id} is not latched (it answers, or nothing of it was ever latched): nothing to forget"
            )
        with self._lock:
            self._forget[pack_id] = source
        self.wake.set()
        return f"pack {pack_id}: its latched blocks and limits are dropped; it starts afresh if it answers again"

    # --- the loop -----------------------------------------------------------------------------------------

    def tick(self) -> float:
        """Act on the current state: send what is due. Returns the monotonic time of the next due action."""
        now = self._clock.monotonic()
        with self._lock:
            last_error, requests, missed = self._last_error, self._requests, self._missed
            pack_errors = dict(self._pack_errors)
        battery, newest_s = self._battery(now)
        state, age = self._decide(newest_s, now)
        if state is not self._state:
            self._log_transition(state, age, last_error)
            if state is FailsafeState.NORMAL and self._state in (FailsafeState.STALE, FailsafeState.SILENT):
                self._packs.resume()
            self._state = state
            if state in _SENDING_STATES:
                self._next_due.clear()  # a change of state goes out at once
        self._supervise(now)
        deadline = self._next_change(state, now)
        if self._profile.mode is SendMode.REQUEST:
            self._wanted = requests
        if state not in _SENDING_STATES or battery is None:
            self._decide_poll_rate(state, battery, None, now)
            self._drop_one_shots()  # nothing may go out: a request now is not answered later
            return deadline
        if state is FailsafeState.NORMAL:
            self._packs.announce(battery, pack_errors)
        self._forget_asked(battery)
        limits = self._limits_now(state, battery, missed, now, age, last_error)
        self._decide_poll_rate(state, battery, limits, now)
        falls = self._falls(limits)
        values = published_values(
            battery.reading,
            limits,
            comm_alarm=state is FailsafeState.STALE,
            module_count=battery.module_count,
            where=battery.extremes,
            pack_ids=battery.online,
        )
        self._last_sent_limits = limits
        self._save_state(now)
        if self._profile.mode is SendMode.REQUEST:
            return min(deadline, self._send_one_shots(values, now))
        if self._stopped_for_inverter():
            return min(deadline, self._retry(now), self._send_one_shots(values, now))
        self._drop_one_shots()
        if falls:
            self._next_due.clear()  # a falling limit goes out at once (min_gap_s permitting), not next period
        return min(deadline, self._send_due(values, now))

    def shutdown(self) -> None:
        """Send one last set with zero currents and enables cleared, then stop publishing."""
        now = self._clock.monotonic()
        battery, _ = self._battery(now)
        reading = None if battery is None else battery.reading
        # Only while the inverter is hearing us: never break a silence, never speak first, never answer
        # what was not asked (request mode).
        sending = (
            reading is not None
            and self._state in _SENDING_STATES
            and self._profile.mode is SendMode.BROADCAST
            and not self._stopped_for_inverter()
        )
        sent_before = self.frames_sent
        if sending and reading is not None:
            assert battery is not None
            limits = failsafe_limits(self._limits, now, "gateway stopping")
            values = published_values(
                reading,
                limits,
                comm_alarm=True,
                module_count=battery.module_count,
                where=battery.extremes,
                pack_ids=battery.online,
            )
            for frame in self._profile.frames:
                wait_s = self._last_sent_at.get(frame.can_id, -math.inf) + frame.min_gap_s - self._clock.monotonic()
                if wait_s > 0:
                    self._clock.sleep(wait_s)  # at most min_gap_s: even the last set keeps the minimum gap
                self._send(frame, values, self._clock.monotonic())
        self._save_state(now, force=True)
        self.energy.close()
        self._zero_set_sent = self.frames_sent > sent_before  # tried is not sent: the bus may be down
        if self._state is not FailsafeState.STOPPED:
            if self._zero_set_sent:
                log.info("stopped: last frames sent with zero current limits")
            elif sending:
                log.warning("stopped: the last frames with zero current limits did not go out (%s)", self._send_error())
            else:
                log.info("stopped")
        self._state = FailsafeState.STOPPED

    def _forget_asked(self, battery: BatteryAggregate) -> None:
        with self._lock:
            asked, self._forget = self._forget, {}
        for pack_id, source in asked.items():
            if self._packs.forget(pack_id, battery):
                log.warning(
                    "BMS: pack %s forgotten (asked by %s): its latched blocks and limits are dropped; the battery "
                    "goes on with %d pack(s)",
                    pack_id,
                    source,
                    battery.module_count,
                )

    def _save_state(self, now: float, *, force: bool = False) -> None:
        """The engines' memory to the store, at most every :data:`STATE_SAVE_INTERVAL_S` (and on stop)."""
        if self._store is None:
            return
        if not force and self._saved_at_s is not None and now - self._saved_at_s < STATE_SAVE_INTERVAL_S:
            return
        self._saved_at_s = now
        self._store.save(ENGINE_STATE, self._packs.memory_json(now), self._clock.wall())

    def snapshot(self) -> Snapshot:
        now = self._clock.monotonic()
        with self._lock:
            last_error, requests, pack_errors = self._last_error, self._requests, dict(self._pack_errors)
        battery, _ = self._battery(now)
        reading = None if battery is None else battery.reading
        return Snapshot(
            at_s=now,
            state=self._state,
            reading=reading,
            limits=self._last_sent_limits,
            reading_age_s=None if reading is None else now - reading.measured_at_s,
            last_error=last_error,
            heartbeat_age_s=None if self._heartbeat_age_s is None else self._heartbeat_age_s(),
            frames_sent=self.frames_sent,
            send_failures=self.send_failures,
            sent=dict(self._sent),
            inverter_state=self._inverter_state,
            inverter_values={
                name: InverterValue(value, now - at_s) for name, (value, at_s) in self._inverter_values().items()
            },
            requests_received=requests,
            next_retry_in_s=(
                None
                if self._retry_due_s is None or not self._stopped_for_inverter()
                else max(0.0, self._retry_due_s - now)
            ),
            battery=battery,
            pack_limits=self._packs.pack_limits,
            pack_errors=pack_errors,
            latched_packs=self._packs.latched,
            current_sharing=self._packs.sharing_now.value,
            send_error=self._send_error(),
            zero_set_sent=self._zero_set_sent,
            energy=self.energy.published,
            poll_rate=self._poll_rate,
        )

    @property
    def state(self) -> FailsafeState:
        return self._state

    @property
    def latched_packs(self) -> frozenset[str]:
        """The silent packs whose last blocks and limits stay latched (safe from any thread)."""
        return self._packs.latched

    @property
    def inverter_state(self) -> InverterState:
        return self._inverter_state

    def poll_interval_s(self) -> float:
        """The BMS poll interval in force now, s (the poller asks before each wait; safe from any thread)."""
        rate = self._poll_rate
        return self._settings.poll_interval_s if rate is None else rate.interval_s

    # --- internals ----------------------------------------------------------------------------------------

    def _decide_poll_rate(
        self, state: FailsafeState, battery: BatteryAggregate | None, limits: Limits | None, now: float
    ) -> None:
        """Adaptive polling: fast near a threshold (:mod:`gateway.poll_rate`); wake the poller when it got faster."""
        previous, fast_s = self._poll_rate, self._settings.fast_poll_interval_s
        if previous is None or fast_s is None:
            return
        thresholds = self._packs.thresholds
        margin_c = self._settings.limits.temperature_margin_c
        packs = (
            [] if battery is None else [PackThresholds(r, thresholds.get(r.pack_id), margin_c) for r in battery.packs]
        )
        rate = decide_poll_rate(
            packs,
            limits,
            state is FailsafeState.NORMAL,
            state.value,
            previous,
            now,
            slow_interval_s=self._settings.poll_interval_s,
            fast_interval_s=fast_s,
        )
        self._poll_rate = rate
        if rate.fast != previous.fast:  # one line per switch, not per reading
            log.info("BMS polling every %g s (%s)", rate.interval_s, rate.why)
        if rate.interval_s < previous.interval_s:
            self.poll_rate_wake.set()

    def _battery(self, now: float) -> tuple[BatteryAggregate | None, float | None]:
        """The battery of the packs online now (see :func:`battery_at`) and the newest reading's time, s."""
        with self._lock:
            latest, known = dict(self._latest), self._known
        newest_s = max((r.measured_at_s for r in latest.values()), default=None)
        return battery_at(latest, known, now, self._settings.bms_timeout_s), newest_s

    def _decide(self, newest_s: float | None, now: float) -> tuple[FailsafeState, float | None]:
        """The fail-safe state from the age of the newest good reading of any pack (None: none yet)."""
        if self._state is FailsafeState.STOPPED:
            return FailsafeState.STOPPED, None
        if newest_s is None:
            return FailsafeState.WAITING, None
        age = now - newest_s
        if age <= self._settings.bms_timeout_s:
            return FailsafeState.NORMAL, age
        if age <= self._settings.silence_after_s and self._profile.stale is StaleAction.ZEROS:
            return FailsafeState.STALE, age
        return FailsafeState.SILENT, age

    def _next_change(self, state: FailsafeState, now: float) -> float:
        """When the state may next change with nothing arriving, s (monotonic), at most ``now + IDLE_TICK_S``:
        a pack going offline, the fail-safe stepping to stale or silent, the inverter's heartbeat timing out."""
        settings = self._settings
        with self._lock:
            measured = [r.measured_at_s for r in self._latest.values()]
        ages_s: list[float] = []  # the ages at which something changes, of readings...
        if state is FailsafeState.NORMAL:
            ages_s = [settings.bms_timeout_s - (now - at_s) for at_s in measured]  # a pack drops out
        elif state is FailsafeState.STALE and measured:
            ages_s = [settings.silence_after_s - (now - max(measured))]
        heartbeat = self._profile.heartbeat
        if heartbeat is not None and self._heartbeat_age_s is not None:  # ... and of the heartbeat
            if self._inverter_state is InverterState.ALIVE:
                age = self._heartbeat_age_s()
                if age is not None:
                    ages_s.append(heartbeat.timeout_s - age)
            elif self._inverter_state is InverterState.WAITING and self._first_sent_s is not None:
                ages_s.append(heartbeat.timeout_s - (now - self._first_sent_s))
        due = [now + left + DEADLINE_SLACK_S for left in ages_s if left >= 0]
        return min((*due, now + IDLE_TICK_S))

    def _limits_now(
        self,
        state: FailsafeState,
        battery: BatteryAggregate,
        missed: frozenset[str],
        now: float,
        age: float | None,
        error: str | None,
    ) -> Limits:
        if state is FailsafeState.NORMAL or self._limits is None:
            # Engines run on new readings only (PackSet keeps each pack's result until its next reading).
            self._limits = self._packs.limits(battery, missed, now)
        if state is FailsafeState.NORMAL:
            return self._limits
        return failsafe_limits(self._limits, now, f"BMS data {age or 0:.0f} s old ({error or 'no new reading'})")

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

    def _ready_at(self, frame: CanFrameCodec) -> float:
        """Earliest monotonic time this frame may go out again: its last send plus min_gap_s."""
        return self._last_sent_at.get(frame.can_id, -math.inf) + frame.min_gap_s

    def _send_due(self, values: dict[str, Value], now: float) -> float:
        """Broadcast: send every frame that is due and out of its min_gap_s; the next time one will be, s.

        A frame held back by its min_gap_s is due at the gap's end, so it goes out then, not a tick later."""
        next_due = now + IDLE_TICK_S
        for frame in self._profile.frames:
            due = self._next_due.get(frame.can_id, now)
            ready = max(due, self._ready_at(frame))
            if ready <= now:
                self._send(frame, values, now)
                # Drift-free: keep the schedule, unless we fell more than a period behind (or went early).
                due += frame.period_s
                if due <= now:
                    due = now + frame.period_s
                self._next_due[frame.can_id] = due
                ready = max(due, self._ready_at(frame))
            next_due = min(next_due, ready)
        return next_due

    def _send_one_shots(self, values: dict[str, Value], now: float) -> float:
        """Send every frame owed to a request or retry (min_gap_s permitting); the next time one may go, s."""
        next_due = now + IDLE_TICK_S
        for frame in self._profile.frames:
            if self._done.get(frame.can_id, 0) >= self._wanted:
                continue
            ready = self._ready_at(frame)
            if ready <= now:
                self._send(frame, values, now)
                self._done[frame.can_id] = self._wanted
            else:
                next_due = min(next_due, ready)
        return next_due

    def _drop_one_shots(self) -> None:
        self._done = {frame.can_id: self._wanted for frame in self._profile.frames}

    def _send(self, frame: CanFrameCodec, values: dict[str, Value], now: float) -> None:
        data = frame.encode(values)
        self._last_sent_at[frame.can_id] = now  # an attempt counts: the gap protects the inverter either way
        if self._sink.send(frame.can_id, data):
            self.frames_sent += 1
            self._sent[frame.can_id] = data
            if self._first_sent_s is None:
                self._first_sent_s = now
        else:
            self.send_failures += 1

    # --- inverter supervision -------------------------------------------------------------------------------

    def _stopped_for_inverter(self) -> bool:
        heartbeat = self._profile.heartbeat
        return heartbeat is not None and heartbeat.on_lost is OnLost.STOP and self._inverter_state is InverterState.LOST

    def _retry(self, now: float) -> float:
        """While stopped for a lost inverter: ask for one whole set when a retry is due; the next retry time, s."""
        heartbeat = self._profile.heartbeat
        assert heartbeat is not None and heartbeat.retry_after_s is not None and self._retry_due_s is not None
        if now >= self._retry_due_s:
            self._wanted += 1
            log.debug("inverter: retry: one whole set while heartbeat %#05x is lost", heartbeat.can_id)
            self._retry_due_s += heartbeat.retry_after_s
            if self._retry_due_s <= now:
                self._retry_due_s = now + heartbeat.retry_after_s
        return self._retry_due_s

    def _supervise(self, now: float) -> None:
        """Update :class:`InverterState` from the heartbeat age; log each change in one line."""
        heartbeat = self._profile.heartbeat
        if heartbeat is None or self._heartbeat_age_s is None:
            return
        age = self._heartbeat_age_s()
        if age is not None:
            state = InverterState.ALIVE if age <= heartbeat.timeout_s else InverterState.LOST
        elif self._first_sent_s is not None and now - self._first_sent_s > heartbeat.timeout_s:
            state = InverterState.LOST
        else:
            state = InverterState.WAITING
        previous = self._inverter_state
        if state is previous:
            return
        self._inverter_state = state
        stop = heartbeat.on_lost is OnLost.STOP
        hb = f"heartbeat {heartbeat.can_id:#05x}"
        if state is InverterState.LOST:
            self._lost_since_s = now
            if stop:
                assert heartbeat.retry_after_s is not None
                self._retry_due_s = now + heartbeat.retry_after_s
                action = f"sending stops, one whole set every {heartbeat.retry_after_s:g} s to retry"
            else:
                action = "frames keep going out"
            why = (
                f"no {hb} within {heartbeat.timeout_s:g} s of the first frame"
                if age is None
                else f"no {hb} for {heartbeat.timeout_s:g} s"
            )
            log.warning("inverter: %s: inverter lost; %s", why, action)
        elif state is InverterState.ALIVE:
            if previous is InverterState.LOST and self._lost_since_s is not None:
                again = "; sending again" if stop else ""
                log.info("inverter: %s back after %.0f s: inverter alive%s", hb, now - self._lost_since_s, again)
                if stop:
                    self._next_due.clear()  # resume at once (min_gap_s permitting)
            else:
                log.info("inverter: %s received: inverter alive", hb)
            self._retry_due_s = None

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
            silent_after_s = (
                settings.bms_timeout_s if self._profile.stale is StaleAction.SILENCE else settings.silence_after_s
            )
            log.warning(
                "fail-safe: BMS data older than %g s: transmitting nothing until fresh data returns",
                silent_after_s,
            )
        elif state is FailsafeState.WAITING:
            log.info("waiting for the first good BMS reading; nothing is sent until then")


def _nothing() -> None:
    pass


def _nothing_after(loop: ControlLoop) -> None:
    pass


def _wake_on_stop(loop: ControlLoop, stop: threading.Event) -> None:
    stop.wait()
    loop.wake.set()


def run_loop(
    loop: ControlLoop,
    poller: Poller,
    clock: Clock,
    stop: threading.Event,
    *,
    before_tick: Callable[[], None] = _nothing,
    after_tick: Callable[[ControlLoop], None] = _nothing_after,
) -> None:
    """Run poller and control loop until ``stop`` is set; then send the final zero set.

    ``after_tick`` runs on the loop's own thread after every tick (the systemd watchdog ping lives there, so a
    hung loop stops the pings); it must never block. ``before_tick`` is the test suite's fault hook.
    """
    poll_thread = threading.Thread(target=poller.run, args=(stop,), name="bms-poller", daemon=True)
    poll_thread.start()
    # The loop sleeps until its next deadline; a stop must end that sleep at once (the final zero set).
    threading.Thread(target=_wake_on_stop, args=(loop, stop), name="loop-stop", daemon=True).start()
    try:
        while not stop.is_set():
            before_tick()
            next_due = loop.tick()
            after_tick(loop)
            loop.wake.wait(max(0.0, min(next_due - clock.monotonic(), IDLE_TICK_S)))
            loop.wake.clear()
    finally:
        loop.shutdown()
        stop.set()
        poll_thread.join(timeout=5)
