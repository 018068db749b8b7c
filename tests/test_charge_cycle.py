"""The charge-cycle simulation (issue 4, "Must show"): the limits engine between a simulated JK BMS and an
inverter that obeys or overshoots by 20 %, from 20 % SOC through absorption to float and down to the cut-off.

Each cycle runs once per module (compressed time, a few seconds each); the tests read its trace.
"""

from __future__ import annotations

import csv
import importlib.util
import itertools
from pathlib import Path

import pytest

from gateway.limits.settings import LimitsSettings
from gateway.sim import charge_cycle, cycle_output
from gateway.sim.bms_model import Protection, protect
from gateway.sim.cell_model import Balancing, balance_decision, lfp_ocv_v, make_pack
from gateway.sim.charge_cycle import (
    LIMIT_NAMES,
    CycleResult,
    Stage,
    cycle_settings,
    max_changes_per_window,
    over_the_wire,
    run_charge_cycle,
)

OBEYS, OVERSHOOTS = 1.0, 1.2
MAX_CHANGES_PER_MIN = 2
SETTINGS = cycle_settings()
TUNING = LimitsSettings()


@pytest.fixture(scope="module", params=[OBEYS, OVERSHOOTS], ids=["obeys", "overshoots-20pct"])
def cycle(request: pytest.FixtureRequest) -> CycleResult:
    overshoot: float = request.param
    return run_charge_cycle(overshoot=overshoot)


# --- the cycle ------------------------------------------------------------------------------------------------


def test_no_cell_reaches_ovp_or_uvp(cycle: CycleResult) -> None:
    assert cycle.summary.bms_trips == ()
    assert all(max(r.cell_voltages_v) < SETTINGS.cell_ovp_v for r in cycle.rows)
    assert all(min(r.cell_voltages_v) > SETTINGS.cell_uvp_v for r in cycle.rows)
    assert all(r.charge_mos_on and r.discharge_mos_on for r in cycle.rows)


def test_cells_do_get_near_both_ends(cycle: CycleResult) -> None:
    # Not vacuous: the pack is really charged full (a runner above bulk) and discharged to the cut-off.
    summary = cycle.summary
    assert 3.45 <= summary.max_cell_v < SETTINGS.cell_ovp_v
    assert SETTINGS.cell_uvp_v < summary.min_cell_v <= 2.95
    assert max(r.soc_pct for r in cycle.rows) > 98.0
    assert min(r.soc_pct for r in cycle.rows) < 10.0


def test_reaches_float_then_discharges_to_the_cut_off(cycle: CycleResult) -> None:
    summary = cycle.summary
    assert summary.reached_float
    assert summary.absorption_at_s is not None and summary.float_at_s is not None
    assert 0 < summary.absorption_at_s < summary.float_at_s < 4 * 3600
    stages = {r.stage for r in cycle.rows}
    assert stages == {Stage.CHARGE, Stage.FLOAT, Stage.DISCHARGE, Stage.REST}
    # The inverter stopped because the engine said so, not because time ran out.
    assert summary.end_reason.startswith(("DCL 0 A", "discharge disabled", "pack"))
    last = cycle.rows[-1]
    assert last.dcl_a == 0.0 and not last.discharge_enable
    assert abs(last.current_a) < 0.5


def test_the_inverter_charges_and_discharges_at_the_limits(cycle: CycleResult) -> None:
    # Liveness: the engine does not get there by starving the inverter.
    start, end = cycle.summary.steady_windows["bulk"]
    bulk = [r for r in cycle.rows if start <= r.time_s <= end]
    assert sum(r.current_a for r in bulk) / len(bulk) > 0.75 * 90.0  # 90 A: 0.9 × the BMS's 100 A
    start, end = cycle.summary.steady_windows["discharge"]
    load = [r.current_a for r in cycle.rows if start <= r.time_s <= end]
    assert all(abs(a + 60.0) < 0.5 for a in load)


def longest_over(cycle: CycleResult, side: str) -> float:
    """Longest run of seconds the current exceeded, by more than the margin, the highest true limit of the last
    ``inverter_response_s`` (what the inverter had time to follow)."""
    longest, since = 0.0, None
    history: list[tuple[float, float]] = []
    for row in cycle.rows:
        limit = row.true_ccl_a if side == "charge" else row.true_dcl_a
        amps = row.current_a if side == "charge" else -row.current_a
        history.append((row.time_s, limit))
        reference = max(lim for t, lim in history if t >= row.time_s - TUNING.inverter_response_s)
        if amps > reference + TUNING.overshoot_margin_a:
            since = row.time_s if since is None else since
            longest = max(longest, row.time_s - since + 1.0)
        else:
            since = None
    return longest


