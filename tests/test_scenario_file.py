"""The charge-cycle scenario file and command: validation like the config, the docs that list every key, the
command's outputs (one JSON object with --json, no file unless asked), and the simulated BMS and bus."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from gateway.errors import ConfigError
from gateway.model import Chemistry
from gateway.sim.bms_model import Protection, protect, simulated_bms_settings
from gateway.sim.cycle_output import plotting_available
from gateway.sim.inverter_model import split_current
from gateway.sim.scenario_file import DEFAULT_CELLS, parse_scenario, scenario_to_json

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs" / "charge-cycle.md"
SHORT = "duration_h: 0.05\n"
"""Three simulated minutes: enough for the command's outputs."""


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


# --- the file ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "key", "needle"),
    [
        ({"packz": []}, "packz", "did you mean packs?"),
        ({"packs": [{}, {"capacity": 70}]}, "packs[1].capacity", "did you mean capacity_ah?"),
        ({"packs": {"weak_cells": {17: 0.8}}}, "packs.weak_cells", "cell 17 beyond the pack's 16 cells"),
        ({"packs": {"weak_cells": {3: 1.5}}}, "packs.weak_cells", "cell 3: expected a number greater than 0"),
        ({"packs": {"settings": {"cell_ovpp_v": 3.6}}}, "packs.settings", "did you mean cell_ovp_v?"),
        (
            {"packs": {"settings": {"balancer_enabled": 1}}},
            "packs.settings",
            "balancer_enabled: expected true or false",
        ),
        ({"packs": {"temperature_c": [[10, 5], [0, 6]]}}, "packs.temperature_c", "must not decrease"),
        ({"packs": {"temperature_c": {"ambient_c": 20}}}, "packs.temperature_c", "self_heating: true"),
        ({"inverter": {"obeys": ["ccll"]}}, "inverter.obeys", "did you mean ccl?"),
        ({"limits": {"max_charge_current": 90}}, "limits.max_charge_current", "did you mean max_charge_current_a?"),
        ({"duration_h": 0}, "duration_h", "expected a number greater than 0"),
    ],
)
def test_a_bad_key_or_value_names_its_dotted_key(data: object, key: str, needle: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_scenario(data, "my.yaml")
    assert caught.value.key == key
    assert needle in str(caught.value) and "my.yaml" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_an_empty_file_is_every_default() -> None:
    scenario = parse_scenario(None)
    assert [p.cell_count for p in scenario.all_packs] == [16]
    assert scenario.inverter.obeys == ("ccl", "dcl", "cvl", "dvl", "enable")
    assert scenario.tuning.max_charge_current_a == 100.0  # the config's default


def test_cells_default_by_chemistry() -> None:
    scenario = parse_scenario({"packs": [{"chemistry": "li_ion"}, {"chemistry": "lto"}, {"cells": 15}]})
    assert [p.cell_count for p in scenario.all_packs] == [14, 20, 15]


def _yaml_blocks(text: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", text, flags=re.S)


def test_the_docs_list_every_key_with_its_default() -> None:
    defaults = scenario_to_json(parse_scenario(None))
    documented = yaml.safe_load(_yaml_blocks(DOCS.read_text(encoding="utf-8"))[0])
    assert documented == {k: v for k, v in defaults.items() if k not in ("limits", "charging")}


def test_the_docs_table_lists_every_simulated_bms_setting() -> None:
    text = DOCS.read_text(encoding="utf-8")
    rows = {m[0]: m[1:] for m in re.findall(r"^\| `(\w+)` \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$", text, flags=re.M)}
    for column, chemistry in enumerate(Chemistry):
        settings = simulated_bms_settings(chemistry, DEFAULT_CELLS[chemistry], 100.0)
        for spec in fields(settings):
            if spec.name in ("measured_at_s", "cell_count", "capacity_ah", "battery_type"):
                continue
            value = getattr(settings, spec.name)
            shown = rows[spec.name][column].strip()
            expected = "null" if value is None else str(value).lower() if isinstance(value, bool) else f"{value:g}"
            assert shown == expected, (spec.name, chemistry)


def test_the_docs_example_is_a_valid_scenario() -> None:
    example = _yaml_blocks(DOCS.read_text(encoding="utf-8"))[-1]
    scenario = parse_scenario(yaml.safe_load(example), "docs example")
    assert len(scenario.all_packs) == 3 and scenario.inverter.overshoot == 1.1


# --- the command ------------------------------------------------------------------------------------------------


def test_json_is_exactly_one_object_and_no_file_is_written(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SHORT, encoding="utf-8")
    result = run_cli("simulate", "charge-cycle", "--scenario-file", str(scenario), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert set(summary) == {
        "trips",
        "trip_count",
        "max_cell_v",
        "min_cell_v",
        "float_reached_s",
        "max_changes_per_min",
        "enable_toggles",
        "max_pack_current_over_bms_limit_a",
        "charge_outside_window_ah",
        "charged_outside_window",
        "seconds_simulated",
    }
    assert summary["seconds_simulated"] == 180.0 and summary["trip_count"] == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_csv_when_asked(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SHORT + "packs: [{}, {capacity_ah: 70}]\n", encoding="utf-8")
    trace = tmp_path / "trace.csv"
    result = run_cli("simulate", "charge-cycle", "--scenario-file", str(scenario), "--csv", str(trace))
    assert result.returncode == 0, result.stderr
    assert "BMS trips: 0" in result.stdout
    lines = trace.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    assert header[:3] == ["time_s", "stage", "heard_cvl_v"] and "pack2_max_cell_v" in header
    assert len(lines) == 1 + 181


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--overshoot", "1.2"], "--overshoot and --scenario-file exclude each other"),
        ([], "packz: unknown key (did you mean packs?)"),
    ],
)
def test_bad_use_is_an_error_line_and_a_hint(tmp_path: Path, args: list[str], needle: str) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text("packz: []\n" if not args else SHORT, encoding="utf-8")
    result = run_cli("simulate", "charge-cycle", "--scenario-file", str(scenario), *args)
    assert result.returncode == 2 and result.stdout == ""
    error, hint = result.stderr.splitlines()
    assert error.startswith("bms-gateway: error:") and needle in error
    assert hint.startswith("hint: ")


def test_a_missing_scenario_file_is_one_error_line(tmp_path: Path) -> None:
    result = run_cli("simulate", "charge-cycle", "--scenario-file", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert "scenario file" in result.stderr and "not found" in result.stderr and "Traceback" not in result.stderr


# --- the simulated BMS and the bus --------------------------------------------------------------------------


BMS = simulated_bms_settings()
CELLS = [3.30] * 16


@pytest.mark.parametrize(
    ("temperature_c", "current_a", "kind", "blocks"),
    [
        (-1.0, 20.0, "charge_utp", (True, False)),  # below the charge window's 0 °C
        (46.0, 20.0, "charge_otp", (True, False)),
        # Beyond the discharge window the charge window is crossed too: both sides blocked, one trip (the current
        # that was cut was a discharge).
        (-21.0, -20.0, "discharge_utp", (True, True)),
        (61.0, -20.0, "discharge_otp", (True, True)),
    ],
)
def test_a_temperature_protection_trips_a_flowing_current_and_recovers(
    temperature_c: float, current_a: float, kind: str, blocks: tuple[bool, bool]
) -> None:
    state, trips = protect(Protection(), CELLS, current_a, 0.0, BMS, battery_temperature_c=temperature_c)
    assert [t.kind for t in trips] == [kind]
    assert (state.charge_off(0.0), state.discharge_off(0.0)) == blocks
    side = "charge_temperature" if kind.startswith("charge") else "discharge_temperature"
    # Held until the recovery value (5 °C inside the limit, the simulated BMS's UTPR/OTPR), then released.
    toward = 1.0 if "utp" in kind else -1.0
    state, trips = protect(state, CELLS, 0.0, 1.0, BMS, battery_temperature_c=temperature_c + 3.0 * toward)
    assert trips == () and getattr(state, side) == kind
    state, _ = protect(state, CELLS, 0.0, 2.0, BMS, battery_temperature_c=temperature_c + 7.0 * toward)
    assert getattr(state, side) is None


def test_a_temperature_protection_at_rest_is_no_trip() -> None:
    state, trips = protect(Protection(), CELLS, 0.0, 0.0, BMS, battery_temperature_c=-5.0)
    assert trips == () and state.charge_off(0.0)


def test_mos_over_temperature_opens_both() -> None:
    state, trips = protect(Protection(), CELLS, 30.0, 0.0, BMS, battery_temperature_c=25.0, mos_temperature_c=76.0)
    assert [t.kind for t in trips] == ["mos_otp"]
    assert state.charge_off(0.0) and state.discharge_off(0.0)


def test_the_bus_shares_current_by_resistance_and_skips_blocked_packs() -> None:
    # Equal OCVs, one pack of half the resistance: it takes two thirds.
    assert split_current(90.0, [52.0, 52.0], [0.01, 0.005], [True, True], [True, True]) == pytest.approx((30.0, 60.0))
    # The second pack's charge MOS is open: the first takes it all, the second none.
    assert split_current(90.0, [52.0, 52.0], [0.01, 0.005], [True, False], [True, True]) == pytest.approx((90.0, 0.0))
    # Every pack blocked for charging: nothing flows.
    assert split_current(90.0, [52.0, 52.0], [0.01, 0.01], [False, False], [True, True]) == (0.0, 0.0)
    # A fuller pack discharges into an emptier one while the inverter rests.
    first, second = split_current(0.0, [53.0, 52.0], [0.01, 0.01], [True, True], [True, True])
    assert first == pytest.approx(-50.0) and second == pytest.approx(50.0)


@pytest.mark.skipif(not plotting_available(), reason="matplotlib (optional plotting, bms-gateway[plot]) absent")
def test_scenario_plot_is_a_png(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text(SHORT, encoding="utf-8")
    plot = tmp_path / "run.png"
    result = run_cli("simulate", "charge-cycle", "--scenario-file", str(scenario), "--plot", str(plot))
    assert result.returncode == 0, result.stderr
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
