"""The simulated inverter of the charge-cycle simulations, and the DC bus it shares with the packs. Pure.

The inverter hears the battery's limits as decoded frames (:class:`Heard`) and sets one current on the bus: a
CV charger regulating the bus towards CVL (at most CCL × ``overshoot`` and what its power allows), or a load
(at most DCL × ``overshoot``) until DCL 0, discharge disabled or the bus at DVL. Whatever it does not
:attr:`~Inverter.obeys` it ignores. It follows a new target with a first-order lag of ``response_s``.

The bus (:func:`split_current`) shares that current between packs in parallel as their open-circuit voltages
and resistances dictate; a pack whose BMS opened its charge (discharge) MOS takes no charge (discharge) current,
and with every pack blocked the inverter's current cannot flow at all.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from gateway.values import Value

EVERYTHING: Final = frozenset({"ccl", "dcl", "cvl", "dvl", "enable"})
"""An inverter that follows every limit and both enables."""


@dataclass(frozen=True, slots=True)
class Heard:
    """What the inverter heard on the bus: the limits after the 0x351 / 0x35C round trip."""

    cvl_v: float
    """Charge voltage limit, V (0.1 V steps)."""
    ccl_a: float
    """Charge current limit, A (0.1 A steps)."""
    dcl_a: float
    """Discharge current limit, A (0.1 A steps)."""
    dvl_v: float
    """Discharge voltage limit, V (0.1 V steps)."""
    charge_enable: bool
    discharge_enable: bool

    @classmethod
    def of(cls, values: Mapping[str, Value]) -> Heard:
        """The limits among decoded frame values keyed by published value name (``named_values``)."""
        return cls(
            cvl_v=float(values["charge_voltage_limit_v"]),
            ccl_a=float(values["charge_current_limit_a"]),
            dcl_a=float(values["discharge_current_limit_a"]),
            dvl_v=float(values["discharge_voltage_limit_v"]),
            charge_enable=bool(values["charge_enable"]),
            discharge_enable=bool(values["discharge_enable"]),
        )


@dataclass(frozen=True, slots=True)
class Bus:
    """The packs in parallel as the inverter sees them: a voltage source of ``ocv_v`` behind ``resistance_ohm``."""

    ocv_v: float
    """Open-circuit voltage of the packs that take current in the direction asked, V."""
    resistance_ohm: float
    """Their parallel resistance, Ω (inf: none takes current)."""

    @classmethod
    def of(cls, ocvs_v: Sequence[float], resistances_ohm: Sequence[float]) -> Bus:
        conductance = sum(1.0 / r for r in resistances_ohm)
        if conductance <= 0:
            return cls(ocv_v=0.0, resistance_ohm=math.inf)
        ocv = sum(v / r for v, r in zip(ocvs_v, resistances_ohm, strict=True)) / conductance
        return cls(ocv_v=ocv, resistance_ohm=1.0 / conductance)


@dataclass(frozen=True, slots=True)
class Inverter:
    """A hybrid inverter following the battery's limits, perhaps loosely.

    :param obeys: what it follows, of :data:`EVERYTHING` (``enable``: both enable bits).
    :param overshoot: it takes up to CCL × this (DCL × this) where it follows them: 1.0 obeys, 1.2 takes 20 % more.
    :param response_s: time constant of its first-order response, s (0: at once).
    :param charge_power_w: PV/charger power available, W.
    :param load_a: the house load it draws from the battery in the discharge phase, A.
    """

    overshoot: float = 1.0
    response_s: float = 1.5
    charge_power_w: float = 10_000.0
    load_a: float = 60.0
    obeys: Collection[str] = EVERYTHING

    def charge_target_a(self, heard: Heard | None, bus: Bus, terminal_v: float) -> float:
        """Charge current it aims for, A (≥ 0). ``heard`` None: it has lost the battery and stops."""
        if heard is None:
            return 0.0
        if "enable" in self.obeys and not heard.charge_enable:
            return 0.0
        if "ccl" in self.obeys and heard.ccl_a <= 0:
            return 0.0
        target = self.charge_power_w / max(terminal_v, 1.0)
        if "cvl" in self.obeys and math.isfinite(bus.resistance_ohm):
            # The current that would put the terminals exactly at CVL: an ideal CV loop.
            target = min(target, max(0.0, (heard.cvl_v - bus.ocv_v) / bus.resistance_ohm))
        if "ccl" in self.obeys:
            target = min(target, heard.ccl_a * self.overshoot)
        return max(0.0, target)

    def discharge_target_a(self, heard: Heard | None, terminal_v: float) -> float:
        """Discharge current it aims for, A (≥ 0); 0 means it stops."""
        if heard is None:
            return 0.0
        if "enable" in self.obeys and not heard.discharge_enable:
            return 0.0
        if "dvl" in self.obeys and terminal_v <= heard.dvl_v:
            return 0.0
        if "dcl" in self.obeys:
            if heard.dcl_a <= 0:
                return 0.0
            return min(self.load_a, heard.dcl_a * self.overshoot)
        return self.load_a

    def respond(self, current_a: float, target_a: float, dt_s: float) -> float:
        """Current after ``dt_s`` of moving from ``current_a`` towards ``target_a`` (both A, + charging)."""
        if self.response_s <= 0:
            return target_a
        return target_a + (current_a - target_a) * math.exp(-dt_s / self.response_s)


def split_current(
    total_a: float,
    ocvs_v: Sequence[float],
    resistances_ohm: Sequence[float],
    charge_open: Sequence[bool],
    discharge_open: Sequence[bool],
) -> tuple[float, ...]:
    """Each pack's current (A, + charging) when ``total_a`` flows into packs in parallel.

    A pack takes ``(V − OCV) / R`` at the common bus voltage V. One whose charge (discharge) path is blocked
    (``charge_open`` false) takes no current in that direction: it is left out and V found again. With every
    pack blocked for the direction ``total_a`` asks, nothing flows (the result is all zeros).
    """
    taking = list(range(len(ocvs_v)))
    while taking:
        conductance = sum(1.0 / resistances_ohm[i] for i in taking)
        bus_v = (total_a + sum(ocvs_v[i] / resistances_ohm[i] for i in taking)) / conductance
        currents = {i: (bus_v - ocvs_v[i]) / resistances_ohm[i] for i in taking}
        blocked = [
            i
            for i, amps in currents.items()
            if (amps > 0 and not charge_open[i]) or (amps < 0 and not discharge_open[i])
        ]
        if not blocked:
            return tuple(currents.get(i, 0.0) for i in range(len(ocvs_v)))
        taking = [i for i in taking if i not in blocked]
    return tuple(0.0 for _ in ocvs_v)
