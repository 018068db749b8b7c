"""Per-chemistry facts and defaults: the one place that states them.

Used where a BMS protocol does not carry a setting (the JK-PB has no battery-type register, some firmware
has no charge-temperature window), and as the base of the charge thresholds the limits engine derives.
Every number is per cell unless the name says otherwise.

Sources: cell datasheets (LiFePO4 3.65 V max charge, 2.5 V min, 3.2 V nominal; NMC 4.20 V, 3.7 V nominal; LTO
2.80 V; unverified: the LTO nominal voltage, sold as 2.3 V (Toshiba SCiB) and as 2.4 V by other makers, 2.4 V
here), the JK BMS
manual (MOS OTP 75 °C / OTPR 65 °C) and the peers' defaults in ``charge_logic.md`` (LiFePO4 bulk 3.45 V,
float 3.375 V, discharge taper from 3.10 V). The deep-discharge thresholds (recovery current, no charge) cite
their sources beside each value in :data:`PRESETS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from gateway.model import Chemistry


@dataclass(frozen=True, slots=True)
class ChemistryPreset:
    """What the gateway assumes about one cell chemistry."""

    chemistry: Chemistry
    nominal_cell_v: float
    """Nominal (rated) cell voltage, V: what a pack's rated voltage counts per cell."""
    cvl_trim_floor_cell_v: float
    """The weak-cell correction may lower CVL down to cells × this (and no further), V: dbus-serialbattery's
    floor (MIN_CELL_VOLTAGE, 2.9 V for LiFePO4), not cells × float, so CVL stays a lever against a runner cell
    for a charger that follows only CVL. unverified for NMC (3.2 V) and LTO (2.0 V): the same margin above
    their discharge cut-off."""
    absolute_max_cell_v: float
    """No cell of this chemistry may ever be charged above this, V (datasheet maximum)."""
    absolute_min_cell_v: float
    """No cell of this chemistry may ever be discharged below this, V."""
    recovery_charge_below_cell_v: float
    """A cell at or below this is deeply discharged: charging is limited to the recovery current (``limits.
    recovery_current_c``) until it is 0.1 V above it, V. Never below :attr:`absolute_min_cell_v`."""
    no_charge_below_cell_v: float
    """A cell at or below this is not charged at all (0 A: it needs a person to check it), V. Below
    :attr:`recovery_charge_below_cell_v`."""
    bulk_cell_v: float
    """Preferred bulk/absorption voltage, V; lowered to OVP − :attr:`bulk_below_ovp_v` when OVP is low."""
    bulk_below_ovp_v: float
    """Least distance of the bulk voltage below cell OVP, V."""
    float_cell_v: float
    """Preferred float voltage, V; at most bulk − 0.05 V."""
    charge_knee_below_bulk_v: float
    """The charge current starts to taper this far below the bulk voltage, V."""
    discharge_knee_cell_v: float
    """The discharge current starts to taper when the lowest cell falls below this, V."""
    discharge_cutoff_above_uvp_v: float
    """The discharge current is 0 this far above cell UVP, V."""
    charge_window_c: tuple[float, float]
    """Charge UTP and OTP when the BMS does not report them, °C."""
    charge_recovery_c: tuple[float, float]
    """Charge UTPR and OTPR when the BMS does not report them, °C."""
    discharge_window_c: tuple[float, float]
    """Discharge UTP and OTP when the BMS does not report them, °C."""
    discharge_recovery_c: tuple[float, float]
    """Discharge UTPR and OTPR when the BMS does not report them, °C."""


MOS_OTP_C: Final = 75.0
"""MOS over-temperature protection when the BMS does not report it, °C (JK manual)."""
MOS_OTPR_C: Final = 65.0
"""MOS over-temperature recovery when the BMS does not report it, °C (JK manual)."""

