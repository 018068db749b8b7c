"""The switches a simulated BMS was told to set, and what they do to its readings: shared by both simulators.

A written switch holds over the scenario: the setting reads as written, and an off switch holds its MOS (or
the balancer) off, so the limits engine sees what a real pack would show (charge switch off → charge MOS
off → CCL 0 A).
"""

from __future__ import annotations

import threading
from dataclasses import replace

from gateway.bms.control import Switch
from gateway.model import PackReading


def apply_switches(reading: PackReading, switches: dict[Switch, bool]) -> PackReading:
    """``reading`` with the written switches: the setting as written, and an off switch holds its MOS (or the
    balancer) off and stops the current it would carry. An on switch leaves the scenario's MOS state (a
    protection may still hold it open)."""
    if not switches:
        return reading
    settings, state = reading.settings, reading.state
    charge = switches.get(Switch.CHARGE)
    discharge = switches.get(Switch.DISCHARGE)
    balancer = switches.get(Switch.BALANCER)
    if charge is not None:
        settings = replace(settings, charge_mos_switch=charge)
        if not charge:
            state = replace(state, charge_mos_on=False, current_a=min(state.current_a, 0.0))
    if discharge is not None:
        settings = replace(settings, discharge_mos_switch=discharge)
        if not discharge:
            state = replace(state, discharge_mos_on=False, current_a=max(state.current_a, 0.0))
    if balancer is not None:
        settings = replace(settings, balancer_enabled=balancer)
        if not balancer:
            state = replace(state, balancer_on=False, balance_current_a=None)
    return replace(reading, settings=settings, state=state)


class SwitchOverrides:
    """The switches written to one simulated BMS since its start. Thread-safe: the server thread writes, any
    thread reads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._switches: dict[Switch, bool] = {}

    def set(self, switch: Switch, on: bool) -> None:
        with self._lock:
            self._switches[switch] = on

    def snapshot(self) -> dict[Switch, bool]:
        """The switches written so far (a copy)."""
        with self._lock:
            return dict(self._switches)

    def apply(self, reading: PackReading) -> PackReading:
        """``reading`` as the BMS reports it with these switches (:func:`apply_switches`)."""
        return apply_switches(reading, self.snapshot())
