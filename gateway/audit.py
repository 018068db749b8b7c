"""The BMS settings audit: the JK manual's rules checked against what the BMS reports (pure).

Each :class:`Finding` names its rule, the BMS's value and the value to set. Findings never stop the gateway:
``info`` and ``warning`` are advice; an ``error`` is a combination that is unsafe (a protection above the
chemistry's absolute limit, a recovery on the wrong side of its trip), and the limits engine then lowers its
current ceilings (:data:`UNSAFE_CEILING_FRACTION`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from gateway.chemistry import MOS_OTP_C, MOS_OTPR_C, PRESETS, infer_chemistry
from gateway.model import Chemistry, ProtectionSettings

UNSAFE_CEILING_FRACTION: Final = 0.5
"""With an unsafe finding, the charge and discharge ceilings are this fraction of what they would be."""
LARGE_CELL_AH: Final = 50.0
"""Above this capacity the manual wants a 5 mV balance trigger; at or below it 10 mV."""
BALANCE_C_RATE: Final = 0.1
"""The manual's largest balance current, as a fraction of the capacity (0.1 C)."""


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Finding:
    rule: str
    """Short rule name, e.g. ``"balance_trigger"``."""
    severity: Severity
    message: str
    """One line: what is wrong and why it matters."""
    bms_value: str
    suggested: str

    def line(self) -> str:
        return f"{self.severity.value}: {self.rule}: {self.message} (BMS {self.bms_value}, suggested {self.suggested})"

    def to_json(self) -> dict[str, str]:
        return {
            "rule": self.rule,
            "severity": self.severity.value,
            "message": self.message,
            "bms_value": self.bms_value,
            "suggested": self.suggested,
        }


# Usual setting ranges per chemistry (V per cell): JK's presets and cell datasheets.
USUAL_OVP_V: Final = {Chemistry.LIFEPO4: (3.50, 3.65), Chemistry.LI_ION: (4.10, 4.25), Chemistry.LTO: (2.70, 2.85)}
USUAL_UVP_V: Final = {Chemistry.LIFEPO4: (2.50, 3.00), Chemistry.LI_ION: (2.80, 3.30), Chemistry.LTO: (1.50, 2.00)}


def _v(value: float) -> str:
    return f"{value:.3f} V"


def _c(value: float) -> str:
    return f"{value:g} °C"


