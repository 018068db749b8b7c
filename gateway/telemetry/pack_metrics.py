"""The per-pack Prometheus series: each carries a ``pack`` label (the pack id, e.g. ``jk-modbus:/dev/ttyUSB0#2``).

Cells and temperatures are always a pack's, so their series are per pack, with one pack too (a dashboard works
the same for one pack and for several). Each pack's own values (voltage, current, power, SOC, cell spread, the
age of its reading, its own current limits, whether it is online) sit beside the battery-level series, which
keep no pack label (:mod:`gateway.telemetry.http_status`): with several packs those are the battery the inverter
is told about. The label is the pack id, not the ``P1`` of the status view: a position moves when a pack drops
out, a time series must not.

Built at scrape time from the snapshot; prometheus-client is imported only here (the ``metrics`` extra).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from gateway.energy import EnergyCounters
from gateway.model import BatteryState, Limits
from gateway.runtime import Snapshot

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

PACK_VALUES: tuple[tuple[str, str, str, Callable[[BatteryState], float | None]], ...] = (
    (
        "pack_terminal_voltage",
        "one pack's own voltage (pack_voltage_volts is the battery's)",
        "volts",
        lambda s: s.pack_voltage_v,
    ),
    ("pack_current", "one pack's current, + charging", "amperes", lambda s: s.current_a),
    ("pack_power", "one pack's power, + charging", "watts", lambda s: s.power_w),
    ("pack_soc", "one pack's state of charge", "percent", lambda s: s.soc_pct),
    ("pack_cell_delta", "one pack's highest minus lowest cell voltage", "volts", lambda s: s.cell_delta_v),
)
"""(name, help, unit, value of a pack's state) of each per-pack value series."""

PACK_LIMITS: tuple[tuple[str, str, Callable[[Limits], float]], ...] = (
    ("pack_charge_current_limit", "one pack's own charge current limit", lambda limits: limits.charge_current_limit_a),
    (
        "pack_discharge_current_limit",
        "one pack's own discharge current limit",
        lambda limits: limits.discharge_current_limit_a,
    ),
)
"""(name, help, value) of each pack's own current limits (the battery's are the ``*_limit`` series)."""


def pack_metrics(snapshot: Snapshot) -> Iterator[Metric]:
    """Every per-pack family for ``snapshot`` (nothing before the first reading)."""
    from prometheus_client.core import GaugeMetricFamily

    battery = snapshot.battery
    if battery is None:
        return
    packs = battery.packs

    def family(name: str, doc: str, unit: str = "", labels: tuple[str, ...] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"bms_gateway_{name}", doc, labels=["pack", *labels], unit=unit)

    cells = family("cell_voltage", "cell voltage", "volts", ("cell",))
    temperatures = family("temperature", "temperature", "celsius", ("sensor",))
    for reading in packs:
        state = reading.state
        for number, volts in enumerate(state.cell_voltages_v, start=1):
            cells.add_metric([reading.pack_id, str(number)], volts)
        if state.mos_temperature_c is not None:
            temperatures.add_metric([reading.pack_id, "mos"], state.mos_temperature_c)
        for number, celsius in enumerate(state.battery_temperatures_c, start=1):
            if celsius is not None:
                temperatures.add_metric([reading.pack_id, f"t{number}"], celsius)
    yield cells
    yield temperatures

    for name, doc, unit, value_of in PACK_VALUES:
        values = family(name, doc, unit)
        for reading in packs:
            value = value_of(reading.state)
            if value is not None:
                values.add_metric([reading.pack_id], value)
        yield values
    ages = family("pack_reading_age", "age of one pack's newest good reading", "seconds")
    for reading in packs:
        ages.add_metric([reading.pack_id], snapshot.at_s - reading.measured_at_s)
    yield ages

    for name, doc, limit_of in PACK_LIMITS:
        limits = family(name, doc, "amperes")
        for pack_id, own in snapshot.pack_limits.items():
            limits.add_metric([pack_id], limit_of(own))
        yield limits

    online = family("pack_online", "1 for the packs that make up the battery now, 0 for the known ones offline")
    for pack_id in battery.online:
        online.add_metric([pack_id], 1.0)
    for pack_id in battery.offline:
        online.add_metric([pack_id], 0.0)
    yield online


ENERGY_COUNTERS: tuple[tuple[str, str, Callable[[EnergyCounters], float]], ...] = (
    ("energy_charged_kwh", "energy into the battery, kWh", lambda c: c.charged_kwh),
    ("energy_discharged_kwh", "energy out of the battery, kWh", lambda c: c.discharged_kwh),
    ("energy_charged_ah", "charge into the battery, Ah", lambda c: c.charged_ah),
    ("energy_discharged_ah", "charge out of the battery, Ah", lambda c: c.discharged_ah),
)
"""(name, help, value) of each energy counter (:mod:`gateway.energy`)."""


def energy_metrics(snapshot: Snapshot) -> Iterator[Metric]:
    """The energy counters as last kept: the battery's ``bms_gateway_energy_*_total`` without a label (the sum of
    the packs), each pack's ``bms_gateway_pack_energy_*_total`` with its ``pack`` label, absent packs included
    (their counters are kept). Two families rather than one with and without the label: ``sum()`` over a family
    must not count the battery twice."""
    from prometheus_client.core import CounterMetricFamily

    energy = snapshot.energy
    if energy is None:
        return
    total = energy.total
    for name, doc, value_of in ENERGY_COUNTERS:
        yield CounterMetricFamily(f"bms_gateway_{name}", f"{doc} (sum of the packs)", value=value_of(total))
        packs = CounterMetricFamily(f"bms_gateway_pack_{name}", f"one pack's {doc}", labels=["pack"])
        for pack_id, counters in sorted(energy.packs.items()):
            packs.add_metric([pack_id], value_of(counters))
        yield packs
