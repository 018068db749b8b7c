"""Plain-text views of readings for the terminal, shared by ``read``, ``check`` and ``demo``."""

from __future__ import annotations

from gateway.battery import BatteryAggregate
from gateway.limits import Thresholds
from gateway.model import Limits, PackReading
from gateway.values import location_names


def _num(value: float | None, fmt: str, unit: str) -> str:
    return "–" if value is None else f"{value:{fmt}} {unit}"


def render_cells(reading: PackReading, label: str | None = None) -> str:
    """The cells, eight a row; ``label``: the pack's ``P2`` among several, to name the cells ``P2 C07``."""
    state = reading.state
    cells = state.cell_voltages_v
    lowest = cells.index(state.min_cell_v) + 1
    highest = cells.index(state.max_cell_v) + 1
    rows = []
    for start in range(0, len(cells), 8):
        row = cells[start : start + 8]
        span = "" if label is None else f"{label} C{start + 1:02d}-C{start + len(row):02d}  "
        rows.append(f"  {span}" + " ".join(f"{v:.3f}" for v in row))

    def name(number: int) -> str:
        return f"#{number}" if label is None else f"{label} C{number:02d}"

    summary = (
        f"cells ({len(cells)}): min {state.min_cell_v:.3f} V ({name(lowest)})  max {state.max_cell_v:.3f} V"
        f" ({name(highest)})  Δ {state.cell_delta_v * 1000:.0f} mV"
    )
    return "\n".join([summary, *rows])


def render_battery(battery: BatteryAggregate) -> str:
    """Several packs as the one battery the inverter is told about, and where its extremes are (``P2 C07``)."""
    state = battery.reading.state
    where = location_names(battery.reading, battery.extremes, battery.online)
    return "\n".join(
        [
            f"battery of {battery.module_count} packs in parallel: {state.pack_voltage_v:.2f} V"
            f"  {state.current_a:+.2f} A  {state.power_w:+.0f} W  SOC {state.soc_pct:.0f} %",
            f"  cells ({state.cell_count}): min {state.min_cell_v:.3f} V ({where['min_cell_name']})"
            f"  max {state.max_cell_v:.3f} V ({where['max_cell_name']})  Δ {state.cell_delta_v * 1000:.0f} mV",
        ]
    )


def render_state(reading: PackReading, label: str | None = None) -> str:
    """A compact multi-line view of one pack's live state (``label``: see :func:`render_cells`)."""
    state = reading.state
    temperatures = "  ".join(f"T{i + 1} {_num(t, '.0f', '°C')}" for i, t in enumerate(state.battery_temperatures_c))
    alarms = ", ".join(sorted(a.value for a in state.alarms)) or "none"
    return "\n".join(
        [
            render_cells(reading, label),
            f"pack {state.pack_voltage_v:.2f} V  {state.current_a:+.2f} A  {state.power_w:+.0f} W"
            f"  SOC {state.soc_pct:.0f} %  SOH {_num(state.soh_pct, '.0f', '%')}",
            f"temperatures: MOS {_num(state.mos_temperature_c, '.0f', '°C')}  {temperatures}",
            f"MOS: charge {_on(state.charge_mos_on)}  discharge {_on(state.discharge_mos_on)}"
            f"  balancer {_on(state.balancer_on)}",
            f"alarms: {alarms}",
        ]
    )


def render_settings(reading: PackReading) -> str:
    s = reading.settings
    chemistry = s.battery_type.value if s.battery_type else "unknown"
    return "\n".join(
        [
            f"settings: {s.cell_count}S {chemistry} {_num(s.capacity_ah, '.0f', 'Ah')}",
            f"  cell OVP {s.cell_ovp_v:.3f} V / OVPR {s.cell_ovpr_v:.3f} V   UVP {s.cell_uvp_v:.3f} V"
            f" / UVPR {s.cell_uvpr_v:.3f} V",
            f"  max charge {s.max_charge_current_a:.0f} A   max discharge {s.max_discharge_current_a:.0f} A",
            f"  charge temperature window {_num(s.charge_utp_c, '.0f', '°C')} … {_num(s.charge_otp_c, '.0f', '°C')}"
            f"   MOS OTP {_num(s.mos_otp_c, '.0f', '°C')} / OTPR {_num(s.mos_otpr_c, '.0f', '°C')}",
            f"  balance from {_num(s.balance_start_v, '.3f', 'V')} at Δ {_num(s.balance_trigger_v, '.3f', 'V')}",
        ]
    )