def test_the_overshooting_inverter_is_reined_in(cycle: CycleResult) -> None:
    summary = cycle.summary
    if summary.overshoot == OBEYS:
        assert summary.enforcement_events == 0
        assert summary.max_over_ccl_s == 0.0 and summary.max_over_dcl_s == 0.0
        return
    # Its excess over the limit it had inverter_response_s to follow (the highest true limit of that time) + margin
    # lasts no longer than the engine's patience and a few steps. Against a steady CCL that is the limit itself;
    # while the DCL falls step by step in the discharge taper, the inverter is judged against the limit before
    # each fall: there it never exceeds it, so no discharge enforcement is due.
    assert longest_over(cycle, "charge") <= TUNING.overshoot_after_s + 3.0
    assert longest_over(cycle, "discharge") <= TUNING.overshoot_after_s + 3.0
    enforcement = [(t, e) for t, e in cycle.events if e.startswith("enforce:")]
    assert any("charges" in e and "advertising" in e for _, e in enforcement)
    # Once compensated (a few seconds for the inverter to respond), it charges within the true limit.
    compensated = [r for r in cycle.rows if r.ccl_limiter == "enforcement" and r.stage is Stage.CHARGE]
    times = {r.time_s for r in compensated}
    settled = [r for r in compensated if all(r.time_s - dt in times for dt in (1.0, 2.0, 3.0))]
    assert settled
    assert all(r.current_a <= r.true_ccl_a + TUNING.overshoot_margin_a for r in settled)


def test_steady_windows_are_long_enough(cycle: CycleResult) -> None:
    windows = cycle.summary.steady_windows
    assert set(windows) == {"bulk", "float", "discharge"}
    lengths_min = {name: (end - start) / 60 for name, (start, end) in windows.items()}
    assert lengths_min["bulk"] >= 20 and lengths_min["float"] >= 5 and lengths_min["discharge"] >= 30


@pytest.mark.parametrize(
    ("window", "limit"),
    [
        ("bulk", "cvl_v"),
        ("bulk", "ccl_a"),
        ("bulk", "dcl_a"),
        ("float", "cvl_v"),
        ("float", "ccl_a"),
        ("float", "dcl_a"),
        ("discharge", "cvl_v"),
        ("discharge", "ccl_a"),
        ("discharge", "dcl_a"),
    ],
)
def test_no_limit_flaps_in_steady_conditions(cycle: CycleResult, window: str, limit: str) -> None:
    assert limit in LIMIT_NAMES
    assert cycle.summary.changes_per_min[window][limit] <= MAX_CHANGES_PER_MIN


def test_csv_has_a_header_and_every_step(cycle: CycleResult, tmp_path: Path) -> None:
    path = tmp_path / "cycle.csv"
    cycle.write_csv(path)
    with path.open(newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    header = table[0]
    assert header[:3] == ["time_s", "stage", "cell_01_v"]
    assert {"cell_16_v", "cvl_v", "ccl_a", "dcl_a", "dvl_v", "current_a", "soc_pct", "charge_phase"} <= set(header)
    assert len(table) == len(cycle.rows) + 1
    assert all(len(row) == len(header) for row in table)
    first = dict(zip(header, table[1], strict=True))
    assert first["stage"] == "charge" and first["charge_phase"] == "bulk"


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="matplotlib (optional plotting) absent")
def test_plot_is_a_png(tmp_path: Path) -> None:
    result = run_charge_cycle(max_s=300.0)
    path = tmp_path / "cycle.png"
    assert result.write_plot(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_layout_shades_each_charge_phase_and_keeps_soc_and_both_ccl_lines_apart(cycle: CycleResult) -> None:
    # What the plot draws, without matplotlib: the phase bands, the legend, how the two CCL lines are drawn.
    layout = cycle_output.plot_layout(cycle)
    spans = layout.phases
    assert [span.label for span in spans] == ["bulk", "absorption", "float", "re-bulk"]
    assert spans[0].start_min == 0.0 and spans[-1].end_min == layout.minutes[-1]
    assert all(a.end_min == b.start_min for a, b in itertools.pairwise(spans))  # no gap, no overlap
    first_absorption_s = next(r.time_s for r in cycle.rows if r.charge_phase == "absorption")
    assert spans[1].start_min == first_absorption_s / 60
    assert all(span.label in cycle_output.PHASE_COLOURS for span in spans)

    assert layout.current_legend == ["current A", "CCL (engine)", "CCL (advertised)", "−DCL (advertised)", "SOC %"]
    engine, advertised = (line for line in layout.current_lines if line.label.startswith("CCL"))
    assert (engine.style, engine.width) != (advertised.style, advertised.width)
    assert engine.width > advertised.width and engine.order < advertised.order  # wide underneath, thin on top


def test_plot_without_matplotlib_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cycle_output, "plotting_available", lambda: False)
    result = run_charge_cycle(max_s=30.0)
    path = tmp_path / "cycle.png"
    assert result.write_plot(path) is False
    assert not path.exists()


# --- the parts ------------------------------------------------------------------------------------------------


