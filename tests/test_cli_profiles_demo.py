"""The inverter-side commands: ``profiles`` (in this process) and ``demo`` (a real process: it opens
pseudo-terminals, a CAN bus and threads, and must end on its own)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest
import yaml

from gateway.cli import main
from gateway.profiles import builtin_profiles
from gateway.rs485.profile import rs485_profile_names

REPO: Final = Path(__file__).resolve().parent.parent
DEMO_DURATION_S: Final = 3
DEMO_TIMEOUT_S: Final = 30
CELL_COUNT: Final = 16  # every simulator scenario is a 16S pack


def test_profiles_lists_pylontech_and_its_inverters(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    headers = [line for line in out.splitlines() if not line.startswith(" ")]
    assert [h.split()[0] for h in headers] == [p.name for p in builtin_profiles()] + rs485_profile_names()
    (header,) = [h for h in headers if h.split()[0] == "pylontech-can"]
    assert "[can]" in header
    block = out.split(header, 1)[1].split("\n\n")[0]
    # The inverters as the profile file itself lists them, not as the loader hands them over.
    spec = yaml.safe_load((REPO / "profiles" / "pylontech-can.yaml").read_text(encoding="utf-8"))
    assert spec["inverters"], "the profile lists no inverters"
    for inverter in spec["inverters"]:
        assert f"    {inverter}" in block, inverter


def test_profiles_json_names_aliases(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    by_name = {p["name"]: p for p in listed}
    assert by_name["pylontech-can"]["transport"] == "can"
    for info in builtin_profiles():
        assert by_name[info.name]["aliases"] == list(info.aliases)


def test_demo_runs_from_any_directory_and_shows_the_bms_cells_and_what_the_inverter_hears(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--duration", str(DEMO_DURATION_S)],
        cwd=tmp_path,  # not the checkout: the demo's config is package data
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    out = result.stdout

    # BMS: the cell block of the simulated 16S pack, with plausible LiFePO4 cell voltages.
    assert f"cells ({CELL_COUNT}):" in out, out
    screen = out[out.rindex(f"cells ({CELL_COUNT}):") :]  # the last screen with a reading
    cell_rows = re.findall(r"^\s+((?:\d\.\d{3} ?){8})$", screen, flags=re.MULTILINE)[:2]
    cells = [float(volts) for row in cell_rows for volts in row.split()]
    assert len(cells) == CELL_COUNT, screen
    assert all(2.5 < volts < 3.65 for volts in cells), cells

    # INVERTER: CVL and CCL decoded from the CAN frames the gateway sent.
    heard = re.findall(r"hears: CVL (\d+\.\d) V\s+CCL (\d+\.\d) A", out)
    assert heard, out
    cvl_v, ccl_a = (float(value) for value in heard[-1])
    assert CELL_COUNT * 3.2 < cvl_v <= CELL_COUNT * 3.65  # a LiFePO4 charge voltage for 16 cells
    assert 0 < ccl_a <= 100  # normal-charge asks for current; the default cap is 100 A
