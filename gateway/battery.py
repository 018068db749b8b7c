"""Several packs in parallel as one battery: the aggregate the inverter is told about. Pure functions.

:func:`aggregate` turns the readings of the packs online into one synthetic :class:`~gateway.model.PackReading`
(so that :func:`~gateway.values.published_values` and every profile work unchanged) plus the facts the
synthetic reading cannot hold: which pack and cell hold each extreme, and which packs are online.

How the battery's values derive from its packs':

* pack voltage: the mean (the packs share one bus bar; they differ only by wiring drop and shunt error);
* current: the sum; power follows;
* SOC and SOH: weighted by each pack's capacity (equal weights when a capacity is unknown);
* capacity, remaining capacity, cycled capacity: sums (None when a pack does not carry it);
* cells and temperatures: every cell and battery sensor of every pack, pack after pack, so that the highest,
  lowest and mean come out right; the MOS temperature is the hottest; :class:`Extremes` names where each is;
* alarms: the union; MOS states: on only when on in every pack; balancer: on when on in any;
* settings: the most restrictive value per field (:data:`SETTINGS_RULES`), e.g. the lowest cell OVP and the
  highest cell UVP.

A battery of one pack is that pack: :func:`aggregate` returns its reading unchanged.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any, Final, TypeVar

from gateway.model import BatteryState, DeviceInfo, PackReading, ProtectionSettings

BATTERY_ID: Final = "battery"
"""``pack_id`` of the synthetic reading of a battery of several packs."""

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Extreme:
    """Where an extreme value of the battery sits."""

    value: float
    pack_id: str
    index: int | None
    """1-based cell (cell voltages) or sensor number (T1, T2, ...); None for the MOS sensor."""


@dataclass(frozen=True, slots=True)
class Extremes:
    """The battery's extremes and where they are; None when no pack carries the value."""

    max_cell: Extreme | None
    min_cell: Extreme | None
    max_temperature: Extreme | None
    """Hottest battery sensor (T1...)."""
    min_temperature: Extreme | None
    """Coldest battery sensor."""
    max_mos_temperature: Extreme | None


@dataclass(frozen=True, slots=True)
class BatteryAggregate:
    """The battery the inverter sees, built from the packs online."""

    reading: PackReading
    """One synthetic reading for the whole battery (the pack's own reading when there is one pack)."""
    extremes: Extremes
    packs: tuple[PackReading, ...]
    """The readings that make up :attr:`reading`, in polling order."""
    offline: tuple[str, ...] = ()
    """Known pack ids left out (no fresh good reading)."""

    @property
    def online(self) -> tuple[str, ...]:
        """Ids of the packs in :attr:`packs`."""
        return tuple(p.pack_id for p in self.packs)

    @property
    def module_count(self) -> int:
        """Packs in parallel now, for the inverter frames."""
        return len(self.packs)


# --- combining values -----------------------------------------------------------------------------------


def _present(values: Sequence[_T | None]) -> list[_T]:
    return [v for v in values if v is not None]


def _lowest(values: Sequence[float | None]) -> float | None:
    known = _present(values)
    return min(known) if known else None


def _highest(values: Sequence[float | None]) -> float | None:
    known = _present(values)
    return max(known) if known else None


def _all_on(values: Sequence[bool | None]) -> bool | None:
    known = _present(values)
    return all(known) if known else None


def _common(values: Sequence[_T | None]) -> _T | None:
    """The value every pack states; None when they disagree (a mixed battery is no one chemistry)."""
    known = _present(values)
    return known[0] if known and all(v == known[0] for v in known) and len(known) == len(values) else None


def _first(values: Sequence[_T | None]) -> _T | None:
    known = _present(values)
    return known[0] if known else None


def _cell_count(values: Sequence[int | None]) -> int:
    return max(_present(values), default=0)


def _total(values: Sequence[float | None]) -> float | None:
    """The sum; None unless every pack states it."""
    known = _present(values)
    return sum(known) if len(known) == len(values) else None


