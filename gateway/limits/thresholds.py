"""The thresholds the limits engine works with, derived once per settings read (pure).

Each threshold remembers where it came from (``BMS``, ``config``, ``default (lifepo4)``, ``derived``), so
that ``bms-gateway check`` can show why the gateway does what it does.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gateway.audit import UNSAFE_CEILING_FRACTION, Finding, Severity, audit_settings, is_unsafe
from gateway.chemistry import MOS_OTP_C, MOS_OTPR_C, PRESETS, infer_chemistry
from gateway.limits.settings import LimitsSettings
from gateway.model import Chemistry, ProtectionSettings

OVP_HEADROOM_V = 0.05
"""The CVL per cell never exceeds OVP minus this, V, whatever the config says."""
CUTOFF_BELOW_OVP_V = 0.05
"""The charge cut-off stays at least this far below cell OVP, V; a configured one above is lowered with a warning."""
LATCH_GAP_V = 0.05
"""A voltage latch releases at least this far inside its trip point, V (when OVPR/UVPR are set too close)."""


@dataclass(frozen=True, slots=True)
class TemperatureWindow:
    """A BMS temperature window and its recovery points, °C."""

    low_c: float
    """Under-temperature protection, °C."""
    low_recovery_c: float
    high_c: float
    """Over-temperature protection, °C."""
    high_recovery_c: float


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Everything the limiters compare against. Voltages per cell, V; currents A; temperatures °C."""

    chemistry: Chemistry
    cell_count: int
    charge_ceiling_a: float
    discharge_ceiling_a: float
    cell_ovp_v: float
    cell_uvp_v: float
    bulk_cell_v: float
    float_cell_v: float
    charge_knee_v: float
    charge_cutoff_v: float
    charge_release_v: float
    """After the cut-off, charging resumes only once the highest cell is below this (OVPR), V."""
    discharge_knee_v: float
    discharge_cutoff_v: float
    discharge_release_v: float
    """After the cut-off, discharging resumes only once the lowest cell is above this (UVPR), V."""
    charge_window: TemperatureWindow
    discharge_window: TemperatureWindow
    mos_otp_c: float
    mos_otpr_c: float
    origins: Mapping[str, str] = field(default_factory=dict)
    """Threshold name → where its value came from."""
    warnings: tuple[str, ...] = ()
    """Problems with the settings that the user should fix, one line each; none stops the gateway."""
    findings: tuple[Finding, ...] = ()
    """The whole settings audit (:mod:`gateway.audit`), information included."""

    @property
    def bulk_pack_v(self) -> float:
        return self.cell_count * self.bulk_cell_v

    @property
    def float_pack_v(self) -> float:
        return self.cell_count * self.float_cell_v

    @property
    def cvl_trim_floor_pack_v(self) -> float:
        """The lowest CVL the weak-cell correction may set: cells × the chemistry's trim floor, V."""
        return min(self.float_pack_v, self.cell_count * PRESETS[self.chemistry].cvl_trim_floor_cell_v)

    @property
    def max_pack_cvl_v(self) -> float:
        """Hard ceiling of the CVL, V."""
        return self.cell_count * (self.cell_ovp_v - OVP_HEADROOM_V)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, TemperatureWindow):
                value = {
                    "low_c": value.low_c,
                    "low_recovery_c": value.low_recovery_c,
                    "high_c": value.high_c,
                    "high_recovery_c": value.high_recovery_c,
                }
            elif isinstance(value, Chemistry):
                value = value.value
            elif isinstance(value, Mapping):
                value = dict(value)
            elif isinstance(value, tuple):
                value = [v.to_json() if isinstance(v, Finding) else v for v in value]
            out[name] = value
        return out


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _preset_bulk(chemistry: Chemistry, cell_ovp_v: float) -> float:
    preset = PRESETS[chemistry]
    return min(preset.bulk_cell_v, min(cell_ovp_v, preset.absolute_max_cell_v) - preset.bulk_below_ovp_v)


def _narrowest(
    windows: Sequence[tuple[tuple[float, float], tuple[float, float]]],
) -> tuple[float, float, float, float]:
    """(low, low recovery, high, high recovery) of the narrowest of these (window, recovery) pairs, °C."""
    return (
        max(w[0][0] for w in windows),
        max(w[1][0] for w in windows),
        min(w[0][1] for w in windows),
        min(w[1][1] for w in windows),
    )


