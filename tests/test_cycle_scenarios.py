"""The charge-cycle scenarios of ``tests/data/scenarios/``: one per case of the battery-safety audit
(``../shared/audits/2026-12-07-battery-safety.md``, section 3 "Safety problems" and the cases that held up).

Each runs through the service's own control loop (:mod:`gateway.sim.cycle_run`) and its summary is checked
against what a safe gateway must achieve. Where today's engine does not, the test is a strict expected failure
whose reason gives the audit's figure: the next issue (the engine's second levers) turns them green, and a
strict xfail makes sure it is noticed when one passes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from gateway.sim.cycle_run import ScenarioRun, run_scenario
from gateway.sim.cycle_summary import ScenarioSummary
from gateway.sim.scenario_file import load_scenario

SCENARIOS = Path(__file__).parent / "data" / "scenarios"
OVP_V = 3.65
"""The simulated LiFePO4 BMS's cell OVP (every scenario here keeps it)."""


WITH_ROWS = frozenset({"c21-rebulk-cell-voltage", "c21-rebulk-days", "c21-inverter-offset", "c21-soc-ccl-taper"})
"""Scenarios whose checks read the trace (what the inverter heard, step by step), not only the summary."""


@cache
def summary_of(name: str) -> ScenarioSummary:
    """The run of ``tests/data/scenarios/<name>.yaml`` (each file is run once per session)."""
    if name in WITH_ROWS:
        return run_of(name).summary
    return run_scenario(load_scenario(SCENARIOS / f"{name}.yaml")).summary


@cache
def run_of(name: str) -> ScenarioRun:
    """The run of one of :data:`WITH_ROWS`, with its rows."""
    assert name in WITH_ROWS, name
    return run_scenario(load_scenario(SCENARIOS / f"{name}.yaml"), keep_rows=True)


def no_trip_and_nothing_charged_cold(s: ScenarioSummary) -> None:
    assert s.trip_count == 0, [(t.pack, t.trip.kind, t.trip.detail) for t in s.trips[:5]]
    assert not s.charged_outside_window, s.charge_outside_window_ah


@dataclass(frozen=True)
class Case:
    name: str
    check: Callable[[ScenarioSummary], None]
    fails_today: str | None = None
    """The audit's figure, for the cases today's engine fails (a strict expected failure)."""


def _baseline(s: ScenarioSummary) -> None:
    no_trip_and_nothing_charged_cold(s)
    assert s.float_reached_s is not None and s.float_reached_s <= 160 * 60  # audit: float at 156.5 min
    assert s.max_cell_v < 3.50 and s.enable_toggles == 0
    assert s.min_cell_v >= 2.80  # discharged to the cut-off, not to UVP


def _fails_closed(s: ScenarioSummary) -> None:
    no_trip_and_nothing_charged_cold(s)
    assert s.float_reached_s is None and s.max_cell_v < 3.30  # nothing was charged


def _reaches_float_without_trip(s: ScenarioSummary) -> None:
    no_trip_and_nothing_charged_cold(s)
    assert s.float_reached_s is not None


def _ccl_steady(s: ScenarioSummary) -> None:
    no_trip_and_nothing_charged_cold(s)
    assert s.max_changes_per_min["ccl"] <= 10  # the obedient baseline's order (8 per minute while it ramps)


def _no_enable_pulses(s: ScenarioSummary) -> None:
    no_trip_and_nothing_charged_cold(s)
    # The weak cell's cut-off clears charging once (one toggle, for good); a pulse is an off-on pair.
    assert s.enable_toggles <= 1


def _no_pack_over_its_bms(s: ScenarioSummary) -> None:
    no_trip_and_nothing_charged_cold(s)
    assert max(s.max_pack_current_over_bms_limit_a) == 0.0


def _calm_cvl(s: ScenarioSummary) -> None:
    # A saw-tooth is CVL rising again and again; at 1 mV/s and the frame's 0.1 V that is one rise per 100 s.
    # Falls are not counted: a runner cell or a block lowers CVL at once, by design.
    assert s.max_changes_per_min["cvl_rises"] <= 1


def _margin_from_ovp(s: ScenarioSummary) -> None:
    assert s.max_cell_v <= OVP_V - 0.05


# --- the peers' charge features (issue 21): each on top of the obedient baseline ----------------------------------


