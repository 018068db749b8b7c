"""The README is for users first (issue 18): short, with ``make demo`` and ``make test`` first, links that lead
somewhere, and quick starts whose configs really pass ``bms-gateway check --bms`` against the simulators.

Each quick start's config is a YAML block whose first line is ``# quick start: NAME``. The test keeps everything
the user would copy except what only a real machine has: the BMS port becomes a simulator's (the JK simulator on a
null-modem for ``jk-uart``, the JK-PB bus simulator with the block's own addresses for ``jk-modbus``), the CAN bus a
python-can ``virtual`` one, the inverter's RS485 port another pseudo-terminal; then ``check -c FILE --bms`` runs as
the CLI does, in its own process, and must exit 0.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_cli_bms import run_cli, wait_until_serving

from gateway.clock import FakeClock
from gateway.sim.jk_modbus import JkModbusSimulator, SimPack, pack_variant
from gateway.sim.jk_uart import JkUartSimulator
from gateway.sim.nullmodem import NullModem
from gateway.sim.scenarios import SCENARIOS

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
MAX_LINES = 200
MAX_WIDTH = 120
QUICK_START = re.compile(r"^```yaml\n# quick start: (?P<name>[\w-]+)\n(?P<body>.*?)^```", re.MULTILINE | re.DOTALL)
EXPECTED_QUICK_STARTS = {"deye-can", "jk-pb-deye", "victron", "growatt-rs485"}
ALTERNATIVE_PROFILES = {"growatt-rs485": ["voltronic-rs485"]}
"""Profiles a quick start names as the other choice for the same config (``profile: X  # or Y``)."""
SCENARIO = SCENARIOS["normal-charge"]
SCENARIO_T_S = 100.0
"""A time at which the normal-charge scenario answers (as tests/test_cli_bms.py reads it)."""
LINK = re.compile(r"\[[^\]]*\]\((?P<target>[^)\s]+)\)")
ONLY_A_LINK = re.compile(r"^\s*(- )?\[[^\]]*\]\([^)]+\)[.,;:]?\s*$")


def readme_text() -> str:
    return README.read_text(encoding="utf-8")


def quick_starts() -> dict[str, str]:
    return {match["name"]: match["body"] for match in QUICK_START.finditer(readme_text())}


# --- shape ---------------------------------------------------------------------------------------------------


def test_the_readme_is_short() -> None:
    assert len(readme_text().splitlines()) < MAX_LINES


def test_no_readme_line_is_wider_than_120_characters() -> None:
    """A line that is only a link may be longer (a URL cannot be wrapped); none is so far."""
    wide = [
        (number, len(line))
        for number, line in enumerate(readme_text().splitlines(), 1)
        if len(line) > MAX_WIDTH and not ONLY_A_LINK.match(line)
    ]
    assert wide == []


def test_the_readme_starts_with_make_demo_and_make_test() -> None:
    text = readme_text()
    first_block = text[text.index("```") : text.index("```", text.index("```") + 3)]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()[1:]]
    assert commands[:2] == ["make demo", "make test"]
    assert text[: text.index("```")].count("\n##") == 0  # no section comes before them


def test_before_you_connect_is_one_click_from_the_quick_starts() -> None:
    text = readme_text()
    quick = text[text.index("## Quick starts") :]
    assert "](docs/setup.md#before-you-connect)" in quick[: quick.index("###")]


# --- links -----------------------------------------------------------------------------------------------------


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped (not ``-`` or ``_``), spaces to ``-``."""
    text = re.sub(r"[`*]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)
    return {github_anchor(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


@pytest.mark.parametrize("document", [README, *DOCS], ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_leads_to_a_file_and_its_anchor(document: Path) -> None:
    text = re.sub(r"^```.*?^```", "", document.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)
    broken = []
    for match in LINK.finditer(text):
        target = match["target"]
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        path = (document.parent / file_part).resolve() if file_part else document
        if not path.exists():
            broken.append(f"{target}: no file {path}")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {path.name}")
    assert broken == []


def test_the_anchor_rule_matches_github() -> None:
    assert github_anchor("BMS control (opt-in)") == "bms-control-opt-in"
    assert github_anchor("JK + Victron GX (CAN)") == "jk--victron-gx-can"
    assert github_anchor("When the inverter does not obey") == "when-the-inverter-does-not-obey"


# --- the quick starts, through check ---------------------------------------------------------------------------


def test_the_readme_has_the_four_quick_starts() -> None:
    assert set(quick_starts()) == EXPECTED_QUICK_STARTS


def bms_sections(config: dict[str, Any]) -> list[dict[str, Any]]:
    bms = config["bms"]
    return bms if isinstance(bms, list) else [bms]


def start_bms_simulator(stack: ExitStack, section: dict[str, Any], cable: Path) -> str:
    """A simulator for one ``bms`` section on a new null-modem; the path the gateway should open."""
    modem = stack.enter_context(NullModem(cable))
    if section.get("driver", "jk-uart") == "jk-modbus":
        packs = {unit: SimPack(pack_variant(SCENARIO, index)) for index, unit in enumerate(section["addresses"])}
        clock = FakeClock()
        clock.advance(SCENARIO_T_S)
        bus = JkModbusSimulator(packs, clock, port=str(modem.a_path))
        bus.start()
        stack.callback(bus.stop)
        assert bus.wait_serving(10)
    else:
        clock = FakeClock()
        clock.advance(SCENARIO_T_S)
        simulator = JkUartSimulator(SCENARIO, clock, port=str(modem.a_path))
        simulator.start()
        stack.callback(simulator.stop)
        wait_until_serving(str(modem.b_path))
    return str(modem.b_path)


@pytest.fixture
def stack() -> Iterator[ExitStack]:
    with ExitStack() as opened:
        yield opened


def quick_start_cases() -> list[tuple[str, str | None]]:
    cases: list[tuple[str, str | None]] = []
    for name in sorted(EXPECTED_QUICK_STARTS):
        cases.append((name, None))
        cases.extend((name, other) for other in ALTERNATIVE_PROFILES.get(name, []))
    return cases


@pytest.mark.parametrize(("name", "profile"), quick_start_cases(), ids=lambda v: v or "as written")
def test_each_quick_start_passes_check_against_the_simulator(
    name: str, profile: str | None, tmp_path: Path, stack: ExitStack
) -> None:
    body = quick_starts()[name]
    if profile is not None:
        assert f"# or {profile}" in body  # the README names it as the other choice
    config = yaml.safe_load(body)
    for index, section in enumerate(bms_sections(config)):
        section["port"] = start_bms_simulator(stack, section, tmp_path / f"bms-{index}")
    inverter = config["inverter"]
    if profile is not None:
        inverter["profile"] = profile
    if "can" in inverter:
        inverter["can"] = {"interface": "virtual", "channel": f"readme-{name}"}
    if "serial" in inverter:
        inverter["serial"]["port"] = str(stack.enter_context(NullModem(tmp_path / "inverter")).b_path)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")

    result = run_cli("check", "-c", str(path), "--bms")

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{path}: OK" in result.stdout
    assert f"profile {inverter['profile']} (" in result.stdout
    assert "limit thresholds for " in result.stdout  # the BMS was read: --bms did its part
    assert "Traceback" not in result.stderr