PRESETS: Final[Mapping[Chemistry, ChemistryPreset]] = MappingProxyType(
    {
        Chemistry.LIFEPO4: ChemistryPreset(
            chemistry=Chemistry.LIFEPO4,
            nominal_cell_v=3.2,
            cvl_trim_floor_cell_v=2.9,
            absolute_max_cell_v=3.65,
            absolute_min_cell_v=2.50,
            # 2.5 V: the LiFePO4 discharge cut-off of cell makers' datasheets (EVE LF280K, CATL: not opened here, no
            # datasheet in the searchable stores) and Libre Solar's LFP cell UV limit (LibreSolar/bms-firmware,
            # app/src/bms_common.c: cell_uv_limit = 2.50F); below it, charge at the recovery current only.
            recovery_charge_below_cell_v=2.50,
            # 2.0 V: the same file says "most cells survive even 2.0V", the lowest a peer calls survivable; unverified
            # by a cell maker (no datasheet found that says what may be charged below it), so nothing is.
            no_charge_below_cell_v=2.00,
            bulk_cell_v=3.45,
            bulk_below_ovp_v=0.10,
            float_cell_v=3.375,
            charge_knee_below_bulk_v=0.05,
            discharge_knee_cell_v=3.10,
            discharge_cutoff_above_uvp_v=0.10,
            charge_window_c=(0.0, 45.0),
            charge_recovery_c=(5.0, 40.0),
            discharge_window_c=(-20.0, 60.0),
            discharge_recovery_c=(-15.0, 55.0),
        ),
        Chemistry.LI_ION: ChemistryPreset(
            chemistry=Chemistry.LI_ION,
            nominal_cell_v=3.7,
            cvl_trim_floor_cell_v=3.2,
            absolute_max_cell_v=4.25,
            absolute_min_cell_v=2.80,
            # 3.0 V: TI's Li-ion chargers precharge at a reduced current below it (BQ25895 datasheet SLUSC88C,
            # REG06 BATLOWV "Battery Precharge to Fast Charge Threshold", default 3.0 V; BQ25700A SLUSCQ8A, 1-cell
            # pre-charge to fast charge threshold 3 V) and Libre Solar's NMC cell UV limit is 3.00 V
            # (LibreSolar/bms-firmware, app/src/bms_common.c). Above today's absolute minimum 2.80 V.
            recovery_charge_below_cell_v=3.00,
            # unverified: no maker's figure found. TI chargers inhibit charging below their battery-short threshold
            # (BQ25308 datasheet SLUSFD7, "VBAT_SHORT: charge inhibited"; its value was not in the stored text);
            # German Wikipedia ("Tiefentladung", quoted by dwaves.de) says a Li-ion cell below 1.5 V should not be
            # used again. 2.0 V keeps LiFePO4's margin above that.
            no_charge_below_cell_v=2.00,
            bulk_cell_v=4.10,
            bulk_below_ovp_v=0.10,
            float_cell_v=4.00,
            charge_knee_below_bulk_v=0.05,
            discharge_knee_cell_v=3.50,
            discharge_cutoff_above_uvp_v=0.20,
            charge_window_c=(0.0, 45.0),
            charge_recovery_c=(5.0, 40.0),
            discharge_window_c=(-20.0, 60.0),
            discharge_recovery_c=(-15.0, 55.0),
        ),
        Chemistry.LTO: ChemistryPreset(
            chemistry=Chemistry.LTO,
            nominal_cell_v=2.4,
            cvl_trim_floor_cell_v=2.0,
            absolute_max_cell_v=2.85,
            absolute_min_cell_v=1.50,
            # 1.5 V: Toshiba's SCiB operating range is 2.8–1.7 V above 0 °C and 2.8–1.5 V below (AABC 2008, reported
            # at greencarcongress.com/2008/05/toshiba-develop.html); the lower one, today's absolute minimum.
            recovery_charge_below_cell_v=1.50,
            # unverified: no maker's figure found for charging an LTO cell below its range; 1.0 V keeps the 0.5 V
            # step below the recovery threshold that LiFePO4 has (2.5 → 2.0 V).
            no_charge_below_cell_v=1.00,
            bulk_cell_v=2.70,
            bulk_below_ovp_v=0.10,
            float_cell_v=2.60,
            charge_knee_below_bulk_v=0.05,
            discharge_knee_cell_v=2.10,
            discharge_cutoff_above_uvp_v=0.10,
            charge_window_c=(-20.0, 55.0),
            charge_recovery_c=(-15.0, 50.0),
            discharge_window_c=(-30.0, 60.0),
            discharge_recovery_c=(-25.0, 55.0),
        ),
    }
)


def infer_chemistry(cell_ovp_v: float) -> Chemistry:
    """The chemistry a cell OVP setting implies, for BMS protocols without a battery-type setting."""
    if cell_ovp_v <= 3.0:
        return Chemistry.LTO
    if cell_ovp_v <= 3.9:
        return Chemistry.LIFEPO4
    return Chemistry.LI_ION