def _tail_current_floats_earlier(s: ScenarioSummary) -> None:
    no_trip_and_nothing_charged_cold(s)
    # Measured: float at 144.9 min against the baseline's 153.6 (the tail current ends the balanced wait).
    baseline_float_s = summary_of("01-baseline-obeys").float_reached_s
    assert s.float_reached_s is not None and baseline_float_s is not None
    assert s.float_reached_s <= baseline_float_s - 5 * 60


def _rebulks_on_cell_voltage(s: ScenarioSummary) -> None:
    no_trip_and_nothing_charged_cold(s)
    rows = run_of("c21-rebulk-cell-voltage").rows
    back = [r for r in rows if r.stage == "discharge" and r.heard is not None and r.heard.cvl_v >= 55.2]
    # Measured: CVL back at bulk (55.2 V) at SOC 89 %, the highest cell just below 3.30 V; the baseline re-bulks
    # only on its SOC rule, at 79.5 %.
    assert back, "no re-bulk during the discharge"
    assert back[0].pack_soc_pct[0] > 85.0 and back[0].pack_max_cell_v[0] < 3.30


def _rebulks_after_the_days_in_float(s: ScenarioSummary) -> None:
    no_trip_and_nothing_charged_cold(s)
    assert s.float_reached_s is not None
    heard = [(r.time_s, r.heard.cvl_v) for r in run_of("c21-rebulk-days").rows if r.heard is not None]
    back = [t for t, cvl in heard if t > s.float_reached_s and cvl >= 55.2]
    # Measured: float at 153.6 min, CVL back at bulk at 225.6 (72 min = 0.05 days later), float again by 244 min.
    assert back and back[0] >= s.float_reached_s + 0.05 * 86400 - 60
    assert any(t > back[0] and cvl <= 54.5 for t, cvl in heard), "no float after the re-bulk"
    _margin_from_ovp(s)


def _offset_shifts_cvl_within_the_cap(s: ScenarioSummary) -> None:
    no_trip_and_nothing_charged_cold(s)
    heard = [r.heard for r in run_of("c21-inverter-offset").rows if r.heard is not None]
    assert max(h.cvl_v for h in heard) == pytest.approx(55.6)  # bulk 16 × 3.45 + 0.4
    # This inverter reads the true voltage, so the offset is wrong here: the cells go higher than the baseline's
    # (measured: the weak cell at 3.549 V against 3.473 V), held by the cut-off and trim, with the OVP margin kept.
    _margin_from_ovp(s)


def _soc_taper_limits_ccl_near_full(s: ScenarioSummary) -> None:
    no_trip_and_nothing_charged_cold(s)
    assert s.float_reached_s is not None
    rows = [r for r in run_of("c21-soc-ccl-taper").rows if r.heard is not None and r.stage == "charge"]
    # The simulated BMS's SOC is the pack's; the ceiling is 90 A: half from 90 %, a fifth from 95 %.
    assert max(r.heard.ccl_a for r in rows if r.pack_soc_pct[0] >= 95.5) <= 18.0  # type: ignore[union-attr]
    assert max(r.heard.ccl_a for r in rows if 90.5 <= r.pack_soc_pct[0] < 95.0) <= 45.0  # type: ignore[union-attr]


