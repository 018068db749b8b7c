"""Energy counters: the charged and discharged energy (kWh) and charge (Ah) of each pack, integrated from its
readings, kept in the state store, and published only once kept.

**Integration** (:func:`energy_between`, pure). Between two good readings of one pack, the trapezoid of its
power (pack voltage × current) and of its current over their *measured* times (``measured_at_s``, the BMS's
answers, not the poll schedule: a slow poll integrates its real interval). Where the current changes sign between
the two, the trapezoid is split where the straight line between them crosses zero, so that a change from
charging to discharging counts on both sides instead of cancelling out. Two readings further apart than
``max_gap_s`` (``failsafe.bms_timeout_s``) are not integrated: nobody knows what flowed while the BMS was silent,
and a guess would be a made-up number in a counter that can never be corrected.

**Total = the sum of the packs**, not an integration of the battery's current. Each pack is integrated over its
own readings at their own times, which is exact for that pack; the battery's aggregate mixes readings taken at
different moments and loses a pack altogether while it is offline. Summing keeps the total equal to what the
per-pack counters add up to on every dashboard, and keeps it from going down when a pack is absent (its counters
stay, see below). The price: current that circulates between parallel packs (one charging the other) counts as
charged in one and discharged in the other, so the total of each direction is a little higher than what passed
the battery's terminals; their difference is the same.

**Kept** (:class:`EnergyMeter`): one record of kind :data:`KIND` in the state store
(:mod:`gateway.state_store`), written at most every ``save_interval_s`` (the engine memory's 60 s: an SD card is
not written every second) while the counters change, and on stop. At start the record is read back; a corrupt or
foreign record is ignored with one line (the counters then start from zero). Counters of packs that are not
present are kept (a pack switched off, a bus unplugged), and keep counting in the total.

**Published only once kept**: :attr:`EnergyMeter.published` is the last record written (fsynced), never the
running sum. After a crash the counters restart from that record, so no published value ever goes down; what was
integrated after the last write is lost (at most ``save_interval_s`` worth), the price of not writing the SD card
every second. A record that cannot be written holds the published values where they were.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from gateway.clock import Clock
from gateway.logging_setup import Throttle
from gateway.model import BatteryState, PackReading
from gateway.state_store import StateStore

log = logging.getLogger(__name__)

KIND: Final = "energy-counters"
"""The state store's kind: ``{"packs": {pack id: {"charged_kwh": ..., "discharged_kwh": ..., ...}}}``."""
SECONDS_PER_HOUR: Final = 3600.0
WATTS_PER_KILOWATT: Final = 1000.0
REMIND_EVERY_S: Final = 3600.0
"""A record that cannot be written is said once, and again at most this often while it lasts, s."""
_FIELDS: Final = ("charged_kwh", "discharged_kwh", "charged_ah", "discharged_ah")


