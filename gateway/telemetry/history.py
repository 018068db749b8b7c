"""What the local page charts and lists: 24 h of the battery's history and the last events, in bounded memory.

:class:`History` keeps nine series (pack voltage, current, SOC, CCL, DCL, CVL, lowest and highest cell, highest
temperature) twice: the last hour at the rate readings arrive (at most one per snapshot hand-over, so at most
:data:`RAW_CAPACITY` samples) and 24 h as 1-minute buckets of min, max and mean (:data:`MINUTES`). Both are rings
of preallocated ``array('f')`` (4 bytes a value): the memory never grows after start, whatever runs for how long
(:meth:`History.buffer_bytes`, about 0.5 MB, stated in docs/page.md and tested).

:class:`EventLog` keeps the last :data:`EVENTS` events, each a line a person reads: fail-safe changes, alarms
raised and cleared, a limit's limiter changing (with its reason), the enables, the charge phase, the inverter
lost and back, packs latched, and the BMS's charge, discharge and balancer switches changing (what a control
write changes, seen in the BMS's own settings). Both are fed
on the control loop's thread from each snapshot (:meth:`History.record`, :meth:`EventLog.observe`: a few array
stores and comparisons, never I/O) and read from the status server's threads under a lock.
"""

from __future__ import annotations

import math
import threading
from array import array
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from gateway.runtime import InverterState, Snapshot
from gateway.telemetry.status_doc import active_alarms

SERIES: Final = (
    "pack_v",
    "current_a",
    "soc_pct",
    "ccl_a",
    "dcl_a",
    "cvl_v",
    "min_cell_v",
    "max_cell_v",
    "temperature_c",
)
"""The series kept, in this order (``temperature_c``: the highest battery or MOS temperature)."""
HOUR_S: Final = 3600.0
MINUTE_S: Final = 60.0
MINUTES: Final = 24 * 60
"""1-minute buckets kept: 24 h."""
MIN_SAMPLE_INTERVAL_S: Final = 0.5
"""Readings are sampled at most this often (the snapshot hand-over's interval, gateway.telemetry.service)."""
RAW_CAPACITY: Final = int(HOUR_S / MIN_SAMPLE_INTERVAL_S)
"""Samples of the last hour at most: 7200."""
EVENTS: Final = 200
"""Events kept."""

_VALUE_BYTES: Final = array("f").itemsize
_TIME_BYTES: Final = array("d").itemsize


class _Ring:
    """Columns of fixed length written round-robin: one float64 time column, ``width`` float32 value columns."""

    def __init__(self, capacity: int, width: int) -> None:
        self.capacity = capacity
        self.times = array("d", bytes(_TIME_BYTES * capacity))
        self.columns = [array("f", bytes(_VALUE_BYTES * capacity)) for _ in range(width)]
        self.count = 0
        self._next = 0

    def append(self, at_s: float, values: Iterable[float]) -> None:
        index = self._next
        self.times[index] = at_s
        for column, value in zip(self.columns, values, strict=True):
            column[index] = value
        self._next = (index + 1) % self.capacity
        self.count = min(self.count + 1, self.capacity)

    def last_index(self) -> int:
        return (self._next - 1) % self.capacity

    def order(self) -> list[int]:
        """Indices oldest first."""
        start = (self._next - self.count) % self.capacity
        return [(start + i) % self.capacity for i in range(self.count)]

    def since(self, oldest_s: float) -> list[int]:
        return [i for i in self.order() if self.times[i] >= oldest_s]

    def nbytes(self) -> int:
        return self.times.itemsize * len(self.times) + sum(c.itemsize * len(c) for c in self.columns)


def sample(snapshot: Snapshot) -> tuple[float, ...] | None:
    """The nine values of :data:`SERIES` from one snapshot (NaN where unknown); None without a reading."""
    reading = snapshot.reading
    if reading is None:
        return None
    state, limits = reading.state, snapshot.limits
    temperatures = [t for t in (*state.battery_temperatures_c, state.mos_temperature_c) if t is not None]
    nan = math.nan
    return (
        state.pack_voltage_v,
        state.current_a,
        nan if state.soc_pct is None else float(state.soc_pct),
        nan if limits is None else limits.charge_current_limit_a,
        nan if limits is None else limits.discharge_current_limit_a,
        nan if limits is None else limits.charge_voltage_limit_v,
        state.min_cell_v,
        state.max_cell_v,
        max(temperatures) if temperatures else nan,
    )