SETTINGS_RULES: Final[Mapping[str, Callable[[Sequence[Any]], Any]]] = MappingProxyType(
    {
        "measured_at_s": _lowest,  # as old as the oldest pack's
        "cell_count": _cell_count,  # parallel packs have one cell count; max() is only a tie-break
        "capacity_ah": _total,
        "battery_type": _common,
        # Protections: trip first, recover last.
        **dict.fromkeys(
            (
                "cell_ovp_v",
                "cell_ovpr_v",
                "max_charge_current_a",
                "max_discharge_current_a",
                "pack_ovp_v",
                "cell_ovp_delay_s",
                "cell_uvp_delay_s",
                "cell_delta_protect_v",
                "charge_ocp_delay_s",
                "discharge_ocp_delay_s",
                "charge_otp_c",
                "charge_otpr_c",
                "discharge_otp_c",
                "discharge_otpr_c",
                "mos_otp_c",
                "mos_otpr_c",
                "box_otp_c",
                "box_otpr_c",
            ),
            _lowest,
        ),
        **dict.fromkeys(
            (
                "cell_uvp_v",
                "cell_uvpr_v",
                "pack_uvp_v",
                "power_off_v",
                "charge_ocp_recovery_s",
                "discharge_ocp_recovery_s",
                "scp_recovery_s",
                "charge_utp_c",
                "charge_utpr_c",
                "discharge_utp_c",
                "discharge_utpr_c",
            ),
            _highest,
        ),
        # Balancer settings protect nothing: the first pack's stand for the battery.
        **dict.fromkeys(("balance_start_v", "balance_trigger_v", "max_balance_current_a"), _first),
        **dict.fromkeys(("balancer_enabled", "charge_mos_switch", "discharge_mos_switch"), _all_on),
    }
)
""":class:`ProtectionSettings` field → how the battery's value derives from its packs' (most restrictive)."""


def aggregate_settings(settings: Sequence[ProtectionSettings]) -> ProtectionSettings:
    """The most restrictive value of each field over ``settings`` (at least one)."""
    values = {f.name: SETTINGS_RULES[f.name]([getattr(s, f.name) for s in settings]) for f in fields(settings[0])}
    return ProtectionSettings(**values)


def _weights(readings: Sequence[PackReading]) -> list[float]:
    """Each pack's capacity, Ah; equal weights unless every pack states a positive capacity."""
    capacities = [r.settings.capacity_ah for r in readings]
    if all(c is not None and c > 0 for c in capacities):
        return [float(c) for c in capacities if c is not None]
    return [1.0] * len(readings)


def _weighted(values: Sequence[float], weights: Sequence[float]) -> float:
    return sum(v * w for v, w in zip(values, weights, strict=True)) / sum(weights)


def _remaining_ah(reading: PackReading) -> float | None:
    state, capacity = reading.state, reading.settings.capacity_ah
    if state.remaining_capacity_ah is not None:
        return state.remaining_capacity_ah
    return None if capacity is None else capacity * state.soc_pct / 100


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _extreme(
    readings: Sequence[PackReading],
    values: Callable[[PackReading], Sequence[float | None]],
    pick: Callable[[float, float], bool],
    *,
    numbered: bool = True,
) -> Extreme | None:
    """The value ``pick`` prefers over all packs (the first of equals), with its pack and 1-based index."""
    best: Extreme | None = None
    for reading in readings:
        for index, value in enumerate(values(reading), start=1):
            if value is None or not math.isfinite(value):
                continue
            if best is None or pick(value, best.value):
                best = Extreme(value, reading.pack_id, index if numbered else None)
    return best


def extremes(readings: Sequence[PackReading]) -> Extremes:
    """Highest and lowest cell and temperatures over ``readings``, each with its pack and cell or sensor."""

    def higher(a: float, b: float) -> bool:
        return a > b

    def lower(a: float, b: float) -> bool:
        return a < b

    def cells(r: PackReading) -> Sequence[float | None]:
        return r.state.cell_voltages_v

    def sensors(r: PackReading) -> Sequence[float | None]:
        return r.state.battery_temperatures_c

    def mos(r: PackReading) -> Sequence[float | None]:
        return (r.state.mos_temperature_c,)

    return Extremes(
        max_cell=_extreme(readings, cells, higher),
        min_cell=_extreme(readings, cells, lower),
        max_temperature=_extreme(readings, sensors, higher),
        min_temperature=_extreme(readings, sensors, lower),
        max_mos_temperature=_extreme(readings, mos, higher, numbered=False),
    )