@dataclass(frozen=True, slots=True)
class EnergyCounters:
    """Energy and charge into (charged) and out of (discharged) a pack or the battery; each only ever grows."""

    charged_kwh: float = 0.0
    discharged_kwh: float = 0.0
    charged_ah: float = 0.0
    discharged_ah: float = 0.0

    def __add__(self, other: EnergyCounters) -> EnergyCounters:
        return EnergyCounters(
            self.charged_kwh + other.charged_kwh,
            self.discharged_kwh + other.discharged_kwh,
            self.charged_ah + other.charged_ah,
            self.discharged_ah + other.discharged_ah,
        )

    def to_json(self) -> dict[str, float]:
        """Rounded for display (0.1 Wh, 1 mAh); rounding never makes a growing value go down."""
        return {
            "charged_kwh": round(self.charged_kwh, 4),
            "discharged_kwh": round(self.discharged_kwh, 4),
            "charged_ah": round(self.charged_ah, 3),
            "discharged_ah": round(self.discharged_ah, 3),
        }

    @classmethod
    def from_json(cls, data: object) -> EnergyCounters | None:
        """Counters saved by :meth:`record`; None unless each field is a finite number ≥ 0."""
        if not isinstance(data, Mapping):
            return None
        values: list[float] = []
        for name in _FIELDS:
            value = data.get(name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
                return None
            values.append(float(value))
        return cls(*values)

    def record(self) -> dict[str, float]:
        """Unrounded, for the state store."""
        return {name: getattr(self, name) for name in _FIELDS}


ZERO: Final = EnergyCounters()


@dataclass(frozen=True, slots=True)
class EnergyTotals:
    """The counters as last kept: each pack's (by pack id, absent packs included) and when they were kept."""

    packs: Mapping[str, EnergyCounters] = field(default_factory=dict)
    saved_wall_s: float | None = None
    """Wall time of the record these come from (None: nothing kept yet, the counters start from zero)."""

    @property
    def total(self) -> EnergyCounters:
        """The battery's: the sum of every pack's (see the module docs for why)."""
        total = ZERO
        for counters in self.packs.values():
            total += counters
        return total

    def to_json(self) -> dict[str, Any]:
        """The battery's totals at the top, then each pack's: what status and MQTT carry."""
        return {
            **self.total.to_json(),
            "saved_wall_s": self.saved_wall_s,
            "packs": {pack_id: counters.to_json() for pack_id, counters in sorted(self.packs.items())},
        }


def _split_trapezoid(start: float, end: float, duration_s: float) -> tuple[float, float]:
    """The area under the straight line from ``start`` to ``end`` over ``duration_s``, as (above zero, below zero),
    both ≥ 0: a line crossing zero is split where it crosses."""
    if start >= 0 and end >= 0:
        return (start + end) / 2 * duration_s, 0.0
    if start <= 0 and end <= 0:
        return 0.0, -(start + end) / 2 * duration_s
    crossing_s = duration_s * start / (start - end)  # where the line is zero, from the start
    first, second = start * crossing_s / 2, end * (duration_s - crossing_s) / 2
    return (first, -second) if start > 0 else (second, -first)


def energy_between(previous: BatteryState, current: BatteryState, max_gap_s: float) -> EnergyCounters:
    """What flowed between two readings of one pack: the trapezoids of power and current over their measured
    times; nothing when they are more than ``max_gap_s`` apart, out of order, or carry a value that is not a
    number."""
    duration_s = current.measured_at_s - previous.measured_at_s
    values = (previous.pack_voltage_v, previous.current_a, current.pack_voltage_v, current.current_a)
    if not 0 < duration_s <= max_gap_s or not all(math.isfinite(v) for v in values):
        return ZERO
    charged_as, discharged_as = _split_trapezoid(previous.current_a, current.current_a, duration_s)
    charged_ws, discharged_ws = _split_trapezoid(
        previous.pack_voltage_v * previous.current_a, current.pack_voltage_v * current.current_a, duration_s
    )
    joules_per_kwh = SECONDS_PER_HOUR * WATTS_PER_KILOWATT
    return EnergyCounters(
        charged_kwh=charged_ws / joules_per_kwh,
        discharged_kwh=discharged_ws / joules_per_kwh,
        charged_ah=charged_as / SECONDS_PER_HOUR,
        discharged_ah=discharged_as / SECONDS_PER_HOUR,
    )


def counters_from_record(data: Mapping[str, Any]) -> dict[str, EnergyCounters] | None:
    """The packs' counters of a stored record; None when it is not such a record."""
    packs = data.get("packs")
    if not isinstance(packs, Mapping):
        return None
    out: dict[str, EnergyCounters] = {}
    for pack_id, item in packs.items():
        counters = EnergyCounters.from_json(item)
        if counters is None:
            return None
        out[str(pack_id)] = counters
    return out


class EnergyMeter:
    """Integrates each pack's readings, keeps the counters in the state store, publishes what it kept.

    Thread-safe: the poller thread feeds it (:meth:`on_readings`, which also writes the record when due: I/O on
    the thread that may be slow, never on the control loop's), any thread reads :attr:`published`, the control
    loop's stop calls :meth:`close`.

    :param max_gap_s: readings further apart are not integrated (``failsafe.bms_timeout_s``).
    :param store: where the counters are kept; None keeps them in this object only (a test's control loop),
        published on the same schedule.
    :param save_interval_s: the record is written at most this often while the counters change (and on close).
    """

    def __init__(self, clock: Clock, max_gap_s: float, store: StateStore | None, save_interval_s: float) -> None:
        self._clock = clock
        self._max_gap_s = max_gap_s
        self._store = store
        self._save_interval_s = save_interval_s
        self._lock = threading.Lock()
        """Guards the running counters, the last points and :attr:`published`."""
        self._saving = threading.Lock()
        """One write at a time, so that the values published are always the newest written."""
        self._throttle = Throttle(log, interval_s=REMIND_EVERY_S, clock=clock.monotonic)
        self._last: dict[str, BatteryState] = {}
        """Each pack's previous good reading (the start of its next trapezoid)."""
        self._closed = False
        restored = self._restore()
        self._counters: dict[str, EnergyCounters] = dict(restored.packs)
        self._changed = False
        self._published = restored
        self._saved_at_s = clock.monotonic()

    def _restore(self) -> EnergyTotals:
        if self._store is None:
            return EnergyTotals()
        stored = self._store.load(KIND)  # an unreadable, corrupt or foreign file: one line there, None here
        if stored is None:
            return EnergyTotals()
        packs = counters_from_record(stored.data)
        if packs is None:
            log.warning(
                "state: ignoring %s: not a record of energy counters; they start from zero", self._store.path(KIND)
            )
            return EnergyTotals()
        return EnergyTotals(MappingProxyType(packs), stored.saved_wall_s)

    @property
    def published(self) -> EnergyTotals:
        """The counters as last kept (see the module docs): what status, MQTT and Prometheus show."""
        with self._lock:
            return self._published

    def on_readings(self, readings: Iterable[PackReading]) -> None:
        """Integrate each pack's good reading since its previous one; write the record if it is due."""
        with self._lock:
            if self._closed:
                return  # stopping: the record is final
            for reading in readings:
                state = reading.state
                previous = self._last.get(reading.pack_id)
                if previous is not None and state.measured_at_s <= previous.measured_at_s:
                    continue  # the same reading again, or an older one: nothing new
                self._last[reading.pack_id] = state
                if previous is None:
                    self._counters.setdefault(reading.pack_id, ZERO)
                    continue
                step = energy_between(previous, state, self._max_gap_s)
                if step != ZERO:
                    self._counters[reading.pack_id] = self._counters.get(reading.pack_id, ZERO) + step
                    self._changed = True
            due = self._changed and self._clock.monotonic() - self._saved_at_s >= self._save_interval_s
        if due:
            self._save()

    def close(self) -> None:
        """Keep the counters (the stop's write) and take no reading after it."""
        with self._lock:
            self._closed = True
            changed = self._changed
        if changed:
            self._save()

    def _save(self) -> None:
        with self._saving:
            with self._lock:
                packs, self._changed = dict(self._counters), False
                self._saved_at_s = self._clock.monotonic()
            wall_s = self._clock.wall()
            if self._store is not None:
                try:
                    self._store.write(KIND, {"packs": {k: v.record() for k, v in packs.items()}}, wall_s)
                except OSError as error:
                    with self._lock:
                        self._changed = True  # try again at the next interval; publish nothing unkept
                    self._throttle.problem(
                        f"state: cannot keep the energy counters in {self._store.path(KIND)} "
                        f"({error.strerror or error}); they are not published beyond the last value kept"
                    )
                    return
                self._throttle.resolved(f"state: energy counters kept in {self._store.path(KIND)} again")
            with self._lock:
                self._published = EnergyTotals(MappingProxyType(packs), wall_s)