def render_reading(reading: PackReading, label: str | None = None) -> str:
    """State and settings of one pack; ``label``: its ``P2`` among several (see :func:`render_cells`)."""
    device = reading.device
    title = f"pack {reading.pack_id}" if label is None else f"{label}: pack {reading.pack_id}"
    if device.model or device.software_version:
        title += f"  ({device.model or '?'}, sw {device.software_version or '?'})"
    return "\n".join([title, render_state(reading, label), render_settings(reading)])


def _on(flag: bool) -> str:
    return "on" if flag else "off"


LIMIT_ROWS: tuple[tuple[str, str, str, str], ...] = (
    ("CVL", "charge_voltage_limit_v", ".2f", "V"),
    ("CCL", "charge_current_limit_a", ".1f", "A"),
    ("DCL", "discharge_current_limit_a", ".1f", "A"),
    ("DVL", "discharge_voltage_limit_v", ".2f", "V"),
)


def render_limits(limits: Limits, indent: str = "  ") -> str:
    """Each limit with the limiter that set it and why."""
    lines = []
    for label, key, fmt, unit in LIMIT_ROWS:
        value: float = getattr(limits, key)
        reason = limits.reasons.get(key)
        why = f"{reason.limiter}: {reason.reason}" if reason else ""
        lines.append(f"{indent}{label} {value:{fmt}} {unit}".ljust(len(indent) + 16) + why)
    flags = (
        f"charge {_yes(limits.charge_enable)}  discharge {_yes(limits.discharge_enable)}"
        f"  force charge {_yes(limits.force_charge)}  full charge request {_yes(limits.full_charge_request)}"
    )
    soc = "" if limits.soc_pct is None else f"  SOC sent {limits.soc_pct:.0f} %"
    phase = "" if limits.charge_phase is None else f"  phase {limits.charge_phase}"
    lines.append(f"{indent}{flags}{soc}{phase}")
    return "\n".join(lines)


def render_thresholds(t: Thresholds, indent: str = "  ") -> str:
    """The derived thresholds, per cell, with where each came from."""
    o = t.origins

    def row(label: str, text: str, origin_key: str) -> str:
        return f"{indent}{label:<25}{text:<28}{o.get(origin_key, 'derived')}"

    return "\n".join(
        [
            row("chemistry", t.chemistry.value, "chemistry"),
            row("charge ceiling", f"{t.charge_ceiling_a:.1f} A", "charge_ceiling_a"),
            row("discharge ceiling", f"{t.discharge_ceiling_a:.1f} A", "discharge_ceiling_a"),
            row("bulk / float", f"{t.bulk_cell_v:.3f} / {t.float_cell_v:.3f} V", "bulk_cell_v"),
            row("charge taper", f"{t.charge_knee_v:.3f} → 0 A at {t.charge_cutoff_v:.3f} V", "charge_cutoff_cell_v"),
            row("charge resumes below", f"{t.charge_release_v:.3f} V", "charge_release_v"),
            row(
                "discharge taper",
                f"{t.discharge_knee_v:.3f} → 0 A at {t.discharge_cutoff_v:.3f} V",
                "discharge_cutoff_cell_v",
            ),
            row("discharge resumes above", f"{t.discharge_release_v:.3f} V", "discharge_release_v"),
            row(
                "charge window",
                f"{t.charge_window.low_c:g} … {t.charge_window.high_c:g} °C",
                "charge_window",
            ),
            row(
                "discharge window",
                f"{t.discharge_window.low_c:g} … {t.discharge_window.high_c:g} °C",
                "discharge_window",
            ),
            row("MOS OTP / OTPR", f"{t.mos_otp_c:g} / {t.mos_otpr_c:g} °C", "mos_otp_c"),
            *(f"{indent}audit {f.line()}" for f in t.findings),
        ]
    )


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"