def derive_thresholds(bms: ProtectionSettings, cell_count: int, tuning: LimitsSettings) -> Thresholds:
    """Thresholds for a pack with ``bms`` settings and ``cell_count`` cells, tuned by ``tuning``."""
    origins: dict[str, str] = {}
    warnings: list[str] = []

    inferred = infer_chemistry(bms.cell_ovp_v)
    candidates: tuple[Chemistry, ...] = ()  # set when the BMS's type and OVP disagree
    if tuning.chemistry is not None:
        chemistry, origins["chemistry"] = tuning.chemistry, "config"
    elif bms.battery_type is not None and bms.battery_type == inferred:
        chemistry, origins["chemistry"] = bms.battery_type, "BMS"
    elif bms.battery_type is not None:
        # The battery type contradicts the OVP setting (a LiFePO4 pack left on "Li-ion", or the reverse): one of
        # them is wrong, and only the chemistry with the lower bulk voltage is safe either way.
        candidates = (bms.battery_type, inferred)
        chemistry = min(candidates, key=lambda c: _preset_bulk(c, bms.cell_ovp_v))
        origins["chemistry"] = f"the more cautious of BMS type {bms.battery_type.value} and cell OVP"
    else:
        chemistry, origins["chemistry"] = inferred, "derived from cell OVP"
    preset = PRESETS[chemistry]
    default = f"default ({chemistry.value})"

    ovp, uvp = bms.cell_ovp_v, bms.cell_uvp_v
    # Beyond the chemistry's absolute limits the gateway works as if the BMS were set to them (the audit
    # reports the setting as an error and the ceilings drop).
    ovp = min(ovp, preset.absolute_max_cell_v)
    uvp = max(uvp, preset.absolute_min_cell_v)

    def pick(name: str, configured: float | None, derived: float, how: str) -> float:
        if configured is not None:
            origins[name] = "config"
            return configured
        origins[name] = how
        return derived

    # Ceilings: the user's cap and a fraction of the BMS's own over-current setting, whichever is lower.
    def ceiling(name: str, cap: float, bms_max: float) -> float:
        bms_part = tuning.bms_current_fraction * bms_max if _finite(bms_max) is not None and bms_max > 0 else 0.0
        if cap <= bms_part:
            origins[name] = "config (user cap)"
            return cap
        origins[name] = f"BMS max × {tuning.bms_current_fraction:g}"
        return bms_part

    charge_ceiling = ceiling("charge_ceiling_a", tuning.max_charge_current_a, bms.max_charge_current_a)
    if candidates and chemistry != inferred:
        # The cautious chemistry is the type's, not the OVP's: its voltages contradict the pack (an LTO bulk on
        # LiFePO4 cells puts CVL below the pack and below DVL, battery-safety audit P7). No charging until the
        # user resolves it (the audit's error says how); the CVL lever then holds the pack voltage, above DVL.
        charge_ceiling = 0.0
        origins["charge_ceiling_a"] = "blocked: the BMS's battery type contradicts its cell OVP"
    discharge_ceiling = ceiling("discharge_ceiling_a", tuning.max_discharge_current_a, bms.max_discharge_current_a)

    bulk = pick("bulk_cell_v", tuning.bulk_cell_v, min(preset.bulk_cell_v, ovp - preset.bulk_below_ovp_v), default)
    if bulk > ovp - OVP_HEADROOM_V:
        warnings.append(f"bulk {bulk:.3f} V is too close to cell OVP {ovp:.3f} V: using {ovp - 0.1:.3f} V")
        bulk = ovp - 0.1
    float_v = pick("float_cell_v", tuning.float_cell_v, min(preset.float_cell_v, bulk - 0.05), default)
    float_v = min(float_v, bulk)
    cutoff = pick("charge_cutoff_cell_v", tuning.charge_cutoff_cell_v, (bulk + ovp) / 2, "derived: midway bulk–OVP")
    if cutoff > ovp - CUTOFF_BELOW_OVP_V:
        # Within 50 mV of OVP a runner cell trips the BMS on its next overshoot (audit P9: 3.636 V of 3.65).
        warnings.append(
            f"charge cut-off {cutoff:.3f} V is within {CUTOFF_BELOW_OVP_V * 1000:.0f} mV of cell OVP {ovp:.3f} V: "
            f"using {ovp - CUTOFF_BELOW_OVP_V:.3f} V"
        )
        cutoff = ovp - CUTOFF_BELOW_OVP_V
    knee = pick("charge_knee_cell_v", tuning.charge_knee_cell_v, bulk - preset.charge_knee_below_bulk_v, default)
    knee = min(knee, cutoff - 0.01)
    release = min(bms.cell_ovpr_v, cutoff - LATCH_GAP_V)
    origins["charge_release_v"] = "BMS OVPR" if release == bms.cell_ovpr_v else "derived: cut-off − 0.05 V"

    d_cutoff = pick(
        "discharge_cutoff_cell_v",
        tuning.discharge_cutoff_cell_v,
        uvp + preset.discharge_cutoff_above_uvp_v,
        default,
    )
    d_cutoff = max(d_cutoff, uvp + 0.01)
    d_knee = pick(
        "discharge_knee_cell_v",
        tuning.discharge_knee_cell_v,
        max(preset.discharge_knee_cell_v, d_cutoff + 0.1),
        default,
    )
    d_knee = max(d_knee, d_cutoff + 0.01)
    d_release = max(bms.cell_uvpr_v, d_cutoff + LATCH_GAP_V)
    origins["discharge_release_v"] = "BMS UVPR" if d_release == bms.cell_uvpr_v else "derived: cut-off + 0.05 V"
    if d_knee >= knee:
        warnings.append(f"discharge taper {d_knee:.3f} V overlaps the charge taper {knee:.3f} V: check the settings")

    def window(
        name: str, values: tuple[float | None, ...], fallback: tuple[float, float, float, float]
    ) -> TemperatureWindow:
        chosen: list[float] = [f if (c := _finite(v)) is None else c for v, f in zip(values, fallback, strict=True)]
        carried = sum(_finite(v) is not None for v in values)
        how = f"default (narrower of {' and '.join(c.value for c in candidates)})" if candidates else default
        origins[name] = "BMS" if carried == len(values) else how if carried == 0 else f"BMS, gaps {how}"
        return TemperatureWindow(*chosen)

    # The temperature defaults: with the type and OVP in disagreement, the narrower window of the two in each
    # bound (the lower-bulk chemistry may be the one that charges below 0 °C: LTO beside LiFePO4).
    presets = [PRESETS[c] for c in candidates] or [preset]
    charge_window = window(
        "charge_window",
        (bms.charge_utp_c, bms.charge_utpr_c, bms.charge_otp_c, bms.charge_otpr_c),
        _narrowest([(p.charge_window_c, p.charge_recovery_c) for p in presets]),
    )
    discharge_window = window(
        "discharge_window",
        (bms.discharge_utp_c, bms.discharge_utpr_c, bms.discharge_otp_c, bms.discharge_otpr_c),
        _narrowest([(p.discharge_window_c, p.discharge_recovery_c) for p in presets]),
    )
    mos_otp = _finite(bms.mos_otp_c)
    mos_otpr = _finite(bms.mos_otpr_c)
    origins["mos_otp_c"] = "BMS" if mos_otp is not None else "default (JK manual)"
    origins["mos_otpr_c"] = "BMS" if mos_otpr is not None else "default (JK manual)"

    findings = audit_settings(bms, reported_cells=cell_count, bulk_cell_v=bulk, chemistry=chemistry)
    warnings += [f.line() for f in findings if f.severity is not Severity.INFO]
    if is_unsafe(findings):
        charge_ceiling *= UNSAFE_CEILING_FRACTION
        discharge_ceiling *= UNSAFE_CEILING_FRACTION
        for name in ("charge_ceiling_a", "discharge_ceiling_a"):
            origins[name] += f", × {UNSAFE_CEILING_FRACTION:g}: unsafe BMS settings"

    def r(value: float) -> float:
        return round(value, 4)

    return Thresholds(
        chemistry=chemistry,
        cell_count=cell_count,
        charge_ceiling_a=charge_ceiling,
        discharge_ceiling_a=discharge_ceiling,
        cell_ovp_v=ovp,
        cell_uvp_v=uvp,
        bulk_cell_v=r(bulk),
        float_cell_v=r(float_v),
        charge_knee_v=r(knee),
        charge_cutoff_v=r(cutoff),
        charge_release_v=r(release),
        discharge_knee_v=r(d_knee),
        discharge_cutoff_v=r(d_cutoff),
        discharge_release_v=r(d_release),
        charge_window=charge_window,
        discharge_window=discharge_window,
        mos_otp_c=mos_otp if mos_otp is not None else MOS_OTP_C,
        mos_otpr_c=mos_otpr if mos_otpr is not None else MOS_OTPR_C,
        origins=origins,
        warnings=tuple(warnings),
        findings=findings,
    )