def audit_settings(
    bms: ProtectionSettings,
    *,
    reported_cells: int,
    bulk_cell_v: float | None = None,
    chemistry: Chemistry | None = None,
) -> tuple[Finding, ...]:
    """Every finding for ``bms``; ``reported_cells``: cell voltages the BMS reports; ``bulk_cell_v``: the
    gateway's bulk voltage per cell; ``chemistry``: the one the gateway uses (default: the BMS's, else inferred)."""
    findings: list[Finding] = []

    def add(rule: str, severity: Severity, message: str, bms_value: str, suggested: str) -> None:
        findings.append(Finding(rule, severity, message, bms_value, suggested))

    if bms.cell_count != reported_cells:
        # The gateway counts the cells it measures (a CVL from a count one too high is 3.666 V per cell on 16
        # cells: above OVP, battery-safety audit P12); the setting is wrong either way.
        add(
            "cell_count",
            Severity.ERROR,
            f"the cell-count setting differs from the {reported_cells} cells the BMS measures; the gateway counts "
            f"{reported_cells}",
            str(bms.cell_count),
            str(reported_cells),
        )

    inferred = infer_chemistry(bms.cell_ovp_v)
    used = chemistry or bms.battery_type or inferred
    if bms.battery_type is not None and bms.battery_type != inferred:
        if used == inferred:
            add(
                "battery_type",
                Severity.WARNING,
                f"battery type {bms.battery_type.value} does not fit cell OVP {_v(bms.cell_ovp_v)}; "
                f"the gateway charges as {used.value}",
                bms.battery_type.value,
                f"{inferred.value}, or an OVP for {bms.battery_type.value}",
            )
        else:
            # Charging as the type would aim at voltages the OVP contradicts (an LTO bulk on LiFePO4 cells: CVL
            # below the pack and below DVL, battery-safety audit P7): no charging until it is resolved.
            add(
                "battery_type",
                Severity.ERROR,
                f"battery type {bms.battery_type.value} does not fit cell OVP {_v(bms.cell_ovp_v)}: charging is "
                "blocked until one of them is corrected",
                bms.battery_type.value,
                f"{inferred.value}, or an OVP for {bms.battery_type.value}",
            )
    preset = PRESETS[used]

    if bms.cell_ovp_v > preset.absolute_max_cell_v:
        add(
            "ovp_absolute",
            Severity.ERROR,
            f"cell OVP above the {used.value} maximum: cells can be overcharged before the BMS acts",
            _v(bms.cell_ovp_v),
            f"≤ {_v(preset.absolute_max_cell_v)}",
        )
    if bms.cell_uvp_v < preset.absolute_min_cell_v:
        add(
            "uvp_absolute",
            Severity.ERROR,
            f"cell UVP below the {used.value} minimum: cells can be over-discharged before the BMS acts",
            _v(bms.cell_uvp_v),
            f"≥ {_v(preset.absolute_min_cell_v)}",
        )
    low, high = USUAL_OVP_V[used]
    if not low <= bms.cell_ovp_v <= high:
        add(
            "ovp_range",
            Severity.INFO,
            f"cell OVP outside the usual {used.value} range",
            _v(bms.cell_ovp_v),
            f"{low}–{high} V",
        )
    low, high = USUAL_UVP_V[used]
    if not low <= bms.cell_uvp_v <= high:
        add(
            "uvp_range",
            Severity.INFO,
            f"cell UVP outside the usual {used.value} range",
            _v(bms.cell_uvp_v),
            f"{low}–{high} V",
        )

    if not bms.cell_ovpr_v < bms.cell_ovp_v:
        add(
            "ovpr",
            Severity.ERROR,
            "OVP recovery must be below OVP, or the BMS re-enables charging at the trip voltage",
            _v(bms.cell_ovpr_v),
            f"< {_v(bms.cell_ovp_v)}, e.g. {_v(bms.cell_ovp_v - 0.1)}",
        )
    if not bms.cell_uvpr_v > bms.cell_uvp_v:
        add(
            "uvpr",
            Severity.ERROR,
            "UVP recovery must be above UVP, or the BMS re-enables discharging at the trip voltage",
            _v(bms.cell_uvpr_v),
            f"> {_v(bms.cell_uvp_v)}, e.g. {_v(bms.cell_uvp_v + 0.2)}",
        )
    if bms.power_off_v is not None and not bms.power_off_v < bms.cell_uvp_v:
        add(
            "power_off",
            Severity.WARNING,
            "power-off voltage must be below cell UVP, or the BMS switches itself off before protecting",
            _v(bms.power_off_v),
            f"< {_v(bms.cell_uvp_v)}",
        )

    capacity = bms.capacity_ah
    if capacity is not None and capacity > 0 and bms.balance_trigger_v is not None:
        wanted = 0.005 if capacity > LARGE_CELL_AH else 0.01
        if abs(bms.balance_trigger_v - wanted) > 1e-4:
            add(
                "balance_trigger",
                Severity.WARNING,
                f"the manual wants {wanted * 1000:g} mV for {'cells above' if wanted == 0.005 else 'cells up to'} "
                f"{LARGE_CELL_AH:g} Ah ({capacity:g} Ah here)",
                _v(bms.balance_trigger_v),
                _v(wanted),
            )
    if capacity is not None and capacity > 0 and bms.max_balance_current_a is not None:
        most = BALANCE_C_RATE * capacity
        if bms.max_balance_current_a > most + 1e-6:
            add(
                "balance_current",
                Severity.WARNING,
                f"max balance current above 0.1 C of {capacity:g} Ah",
                f"{bms.max_balance_current_a:g} A",
                f"≤ {most:g} A",
            )

    _windows(bms, add)

    if (
        bms.mos_otp_c is not None
        and bms.mos_otpr_c is not None
        and (bms.mos_otp_c, bms.mos_otpr_c)
        != (
            MOS_OTP_C,
            MOS_OTPR_C,
        )
    ):
        add(
            "mos_temperature",
            Severity.INFO,
            "MOS OTP / OTPR differ from the manual's (firmware differs; real packs report 80/70 and 90/70)",
            f"{_c(bms.mos_otp_c)} / {_c(bms.mos_otpr_c)}",
            f"{_c(MOS_OTP_C)} / {_c(MOS_OTPR_C)}",
        )

    if bulk_cell_v is not None and bms.balance_start_v is not None and bulk_cell_v < bms.balance_start_v:
        add(
            "balance_start",
            Severity.WARNING,
            f"the gateway's bulk voltage {_v(bulk_cell_v)} is below the balance start voltage: the balancer would "
            "never run (lower the balance start or raise charging.bulk_cell_v)",
            _v(bms.balance_start_v),
            f"≤ {_v(bulk_cell_v)}",
        )
    return tuple(findings)


def _windows(bms: ProtectionSettings, add: Callable[[str, Severity, str, str, str], None]) -> None:
    """Recoveries must sit inside the window they recover into."""
    for side, otp, otpr, utp, utpr in (
        ("charge", bms.charge_otp_c, bms.charge_otpr_c, bms.charge_utp_c, bms.charge_utpr_c),
        ("discharge", bms.discharge_otp_c, bms.discharge_otpr_c, bms.discharge_utp_c, bms.discharge_utpr_c),
    ):
        if otp is not None and otpr is not None and not otpr < otp:
            add(
                f"{side}_otpr",
                Severity.ERROR,
                f"{side} OTP recovery must be below {side} OTP",
                _c(otpr),
                f"< {_c(otp)}, e.g. {_c(otp - 5)}",
            )
        if utp is not None and utpr is not None and not utpr > utp:
            add(
                f"{side}_utpr",
                Severity.ERROR,
                f"{side} UTP recovery must be above {side} UTP",
                _c(utpr),
                f"> {_c(utp)}, e.g. {_c(utp + 5)}",
            )


def is_unsafe(findings: tuple[Finding, ...]) -> bool:
    return any(f.severity is Severity.ERROR for f in findings)
