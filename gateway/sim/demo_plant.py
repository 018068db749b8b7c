"""The demo's DC side: the simulated inverter's current flows into the simulated pack.

A demo scenario (:mod:`gateway.sim.scenarios`) scripts what the sun and the house would do; its current is what a
charger would push (or a load draw) with nothing in the way. :class:`DemoPlant` puts the inverter of the
charge-cycle simulations (:class:`~gateway.sim.inverter_model.Inverter`) in between: it hears the gateway's frames
and takes what it obeys of that wish, with its own lag, and the simulated BMS reports the current that flows. So an
inverter that obeys stops charging when the gateway says 0 A, and one that does not shows what the gateway's
enforcement and the BMS's own protection do about it.

In ``cell-ovp`` cell 7 is not scripted by the clock but driven by the charge it takes (:class:`RunawayCell`): it
climbs while current flows in and relaxes while none does; the BMS opens its charge MOS at OVP and closes it
below OVPR, as a real JK does.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import threading
from collections.abc import Callable, Mapping
from typing import Final

from gateway.clock import Clock
from gateway.model import Alarm
from gateway.sim.inverter_model import Bus, Heard, Inverter
from gateway.sim.scenarios import CELL_COUNT, Scenario, Step, base_settings

CELL_RESISTANCE_OHM: Final = 0.0004
"""Internal resistance of one simulated cell, Ω (as the scenarios' packs)."""
TICK_S: Final = 0.25
"""How often the current is moved on, s."""


class InverterBehaviour(enum.StrEnum):
    OBEYS = "obeys"
    """Follows every limit and both enable bits, as a well-configured inverter does."""
    DISOBEYS = "disobeys"
    """Follows none of them, as an inverter on the wrong battery type or a charger without a BMS link: only the
    gateway's enforcement (which it ignores too) and in the end the BMS's own protection stop it."""


INVERTERS: Final[Mapping[InverterBehaviour, Inverter]] = {
    InverterBehaviour.OBEYS: Inverter(response_s=2.0),
    InverterBehaviour.DISOBEYS: Inverter(response_s=2.0, obeys=frozenset()),
}


@dataclasses.dataclass(slots=True)
class RunawayCell:
    """A cell running ahead of the others: its voltage follows the charge it takes, not the clock.

    It rises ``rise_v_per_ah`` per Ah taken and relaxes towards ``rest_v`` with the time constant ``relax_s``:
    at the scenario's 30 A it would settle at 3.80 V, past OVP; at a few amperes it settles below the gateway's
    cut-off.
    """

    index: int
    """Which cell (0-based)."""
    charger_a: float
    """What the charger would push with nothing in the way, A."""
    rest_v: float = 3.40
    rise_v_per_ah: float = 1.2
    relax_s: float = 40.0
    volts: float = 3.40
    tripped: bool = False
    """The BMS's cell over-voltage protection holds its charge MOS open."""

    def advance(self, current_a: float, dt_s: float) -> None:
        settings = base_settings()
        self.volts = self.rest_v + (self.volts - self.rest_v) * math.exp(-dt_s / self.relax_s)
        self.volts += max(current_a, 0.0) * dt_s / 3600.0 * self.rise_v_per_ah
        if self.volts >= settings.cell_ovp_v:
            self.tripped = True
        elif self.volts < settings.cell_ovpr_v:
            self.tripped = False


RUNAWAY_CELLS: Final[Mapping[str, Callable[[], RunawayCell]]] = {
    "cell-ovp": lambda: RunawayCell(index=6, charger_a=30.0),
}
"""Scenarios whose ahead-running cell the charge drives in the demo, by scenario name."""


class DemoPlant:
    """The scenario's pack with the current the inverter lets flow. Thread-safe: the simulated BMS asks
    :meth:`step` from its thread while :meth:`tick` moves the current on in another."""

    def __init__(self, scenario: Scenario, inverter: Inverter, clock: Clock) -> None:
        self._scenario = scenario
        self._inverter = inverter
        self._clock = clock
        self._started_at = clock.monotonic()
        self._last_tick_s = self._started_at
        self._current_a = 0.0
        self._runaway = RUNAWAY_CELLS[scenario.name]() if scenario.name in RUNAWAY_CELLS else None
        self._lock = threading.Lock()

    @property
    def scenario(self) -> Scenario:
        """The scenario as the simulated BMS replays it: the script with the current that really flows."""
        return Scenario(self._scenario.name, self._scenario.description, self.step)

    @property
    def current_a(self) -> float:
        with self._lock:
            return self._current_a

    def tick(self, heard: Heard | None) -> None:
        """Move the current on to now; ``heard``: what the inverter hears (None: it lost the battery)."""
        now_s = self._clock.monotonic()
        with self._lock:
            dt_s = max(0.0, now_s - self._last_tick_s)
            self._last_tick_s = now_s
            t_s = now_s - self._started_at
            state = self._step(t_s).reading.state
            # The wish is the script's current, not the one flowing now (which starts at 0 and would stay there).
            script_a = self._scenario.step(t_s).reading.state.current_a
            wish_a = self._runaway.charger_a if self._runaway is not None else script_a
            rest_v = state.pack_voltage_v - self._current_a * CELL_RESISTANCE_OHM * CELL_COUNT
            bus = Bus(ocv_v=rest_v, resistance_ohm=CELL_RESISTANCE_OHM * CELL_COUNT)
            if wish_a > 0 and state.charge_mos_on:
                inverter = dataclasses.replace(self._inverter, charge_power_w=wish_a * state.pack_voltage_v)
                target_a = inverter.charge_target_a(heard, bus, state.pack_voltage_v)
            elif wish_a < 0 and state.discharge_mos_on:
                inverter = dataclasses.replace(self._inverter, load_a=-wish_a)
                target_a = -inverter.discharge_target_a(heard, state.pack_voltage_v)
            else:
                target_a = 0.0  # nothing asked, or the BMS's MOS is open: no current can flow that way
            self._current_a = self._inverter.respond(self._current_a, target_a, dt_s)
            if self._runaway is not None:
                self._runaway.advance(self._current_a, dt_s)

    def run(self, stop: threading.Event, heard: Callable[[], Heard | None]) -> None:
        """Tick every :data:`TICK_S` until ``stop`` is set (a thread's target)."""
        while not stop.wait(TICK_S):
            self.tick(heard())

    def step(self, t_s: float) -> Step:
        """What the simulated BMS reports ``t_s`` after the start: the script, with the current that flows."""
        with self._lock:
            return self._step(t_s)

    def _step(self, t_s: float) -> Step:
        step = self._scenario.step(t_s)
        state = step.reading.state
        # The script's cells carry its own current's I·R: move them to the current that really flows.
        shift_v = (self._current_a - state.current_a) * CELL_RESISTANCE_OHM
        cells = [round(v + shift_v, 3) for v in state.cell_voltages_v]
        alarms = state.alarms
        charge_mos_on = state.charge_mos_on
        if self._runaway is not None:
            runaway = self._runaway
            cells[runaway.index] = round(runaway.volts + self._current_a * CELL_RESISTANCE_OHM, 3)
            alarms = alarms - {Alarm.CELL_OVER_VOLTAGE}
            if runaway.tripped:
                alarms = alarms | {Alarm.CELL_OVER_VOLTAGE}
            charge_mos_on = not runaway.tripped
        state = dataclasses.replace(
            state,
            cell_voltages_v=tuple(cells),
            pack_voltage_v=round(sum(cells), 2),
            current_a=round(self._current_a, 2),
            alarms=alarms,
            charge_mos_on=charge_mos_on,
        )
        return dataclasses.replace(step, reading=dataclasses.replace(step.reading, state=state))
