"""The settings audit: each rule of the JK manual, on settings from the real frames and on crafted bad ones."""

from __future__ import annotations

from dataclasses import replace

import pytest
from jk_frames import REPLIES

from gateway.audit import Severity, audit_settings, is_unsafe
from gateway.bms.jk_nw_codec import decode_reply
from gateway.bms.jk_nw_model import to_reading
from gateway.model import Chemistry, PackReading, ProtectionSettings


def real_readings() -> dict[str, PackReading]:
    """The five real replies (tests/data/jk_nw_frames.json), by their id A–E."""
    return {reply.id: to_reading(decode_reply(reply.frame), 0.0, reply.id) for reply in REPLIES}


REAL = real_readings()


def rules(bms: ProtectionSettings, cells: int, **kwargs: object) -> dict[str, Severity]:
    return {f.rule: f.severity for f in audit_settings(bms, reported_cells=cells, **kwargs)}  # type: ignore[arg-type]


def test_the_real_frames_are_all_here() -> None:
    assert sorted(REAL) == ["A", "B", "C", "D", "E"]


def test_frame_a_14_ah_li_ion_with_an_8_mv_trigger() -> None:
    # 14S Li-ion, 14 Ah (≤ 50 Ah: the manual wants 10 mV), trigger 8 mV; MOS 90/70 °C is not the manual's 75/65.
    found = rules(REAL["A"].settings, 14)
    assert found["balance_trigger"] is Severity.WARNING
    assert found["mos_temperature"] is Severity.INFO
    assert "battery_type" not in found  # Li-ion type, OVP 4.05 V: consistent
    assert not is_unsafe(audit_settings(REAL["A"].settings, reported_cells=14))


def test_frame_c_lifepo4_pack_set_to_li_ion() -> None:
    # 16S, OVP 3.65 V (a LiFePO4 value) but battery type Li-ion; 81 Ah > 50 Ah wants 5 mV, the BMS has 10 mV.
    findings = audit_settings(REAL["C"].settings, reported_cells=16, chemistry=Chemistry.LIFEPO4)
    by_rule = {f.rule: f for f in findings}
    assert by_rule["battery_type"].severity is Severity.WARNING
    assert by_rule["battery_type"].suggested.startswith("lifepo4")
    assert by_rule["balance_trigger"].bms_value == "0.010 V"
    assert by_rule["balance_trigger"].suggested == "0.005 V"


def test_frame_e_234_ah_with_a_50_mv_trigger() -> None:
    found = rules(REAL["E"].settings, 14)
    assert found["balance_trigger"] is Severity.WARNING  # 50 mV, the manual wants 5 mV above 50 Ah


def test_frame_b_is_consistent_apart_from_the_mos_window() -> None:
    # 13S Li-ion 5 Ah, OVP 4.20 / OVPR 4.10, UVP 2.90 / UVPR 3.20, trigger 10 mV (≤ 50 Ah): nothing but MOS.
    assert set(rules(REAL["B"].settings, 13)) == {"mos_temperature"}


BASE = replace(
    REAL["C"].settings,
    battery_type=Chemistry.LIFEPO4,
    capacity_ah=280.0,
    balance_trigger_v=0.005,
    max_balance_current_a=2.0,
    mos_otp_c=75.0,
    mos_otpr_c=65.0,
    charge_otp_c=45.0,
    charge_otpr_c=40.0,
    discharge_otp_c=60.0,
    discharge_otpr_c=55.0,
    cell_uvp_v=2.80,
    cell_uvpr_v=3.00,
)


def test_a_well_set_pack_has_no_findings() -> None:
    assert audit_settings(BASE, reported_cells=16, bulk_cell_v=3.45) == ()


@pytest.mark.parametrize(
    ("change", "cells", "rule", "severity"),
    [
        ({"cell_count": 15}, 16, "cell_count", Severity.ERROR),
        ({"capacity_ah": 40.0}, 16, "balance_trigger", Severity.WARNING),  # ≤ 50 Ah wants 10 mV
        ({"max_balance_current_a": 30.0}, 16, "balance_current", Severity.WARNING),  # > 0.1 C of 280 Ah
        ({"power_off_v": 2.9}, 16, "power_off", Severity.WARNING),  # not below UVP 2.80
        ({"cell_ovpr_v": 3.65}, 16, "ovpr", Severity.ERROR),  # OVPR = OVP
        ({"cell_uvpr_v": 2.75}, 16, "uvpr", Severity.ERROR),  # UVPR below UVP
        ({"charge_otpr_c": 50.0}, 16, "charge_otpr", Severity.ERROR),
        ({"charge_utp_c": 0.0, "charge_utpr_c": -2.0}, 16, "charge_utpr", Severity.ERROR),
        ({"discharge_otpr_c": 65.0}, 16, "discharge_otpr", Severity.ERROR),
        ({"mos_otp_c": 80.0, "mos_otpr_c": 70.0}, 16, "mos_temperature", Severity.INFO),
        ({"cell_ovp_v": 3.75}, 16, "ovp_absolute", Severity.ERROR),  # LiFePO4 maximum 3.65 V
        ({"cell_uvp_v": 2.3}, 16, "uvp_absolute", Severity.ERROR),  # LiFePO4 minimum 2.50 V
        ({"cell_ovp_v": 3.45, "cell_ovpr_v": 3.35}, 16, "ovp_range", Severity.INFO),  # usual 3.50–3.65
        ({"balance_start_v": 3.50}, 16, "balance_start", Severity.WARNING),  # bulk 3.45 < 3.50
    ],
)
def test_each_rule(change: dict[str, object], cells: int, rule: str, severity: Severity) -> None:
    found = rules(replace(BASE, **change), cells, bulk_cell_v=3.45)  # type: ignore[arg-type]
    assert found.get(rule) is severity, found


def test_a_finding_line_names_rule_value_and_suggestion() -> None:
    (finding,) = audit_settings(replace(BASE, max_balance_current_a=30.0), reported_cells=16)
    assert finding.line() == (
        "warning: balance_current: max balance current above 0.1 C of 280 Ah (BMS 30 A, suggested ≤ 28 A)"
    )
