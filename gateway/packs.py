"""The packs of the battery as the control loop tracks them: who is online, who counts, and their limits.

A pack is **online** while its newest good reading is at most ``bms_timeout_s`` old; offline packs are left
out of the aggregate (:mod:`gateway.battery`) and of the system limits (:mod:`gateway.limits.system`), and the
module count the inverter hears is the number online. A pack **counts** towards the current limits while it
is online and answered the last poll that others answered: one that missed it may have disconnected, and then
the others carry its current, so its share is withheld at once rather than after the timeout (its blocks and
voltage limits still apply until then).

:func:`battery_at` is pure; :class:`PackSet` holds the per-pack limits engines (keyed by pack id) and the
record of which drops were announced, and is used by the control loop's thread only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from types import MappingProxyType

from gateway.battery import BatteryAggregate, aggregate, pack_labels
from gateway.limits import LimitsEngine, LimitsSettings, failsafe_limits
from gateway.limits.dynamics import RampState, step_ramp
from gateway.limits.persist import memory_from_json, memory_to_json
from gateway.limits.settings import CurrentSharing
from gateway.limits.system import PackLimits, sharing_in_force, system_limits
from gateway.limits.thresholds import Thresholds
from gateway.model import LimitReason, Limits, PackReading
from gateway.state_store import Stored

log = logging.getLogger("gateway.runtime")


def battery_at(
    latest: Mapping[str, PackReading], known: Sequence[str], now_s: float, timeout_s: float
) -> BatteryAggregate | None:
    """The battery of the packs online at ``now_s``; None before any reading.

    With every pack offline: the packs that were online together when the newest reading came (what the
    inverter last heard about, now stale).
    """
    order = [*known, *(pack_id for pack_id in latest if pack_id not in known)]
    readings = [latest[pack_id] for pack_id in order if pack_id in latest]
    if not readings:
        return None
    online = [r for r in readings if now_s - r.measured_at_s <= timeout_s]
    if not online:
        newest_s = max(r.measured_at_s for r in readings)
        online = [r for r in readings if newest_s - r.measured_at_s <= timeout_s]
    ids = {r.pack_id for r in online}
    return aggregate(online, offline=[pack_id for pack_id in order if pack_id not in ids])


def pack_identity(reading: PackReading) -> str:
    """Which pack a saved memory belongs to: its serial number where the BMS reports one, else its address (the
    pack id) and cell count."""
    serial = reading.device.serial_number
    if serial:
        return f"serial:{serial}"
    return f"{reading.pack_id}:{reading.state.cell_count}s"


class PackSet:
    """Per-pack limits engines and the battery's limits; announces packs that drop out and rejoin."""

    def __init__(self, tuning: LimitsSettings, *, max_age_s: float) -> None:
        self._tuning = tuning
        self._max_age_s = max_age_s
        self._engines: dict[str, LimitsEngine] = {}
        self._limits: dict[str, Limits] = {}
        self._published: Mapping[str, Limits] = MappingProxyType({})
        self._limits_for: dict[str, PackReading] = {}
        self._warned: dict[str, tuple[str, ...]] = {}
        self._away: set[str] = set()
        """Packs whose drop was announced and whose return is not yet."""
        self._system: tuple[tuple[object, ...], tuple[object, ...], Limits] | None = None
        """(objects, ids, result) of the last system-limits computation: the readings and pack limits it used
        (held, and compared by identity), and which packs counted and which were offline."""
        self._warned_sharing = False
        self._ramps: dict[str, RampState] = {}
        """Per side ("charge", "discharge"): the battery's current limit as last published (several packs)."""
        self._restored: dict[str, dict[str, object]] = {}
        """Pack identity → the engine memory saved by a previous process, taken when that pack first reads."""
        self._restored_shift_s = 0.0
        self._latched: frozenset[str] = frozenset()
        """Silent packs whose last blocks and limits are latched (read by status views from other threads)."""
        self._sharing = tuning.current_sharing

    @property
    def sharing_now(self) -> CurrentSharing:
        """How the battery's current is shared among the packs counted at the last computation (``auto``
        decided): ``equal`` or ``capacity``."""
        return self._sharing

    @property
    def latched(self) -> frozenset[str]:
        """The silent packs whose last blocks and limits stay latched, by pack id."""
        return self._latched

    def forget(self, pack_id: str, battery: BatteryAggregate | None) -> bool:
        """The user says a silent pack is gone: drop its latched blocks and limits (it starts afresh when it
        answers again). False, and nothing changes, when it is not latched (unknown, or online again)."""
        if battery is None or pack_id not in battery.offline or pack_id not in self._limits:
            return False
        for memory in (self._limits, self._limits_for, self._engines, self._warned):
            memory.pop(pack_id, None)
        self._published = MappingProxyType(dict(self._limits))
        self._latched = self._latched - {pack_id}
        self._system = None
        return True

    @property
    def thresholds(self) -> Mapping[str, Thresholds]:
        """Each pack's thresholds as its engine last derived them, by pack id (adaptive polling reads them)."""
        return {p: e.thresholds for p, e in self._engines.items() if e.thresholds is not None}

    @property
    def pack_limits(self) -> Mapping[str, Limits]:
        """Each pack's latest own limits, by pack id (a copy: status views read it from other threads)."""
        return self._published

    def resume(self) -> None:
        """After a fail-safe period: every engine takes its next limits as computed (see LimitsEngine.resume)."""
        for engine in self._engines.values():
            engine.resume()

    def announce(self, battery: BatteryAggregate, errors: Mapping[str, str]) -> None:
        """One log line when a pack drops out while others carry on, one when it is back."""
        known = (*battery.online, *battery.offline)
        labels = pack_labels(known)
        for pack_id in battery.offline:
            if pack_id not in self._away:
                self._away.add(pack_id)
                why = errors.get(pack_id, "no good reading")
                if pack_id in self._limits:
                    log.error(
                        "BMS: %s silent (%s) but its pack may still be on the bus: its last blocks and limits "
                        "stay latched until it answers again; the battery goes on with %d of %d packs",
                        labels[pack_id],
                        why,
                        battery.module_count,
                        len(known),
                    )
                else:
                    log.warning(
                        "BMS: %s offline (%s); the battery goes on with %d of %d packs",
                        labels[pack_id],
                        why,
                        battery.module_count,
                        len(known),
                    )
        for pack_id in battery.online:
            if pack_id in self._away:
                self._away.discard(pack_id)
                log.info("BMS: %s back online; %d of %d packs", labels[pack_id], battery.module_count, len(known))

    def limits(self, battery: BatteryAggregate, missed: frozenset[str], now_s: float) -> Limits:
        """The battery's limits now: each counted pack's engine on its newest reading, then the system rule."""
        known = (*battery.online, *battery.offline)
        labels = pack_labels(known)
        several = len(known) > 1
        for reading in battery.packs:
            self._update(reading, labels[reading.pack_id] if several else None, now_s)
        counted = tuple(r.pack_id for r in battery.packs if r.pack_id not in missed)
        uncounted = tuple(r.pack_id for r in battery.packs if r.pack_id in missed)
        if not counted:  # cannot happen (the last poll's packs are the freshest), but never guess
            return failsafe_limits(None, now_s, "no pack answered the last poll")
        # A silent pack's last limits stay latched (battery-safety audit P3: its block vanished after the
        # timeout while it was still on the bus, and CCL stepped up into a pack at 1 °C).
        latched = tuple(p for p in battery.offline if p in self._limits and p in self._limits_for)
        self._latched = frozenset(latched)
        objects = (*battery.packs, *(self._limits[p] for p in (*counted, *uncounted, *latched)))
        ids = (counted, uncounted, battery.offline)
        cached = self._system
        if cached is None or cached[1] != ids or any(a is not b for a, b in zip(cached[0], objects, strict=True)):
            by_id = {r.pack_id: r for r in battery.packs}

            def pack(pack_id: str) -> PackLimits:
                return PackLimits(labels[pack_id], by_id[pack_id], self._limits[pack_id])

            self._check_sharing([by_id[p] for p in counted], labels)
            counted_packs = [pack(p) for p in counted]
            self._sharing = sharing_in_force(counted_packs, self._tuning)

            def last(pack_id: str) -> PackLimits:
                return PackLimits(
                    f"{labels[pack_id]} (silent, latched)", self._limits_for[pack_id], self._limits[pack_id]
                )

            result = system_limits(
                counted_packs,
                self._tuning,
                uncounted=[pack(p) for p in uncounted],
                offline=[labels[p] for p in battery.offline],
                latched=[last(p) for p in latched],
            )
            cached = self._system = (objects, ids, result)
        if not several:
            return cached[2]
        return self._ramped(cached[2], now_s)

    def _ramped(self, limits: Limits, now_s: float) -> Limits:
        """The battery's current limits through the engine's hold and ramp: a share withheld (a missed poll, a
        pack away) goes at once, and comes back only after the hold, on the ramp (battery-safety audit P4: a
        flaky pack made CCL flap 270 <-> 180 A)."""
        out = limits
        for side in ("charge", "discharge"):
            name = f"{side}_current_limit_a"
            target: float = getattr(limits, name)
            previous = self._ramps.get(side)
            ramp = (
                RampState(target, now_s, now_s)
                if previous is None
                else step_ramp(
                    previous,
                    target,
                    now_s,
                    hold_s=self._tuning.current_hold_s,
                    ramp_a_per_s=self._tuning.current_ramp_a_per_s,
                    deadband_a=self._tuning.current_deadband_a,
                )
            )
            self._ramps[side] = ramp
            value = min(ramp.output_a, target)
            if value < target - 1e-6:
                reasons = dict(out.reasons)
                reasons[name] = LimitReason("hold", f"battery: rising to {target:.1f} A after the hold and ramp")
                out = replace(out, reasons=reasons)
            enable: bool = getattr(out, f"{side}_enable") and value > 0.0
            if side == "charge":
                out = replace(out, charge_current_limit_a=value, charge_enable=enable)
            else:
                out = replace(out, discharge_current_limit_a=value, discharge_enable=enable)
        if not out.charge_enable and out.force_charge:
            out = replace(out, force_charge=False)
        return out

    def restore(self, stored: Stored | None, now_s: float, wall_s: float, max_age_s: float) -> None:
        """Take the engine memories a previous process saved, if younger than ``max_age_s``; each is used for the
        pack of the same identity (:func:`pack_identity`) when it first reads. ``now_s`` monotonic, ``wall_s``
        the wall clock, s."""
        if stored is None:
            return
        age_s = wall_s - stored.saved_wall_s
        if not 0.0 <= age_s <= max_age_s:
            log.info("state: limits memory saved %.0f s ago is too old (or from the future): starting afresh", age_s)
            return
        packs = stored.data.get("packs")
        if not isinstance(packs, dict):
            log.warning("state: limits memory without packs: starting afresh")
            return
        self._restored = {str(k): v for k, v in packs.items() if isinstance(v, dict)}
        # A time saved as "t before the save" becomes "t before the save, which was age_s ago" on our clock.
        self._restored_shift_s = age_s

    def memory_json(self, now_s: float) -> dict[str, object]:
        """Every pack's engine memory, for the state store (times relative to ``now_s``, monotonic s)."""
        packs: dict[str, object] = {}
        for pack_id, engine in self._engines.items():
            reading = self._limits_for.get(pack_id)
            if engine.memory is not None and reading is not None:
                packs[pack_identity(reading)] = memory_to_json(engine.memory, now_s)
        return {"packs": packs}

    def _check_sharing(self, readings: Sequence[PackReading], labels: Mapping[str, str]) -> None:
        """Warn once: equal sharing assumes alike packs; a bigger pack takes more than its share."""
        if self._warned_sharing or self._tuning.current_sharing is not CurrentSharing.EQUAL:
            return
        capacities = {labels[r.pack_id]: r.settings.capacity_ah for r in readings if r.settings.capacity_ah}
        if capacities and max(capacities.values()) > 1.05 * min(capacities.values()):
            self._warned_sharing = True
            shown = ", ".join(f"{label} {ah:g} Ah" for label, ah in capacities.items())
            log.warning(
                "settings: packs of different capacity (%s) with limits.current_sharing: equal: the bigger packs "
                "carry more than an equal share; set it to capacity",
                shown,
            )

    def _update(self, reading: PackReading, label: str | None, now_s: float) -> None:
        pack_id = reading.pack_id
        if self._limits_for.get(pack_id) is reading:
            return
        engine = self._engines.get(pack_id)
        if engine is None:
            engine = self._engines[pack_id] = LimitsEngine(self._tuning, max_age_s=self._max_age_s)
            saved = self._restored.pop(pack_identity(reading), None)
            if saved is not None:
                engine.memory = memory_from_json(saved, now_s - self._restored_shift_s)
                if engine.memory is not None:
                    log.info("state: %s: limits memory restored (latches, enforcement, charge phase)", pack_id)
        result = engine.update(reading, now_s)
        self._limits[pack_id] = result.limits
        self._published = MappingProxyType(dict(self._limits))
        self._limits_for[pack_id] = reading
        prefix = f"{label}: " if label else ""
        for event in result.events:
            log.info("%s%s", prefix, event)
        warnings = result.thresholds.warnings if result.thresholds else ()
        for warning in warnings:
            if warning not in self._warned.get(pack_id, ()):
                log.warning("settings: %s%s", prefix, warning)
        self._warned[pack_id] = warnings