def test_ocv_curve_is_flat_in_the_middle_and_steep_at_the_ends() -> None:
    socs = [x / 10 for x in range(0, 1001)]
    volts = [lfp_ocv_v(s) for s in socs]
    assert all(b > a for a, b in itertools.pairwise(volts))
    assert lfp_ocv_v(80) - lfp_ocv_v(30) < 0.06
    assert lfp_ocv_v(100) - lfp_ocv_v(97) > 0.2
    assert lfp_ocv_v(10) - lfp_ocv_v(1) > 0.4
    assert lfp_ocv_v(100.5) > 3.65  # overcharge runs on past OVP


def test_pack_has_a_runner() -> None:
    pack = make_pack()
    capacities = [c.capacity_ah for c in pack.cells]
    assert capacities.index(min(capacities)) == 6
    assert all(98.4 <= c <= 101.0 for c in capacities)
    assert all(19.4 <= c.soc_pct <= 20.6 for c in pack.cells)
    assert make_pack() == pack  # reproducible


def test_pack_step_counts_charge_and_balancing() -> None:
    pack = make_pack()
    after = pack.step(36.0, 100.0, Balancing(source=0, sink=1, current_a=2.0))  # 1 Ah in, 0.0556 Ah moved
    gained = [b.charge_ah - a.charge_ah for a, b in zip(pack.cells, after.cells, strict=True)]
    assert gained[0] == pytest.approx(1.0 - 2.0 * 100 / 3600)
    assert gained[1] == pytest.approx(1.0 + 2.0 * 100 / 3600)
    assert gained[2] == pytest.approx(1.0)


def test_balancer_needs_start_voltage_and_delta() -> None:
    kwargs = {"start_v": 3.40, "trigger_v": 0.005, "max_current_a": 2.0}
    assert balance_decision([3.30, 3.31, 3.29], **kwargs) is None  # below the start voltage
    assert balance_decision([3.402, 3.400, 3.399], **kwargs) is None  # delta 3 mV < 5 mV
    assert balance_decision([3.40, 3.45, 3.39], **kwargs) == Balancing(source=1, sink=2, current_a=2.0)


def test_bms_trips_at_ovp_and_uvp_and_recovers() -> None:
    cells = [3.35] * 15
    state, trips = protect(Protection(), [3.651, *cells], 10.0, 1.0, SETTINGS)
    assert [t.kind for t in trips] == ["cell_ovp"] and state.charge_off(1.0)
    state, trips = protect(state, [3.45, *cells], 0.0, 2.0, SETTINGS)
    assert trips == () and state.charge_off(2.0)  # until below OVPR 3.40 V
    state, _ = protect(state, [3.39, *cells], 0.0, 3.0, SETTINGS)
    assert not state.charge_off(3.0)
    state, trips = protect(Protection(), [2.80, *[3.2] * 15], -10.0, 4.0, SETTINGS)
    assert [t.kind for t in trips] == ["cell_uvp"] and state.discharge_off(4.0)


def test_bms_trips_on_over_current_after_its_delay() -> None:
    cells = [3.30] * 16
    state, trips = protect(Protection(), cells, 108.0, 0.0, SETTINGS)
    assert trips == ()
    state, trips = protect(state, cells, 108.0, 29.0, SETTINGS)
    assert trips == ()
    state, trips = protect(state, cells, 108.0, 30.0, SETTINGS)
    assert [t.kind for t in trips] == ["charge_ocp"] and state.charge_off(31.0)


def test_the_engine_reads_what_the_wire_carries() -> None:
    pack = make_pack()
    cells = pack.cell_voltages_v(12.345)
    reading = charge_cycle._reading(5.0, cells, 12.345, 20.4, Protection(), None, SETTINGS)
    wire = over_the_wire(reading, 5.0)
    assert wire.state.cell_voltages_v == tuple(round(v, 3) for v in cells)  # mV
    assert wire.state.current_a == pytest.approx(12.35, abs=0.006)  # 10 mA
    assert wire.state.soc_pct == 20.0  # whole percent
    assert wire.settings.cell_ovpr_v == 3.40 and wire.settings.max_charge_current_a == 100.0
    assert wire.measured_at_s == 5.0


def test_changes_are_counted_in_sliding_minutes() -> None:
    assert max_changes_per_window([]) == 0
    assert max_changes_per_window([0.0, 30.0, 61.0, 90.0, 100.0]) == 3
    assert max_changes_per_window([0.0, 60.0, 120.0]) == 1


def test_simulate_charge_cycle_command_writes_the_trace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import main

    trace = tmp_path / "cycle.csv"
    assert main(["simulate", "charge-cycle", "--csv", str(trace)]) == 0
    out = capsys.readouterr().out
    assert "BMS trips: 0" in out
    assert "float after" in out
    header = trace.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header[:3] == ["time_s", "stage", "cell_01_v"] and "ccl_a" in header