class History:
    """24 h of the battery in fixed memory (see the module docs). Thread-safe.

    Times are wall-clock seconds (what a chart shows); the minute a sample falls in is taken from the same
    wall time, so a clock set by NTP starts a new bucket rather than corrupting one.
    """

    def __init__(self, raw_capacity: int = RAW_CAPACITY, minutes: int = MINUTES) -> None:
        width = len(SERIES)
        self._raw = _Ring(raw_capacity, width)
        self._minutes = _Ring(minutes, 3 * width)  # min, max, mean of each series
        self._lock = threading.Lock()
        self._last_measured_s: float | None = None
        self._bucket: int | None = None
        self._bucket_at_s = 0.0
        self._low = [math.inf] * width
        self._high = [-math.inf] * width
        self._sum = [0.0] * width
        self._n = [0] * width

    def record(self, snapshot: Snapshot, wall_s: float) -> bool:
        """Keep the snapshot's reading once (a reading already kept, or none, is skipped); True if kept."""
        reading = snapshot.reading
        if reading is None or reading.measured_at_s == self._last_measured_s:
            return False
        values = sample(snapshot)
        assert values is not None
        self._last_measured_s = reading.measured_at_s
        with self._lock:
            self._raw.append(wall_s, values)
            self._add_to_minute(wall_s, values)
        return True

    def _add_to_minute(self, wall_s: float, values: tuple[float, ...]) -> None:
        bucket = math.floor(wall_s / MINUTE_S)
        if bucket != self._bucket:
            self._close_minute()
            self._bucket, self._bucket_at_s = bucket, bucket * MINUTE_S
        for i, value in enumerate(values):
            if math.isnan(value):
                continue
            self._low[i] = min(self._low[i], value)
            self._high[i] = max(self._high[i], value)
            self._sum[i] += value
            self._n[i] += 1

    def _close_minute(self) -> None:
        if self._bucket is None:
            return
        row: list[float] = []
        for i in range(len(SERIES)):
            if self._n[i]:
                row += [self._low[i], self._high[i], self._sum[i] / self._n[i]]
            else:
                row += [math.nan] * 3
        self._minutes.append(self._bucket_at_s, row)
        width = len(SERIES)
        self._low, self._high, self._sum, self._n = [math.inf] * width, [-math.inf] * width, [0.0] * width, [0] * width

    def newest(self) -> dict[str, Any] | None:
        """The last sample kept (``t`` and each series), for the page's live chart; None before any."""
        with self._lock:
            if not self._raw.count:
                return None
            index = self._raw.last_index()
            row = {name: _rounded(column[index]) for name, column in zip(SERIES, self._raw.columns, strict=True)}
            return {"t": self._raw.times[index], **row}

    def buffer_bytes(self) -> int:
        """Bytes of the preallocated arrays: the whole history's memory, fixed at construction."""
        return self._raw.nbytes() + self._minutes.nbytes()

    @property
    def raw_count(self) -> int:
        return self._raw.count

    @property
    def minute_count(self) -> int:
        """Closed 1-minute buckets held (the running minute is not among them)."""
        return self._minutes.count

    def to_json(self, now_wall_s: float) -> dict[str, Any]:
        """``raw``: the last hour, one list per series beside ``t``; ``minutes``: 24 h, ``<series>`` → min, max
        and mean lists beside ``t`` (each bucket's start). Unknown values are NaN (``null`` in JSON)."""
        with self._lock:
            raw_rows = self._raw.since(now_wall_s - HOUR_S)
            minute_rows = self._minutes.since(now_wall_s - 24 * HOUR_S)
            raw: dict[str, Any] = {"t": [self._raw.times[i] for i in raw_rows]}
            for name, column in zip(SERIES, self._raw.columns, strict=True):
                raw[name] = [_rounded(column[i]) for i in raw_rows]
            minutes: dict[str, Any] = {"t": [self._minutes.times[i] for i in minute_rows]}
            for n, name in enumerate(SERIES):
                low, high, mean = self._minutes.columns[3 * n : 3 * n + 3]
                minutes[name] = {
                    "min": [_rounded(low[i]) for i in minute_rows],
                    "max": [_rounded(high[i]) for i in minute_rows],
                    "mean": [_rounded(mean[i]) for i in minute_rows],
                }
        return {"series": list(SERIES), "raw": raw, "minutes": minutes}


def _rounded(value: float) -> float:
    """A float32 back as the decimal it stood for (3.2049999237060547 → 3.205)."""
    return value if math.isnan(value) else float(f"{value:.6g}")


# --- events --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    seq: int
    """Numbers every event since start; the page merges the live ones by it."""
    wall_s: float
    kind: str
    """``failsafe``, ``alarm``, ``limit``, ``phase``, ``inverter``, ``pack`` or ``bms``."""
    text: str

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "wall_s": self.wall_s, "kind": self.kind, "text": self.text}


LIMIT_NAMES: Final = {
    "charge_voltage_limit_v": "CVL",
    "charge_current_limit_a": "CCL",
    "discharge_current_limit_a": "DCL",
    "discharge_voltage_limit_v": "DVL",
}


@dataclass(frozen=True, slots=True)
class _Seen:
    """What the previous snapshot showed, to compare the next one with."""

    failsafe: str
    alarms: frozenset[str]
    limiters: dict[str, str]
    enables: tuple[bool, bool, bool] | None
    phase: str | None
    inverter: InverterState
    latched: frozenset[str]
    switches: tuple[bool | None, bool | None, bool | None] | None
    """The BMS's charge, discharge and balancer switches: what a control write changes."""