def aggregate_state(readings: Sequence[PackReading]) -> BatteryState:
    """The live state of the battery made of ``readings`` (at least one); see the module docs."""
    states = [r.state for r in readings]
    weights = _weights(readings)
    remaining = [_remaining_ah(r) for r in readings]
    soh = [s.soh_pct for s in states]
    soh_weights = [w for w, value in zip(weights, soh, strict=True) if value is not None]
    balance = _present([s.balance_current_a for s in states])
    cycled = [s.cycle_capacity_ah for s in states]
    return BatteryState(
        measured_at_s=min(s.measured_at_s for s in states),
        cell_voltages_v=tuple(v for s in states for v in s.cell_voltages_v),
        pack_voltage_v=round(sum(s.pack_voltage_v for s in states) / len(states), 3),
        current_a=round(sum(s.current_a for s in states), 3),
        soc_pct=round(_weighted([s.soc_pct for s in states], weights), 2),
        soh_pct=round(_weighted(_present(soh), soh_weights), 2) if soh_weights else None,
        remaining_capacity_ah=_round(_total(remaining), 3),
        cycle_count=max(_present([s.cycle_count for s in states]), default=None),
        cycle_capacity_ah=_total(cycled),
        mos_temperature_c=_highest([s.mos_temperature_c for s in states]),
        battery_temperatures_c=tuple(t for s in states for t in s.battery_temperatures_c),
        charge_mos_on=all(s.charge_mos_on for s in states),
        discharge_mos_on=all(s.discharge_mos_on for s in states),
        balancer_on=any(s.balancer_on for s in states),
        balance_current_a=max(balance, key=abs) if balance else None,
        alarms=frozenset().union(*(s.alarms for s in states)),
        runtime_s=_highest([s.runtime_s for s in states]),
    )


def _device(readings: Sequence[PackReading]) -> DeviceInfo:
    devices = [r.device for r in readings]
    return DeviceInfo(
        model=_common([d.model for d in devices]),
        software_version=_common([d.software_version for d in devices]),
        hardware_version=_common([d.hardware_version for d in devices]),
    )


def aggregate(readings: Sequence[PackReading], offline: Sequence[str] = ()) -> BatteryAggregate:
    """The battery made of the packs ``readings`` come from (at least one; the packs online, in polling order).

    :param offline: known packs left out, for the record.
    :raises ValueError: no reading, or two readings of one pack.
    """
    if not readings:
        raise ValueError("a battery needs at least one pack reading")
    ids = tuple(r.pack_id for r in readings)
    if len(set(ids)) != len(ids):
        raise ValueError(f"two readings of one pack among {', '.join(ids)}")
    if len(readings) == 1:
        reading = readings[0]
    else:
        reading = PackReading(
            pack_id=BATTERY_ID,
            state=aggregate_state(readings),
            settings=aggregate_settings([r.settings for r in readings]),
            device=_device(readings),
        )
    return BatteryAggregate(reading, extremes(readings), tuple(readings), tuple(offline))


# --- naming packs in reasons and logs ------------------------------------------------------------------

_NUMBERED: Final = re.compile(r"#(\d+)$")


def pack_labels(pack_ids: Sequence[str]) -> Mapping[str, str]:
    """Short names for reasons and log lines: ``pack #2`` for ``jk-modbus:/dev/ttyUSB0#2`` (the unit address)
    when every pack has a distinct ``#n`` suffix (one bus), else ``pack <id>``."""
    numbers = [_NUMBERED.search(pack_id) for pack_id in pack_ids]
    suffixes = [m.group(1) for m in numbers if m is not None]
    if len(suffixes) == len(pack_ids) and len(set(suffixes)) == len(suffixes):
        return MappingProxyType({pack_id: f"pack #{n}" for pack_id, n in zip(pack_ids, suffixes, strict=True)})
    return MappingProxyType({pack_id: f"pack {pack_id}" for pack_id in pack_ids})


__all__ = [
    "BATTERY_ID",
    "SETTINGS_RULES",
    "BatteryAggregate",
    "Extreme",
    "Extremes",
    "aggregate",
    "aggregate_settings",
    "aggregate_state",
    "extremes",
    "pack_labels",
]