CASES = (
    Case("01-baseline-obeys", _baseline),
    Case("p1-overshoot-ocp-delay-10s", no_trip_and_nothing_charged_cold),  # audit P1 case 56: 133 charge OCP trips
    # Audit P2 case 13 (3 cell OVP trips, 3.652 V): green since CVL is the second lever.
    Case("p2-cvl-only-weak-cell", no_trip_and_nothing_charged_cold),
    # Audit P13 (CVL saw-tooth in absorption, 6 changes per minute): green since CVL rises at most 1 mV/s, also
    # into float and after a block (it used to step back up to absorption's CVL at once).
    Case("p2-cvl-only-weak-cell", _calm_cvl),
    Case("p2-cvl-only-weak-cell-10pct", no_trip_and_nothing_charged_cold),  # audit P2 case 45: 2 OVP trips
    Case("p2-cvl-only-10kw", no_trip_and_nothing_charged_cold),  # audit P2 case 06: 49 charge OCP trips
    Case("p2-cvl-only-cold", no_trip_and_nothing_charged_cold),  # audit P2 case 25: charged to absorption at 1 °C
    Case("p3-silent-cold-pack", no_trip_and_nothing_charged_cold),  # audit P3 case 42: the 1 °C pack took 49.5 Ah
    Case("p3-silent-weak-pack", no_trip_and_nothing_charged_cold),  # audit P3 case 43: 3 cell OVP + 2 charge OCP
    Case("p4-flaky-pack", _ccl_steady),  # audit P4 case 44: CCL 270 <-> 180 A, 31 changes per minute
    Case("p5-slow-inverter", _no_enable_pulses),  # audit P5 case 50: 6 enable toggles (was 1 pulse since rule 3)
    Case("p6-unequal-packs-overshoot", _no_pack_over_its_bms),  # audit P6 case 55: 118.9 A in a 100 A pack
    Case("p8-restarts", _reaches_float_without_trip),  # audit P8 case 47: float never reached in 8 h
    Case("p9-cutoff-clamped", no_trip_and_nothing_charged_cold),
    # Audit P9 case 49 (the weak cell at 3.636 V, 14 mV from OVP): green since the cut-off stays 50 mV below OVP.
    Case("p9-cutoff-clamped", _margin_from_ovp),
    Case("p10-load-ignores-dcl", no_trip_and_nothing_charged_cold),  # audit P10 case 52: 1 cell UVP trip
    Case("p12-cell-count-mismatch", _fails_closed),
    Case("cold-minus-5", _fails_closed),
    Case("warming-morning", _reaches_float_without_trip),
    Case("self-heating", _reaches_float_without_trip),
    Case("nmc-14s", _reaches_float_without_trip),
    Case("lto-20s", _reaches_float_without_trip),
    Case("c21-tail-current", _tail_current_floats_earlier),
    Case("c21-rebulk-cell-voltage", _rebulks_on_cell_voltage),
    Case("c21-rebulk-days", _rebulks_after_the_days_in_float),
    Case("c21-inverter-offset", _offset_shifts_cvl_within_the_cap),
    Case("c21-soc-ccl-taper", _soc_taper_limits_ccl_near_full),
)


def _param(case: Case) -> object:
    marks = [pytest.mark.xfail(strict=True, reason=case.fails_today)] if case.fails_today else []
    return pytest.param(case, id=f"{case.name}-{case.check.__name__.strip('_')}", marks=marks)


@pytest.mark.parametrize("case", [_param(case) for case in CASES])
def test_scenario(case: Case) -> None:
    case.check(summary_of(case.name))


def test_every_scenario_file_is_checked() -> None:
    assert {path.stem for path in SCENARIOS.glob("*.yaml")} == {case.name for case in CASES}


# --- figures the audit measured, reproduced (the simulator is the instrument: it must show them) --------------


def test_the_baseline_is_no_worse_than_the_audited_engine() -> None:
    # With the audited engine (975781a) this run gave exactly the audit's case 01: 3.493 V, float at 156.5 min.
    # Changes to the engine may make it better, never worse: float no later, the highest cell no higher.
    s = summary_of("01-baseline-obeys")
    assert s.max_cell_v <= 3.493 + 1e-9
    assert s.float_reached_s is not None and s.float_reached_s <= 156.5 * 60
    assert s.max_changes_per_min["ccl"] <= 8 and s.max_changes_per_min["cvl"] <= 2


def test_an_overshoot_faster_than_the_bms_delay_is_compensated_in_time() -> None:
    # The audited engine: 133 charge OCP trips and 266 enable toggles here (audit case 56). Enforcement within a
    # third of the BMS's 10 s delay learns the compensation before the BMS trips.
    s = summary_of("p1-overshoot-ocp-delay-10s")
    assert s.trip_count == 0 and s.enable_toggles == 0
    assert s.float_reached_s is not None


def test_a_cvl_only_charger_is_held_off_by_the_cvl_lever() -> None:
    # The audited engine let the weak cell reach OVP here (3.652 V, 3 trips); with CVL as the second lever the
    # weak cell stays below the gateway's cut-off region's top.
    s = summary_of("p2-cvl-only-weak-cell")
    assert s.trip_count == 0 and s.max_cell_v < 3.55


def test_the_silent_cold_pack_stays_blocked() -> None:
    # The audited engine dropped the silent pack's block after the timeout and put 49.5 Ah into it at 1 °C; its
    # block now stays latched while its pack is on the bus.
    s = summary_of("p3-silent-cold-pack")
    assert s.charge_outside_window_ah[2] < 0.005 * 100 and s.trip_count == 0


def test_a_load_ignoring_dcl_is_stopped_by_the_dvl_lever() -> None:
    # The audited engine let the weak cell reach UVP here (case 52); the DVL lever stops the load at the cut-off.
    s = summary_of("p10-load-ignores-dcl")
    assert s.trip_count == 0 and s.min_cell_v >= 2.90 - 0.01