def _seen(snapshot: Snapshot) -> _Seen:
    limits, reading = snapshot.limits, snapshot.reading
    return _Seen(
        failsafe=snapshot.state.value,
        alarms=frozenset(active_alarms(snapshot)),
        limiters={} if limits is None else {k: r.limiter for k, r in limits.reasons.items() if k in LIMIT_NAMES},
        enables=None if limits is None else (limits.charge_enable, limits.discharge_enable, limits.force_charge),
        phase=None if limits is None else limits.charge_phase,
        inverter=snapshot.inverter_state,
        latched=snapshot.latched_packs,
        switches=None
        if reading is None
        else (
            reading.settings.charge_mos_switch,
            reading.settings.discharge_mos_switch,
            reading.settings.balancer_enabled,
        ),
    )


class EventLog:
    """The last :data:`EVENTS` events, found by comparing each snapshot with the one before. Thread-safe."""

    def __init__(self, capacity: int = EVENTS) -> None:
        self._events: deque[Event] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._seq = 0
        self._previous: _Seen | None = None

    def add(self, wall_s: float, kind: str, text: str) -> None:
        with self._lock:
            self._seq += 1
            self._events.append(Event(self._seq, wall_s, kind, text))

    def observe(self, snapshot: Snapshot, wall_s: float) -> None:
        """Log what changed since the previous snapshot (the first one logs the state it starts in)."""
        now, before = _seen(snapshot), self._previous
        self._previous = now
        for kind, text in _changes(before, now, snapshot):
            self.add(wall_s, kind, text)

    def last(self, after_seq: int = 0) -> list[Event]:
        with self._lock:
            return [e for e in self._events if e.seq > after_seq]

    @property
    def seq(self) -> int:
        return self._seq


def _changes(before: _Seen | None, now: _Seen, snapshot: Snapshot) -> Iterable[tuple[str, str]]:
    if before is None:
        yield "failsafe", f"fail-safe {now.failsafe} (page history starts)"
        before = _Seen(now.failsafe, frozenset(), {}, None, None, InverterState.UNSUPERVISED, frozenset(), None)
    elif now.failsafe != before.failsafe:
        yield "failsafe", f"fail-safe {before.failsafe} → {now.failsafe}" + _why(snapshot)
    for alarm in sorted(now.alarms - before.alarms):
        yield "alarm", f"alarm raised: {alarm}"
    for alarm in sorted(before.alarms - now.alarms):
        yield "alarm", f"alarm cleared: {alarm}"
    limits = snapshot.limits
    if limits is not None:
        for key, name in LIMIT_NAMES.items():
            limiter = now.limiters.get(key)
            if limiter is not None and limiter != before.limiters.get(key):
                reason = limits.reasons[key].reason
                yield "limit", f"{name} {_value(limits.to_json().get(key), key)} by {limiter}: {reason}"
    if now.enables is not None:
        for index, word in enumerate(("charge", "discharge", "force charge")):
            is_on = now.enables[index]
            was_on = None if before.enables is None else before.enables[index]
            # The first limits log only what is unusual: charge or discharge off, force charge on.
            unusual = is_on if word == "force charge" else not is_on
            if was_on != is_on and (was_on is not None or unusual):
                yield "limit", f"{word} {'on' if is_on else 'off'}" + _enable_reason(snapshot, word)
    if now.phase is not None and now.phase != before.phase:
        prefix = "" if before.phase is None else f"{before.phase} → "
        yield "phase", f"charge phase {prefix}{now.phase}"
    if now.inverter is not before.inverter and now.inverter is not InverterState.WAITING:
        if now.inverter is InverterState.LOST:
            yield "inverter", "inverter lost (no heartbeat)"
        elif now.inverter is InverterState.ALIVE:
            yield "inverter", "inverter back" if before.inverter is InverterState.LOST else "inverter heard"
    for pack in sorted(now.latched - before.latched):
        yield "pack", f"pack {pack} silent: its last values are latched"
    for pack in sorted(before.latched - now.latched):
        yield "pack", f"pack {pack} answers again (or was forgotten)"
    if now.switches is not None and before.switches is not None:
        names = ("charge switch", "discharge switch", "balancer switch")
        for name, was, is_ in zip(names, before.switches, now.switches, strict=True):
            if was != is_ and is_ is not None:
                yield "bms", f"BMS {name} {'on' if is_ else 'off'} (a control write, or a change on the BMS itself)"


def _why(snapshot: Snapshot) -> str:
    return f" ({snapshot.last_error})" if snapshot.last_error else ""


def _value(value: object, key: str) -> str:
    if not isinstance(value, int | float):
        return "?"
    return f"{value:.2f} V" if key.endswith("_v") else f"{value:.1f} A"


def _enable_reason(snapshot: Snapshot, word: str) -> str:
    key = {"charge": "charge_enable", "discharge": "discharge_enable"}.get(word)
    limits = snapshot.limits
    if key is None or limits is None or key not in limits.reasons:
        return ""
    return f": {limits.reasons[key].reason}"
