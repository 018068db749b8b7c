"""Every frame and register block names its source (issue 19): the optional ``sources`` key both profile kinds
share (gateway/profiles/sources.py), required of the built-in profiles; ``confirmed_by`` (public reports of a
protocol on real inverters); ``bms-gateway profiles --json`` counts them; the inverter table says the same."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.errors import ProfileError, error_lines
from gateway.profiles import builtin_profile_names, load_profile, load_profile_text
from gateway.profiles.sources import SourceCounts, capture_files
from gateway.rs485.profile import load_rs485_profile, load_rs485_profile_text, rs485_profile_names

REPO = Path(__file__).resolve().parent.parent
CAPTURES = REPO / "tests" / "data" / "captures"
CONFIRMED_MAKES = ("Deye", "Solis", "Victron", "SMA")
"""The inverters issue 19 asks public reports for."""


def builtin_parts() -> list[tuple[str, str, tuple[str, ...]]]:
    """(profile, part label, sources) of every frame, command and register block of every built-in profile."""
    parts = [(name, p.label, p.sources) for name in builtin_profile_names() for p in load_profile(name).sourced_parts]
    for name in rs485_profile_names():
        parts += [(name, p.label, p.sources) for p in load_rs485_profile(name).sourced_parts]
    return parts


def test_every_frame_and_block_of_every_builtin_profile_names_a_source_or_says_unverified() -> None:
    bare = [f"{name}: {label}" for name, label, sources in builtin_parts() if not sources]
    assert bare == []


def test_the_captures_the_builtin_profiles_cite_are_in_the_corpus() -> None:
    cited = {file for _, _, sources in builtin_parts() for file in capture_files(sources)}
    assert sorted(file for file in cited if not (CAPTURES / file).is_file()) == []


CAN_BASE = """\
name: x
description: test
transport: can
bitrate: 500000
failsafe: {silence_after_s: 60}
frames:
  - {id: 0x351, period_s: 1, dlc: 1, fields: [{name: c, offset: 0, size: 1, value: soc_pct}], sources: SOURCES}
"""
COMMAND_BASE = """\
name: r
transport: rs485
framing: pylontech-ascii
version: 0x20
commands:
  - {cid2: 0x42, name: analog_values, sources: SOURCES, fields: [{name: soc, bytes: 1, value: soc_pct}]}
"""
REGISTER_BASE = """\
name: r
transport: rs485
framing: modbus-rtu
span: [0, 10]
registers:
  - {address: 0, name: soc, words: 1, value: soc_pct, sources: SOURCES}
"""
PARTS = {
    "can": (CAN_BASE, load_profile_text, "x.yaml: frame 0x351: sources"),
    "command": (COMMAND_BASE, load_rs485_profile_text, "r.yaml: command 0x42 (analog_values): sources"),
    "register": (REGISTER_BASE, load_rs485_profile_text, "r.yaml: registers: register 0 at 0x0000: sources"),
}


@pytest.mark.parametrize("kind", PARTS)
@pytest.mark.parametrize(
    ("sources", "problem"),
    [
        ('["Pylontech spec"]', ": 'Pylontech spec' names no document page, repository or capture"),
        ('["PYLON CANBUS Protocol v1.2 p.4", "our notes"]', ": 'our notes' names no document page"),
        ('["unverified: a guess", "PYLON CANBUS Protocol v1.2 p.4"]', ": 'unverified: ...' must be the only entry"),
        ('["unverified:  "]', ": 'unverified:' needs the reason"),
        ("[]", " must be a non-empty list of strings"),
        ("PYLON CANBUS Protocol v1.2 p.4", " must be a non-empty list of strings"),
    ],
)
def test_a_source_of_no_known_form_is_one_line_naming_the_part(kind: str, sources: str, problem: str) -> None:
    base, load, where = PARTS[kind]
    with pytest.raises(ProfileError) as caught:
        load(base.replace("SOURCES", sources), base.split("\n", 1)[0].split(": ")[1] + ".yaml")
    lines = error_lines(caught.value)
    assert lines[0].startswith(where + problem), lines[0]
    assert "\n" not in lines[0]


@pytest.mark.parametrize("kind", PARTS)
def test_every_source_form_is_accepted(kind: str) -> None:
    entries = [
        "PYLON CANBUS Protocol v1.2 p.4 (0x356)",
        "SMA FSS-ConnectingBat-TI-en-10 pp.20-21",
        "Pylontech RS485 V3.3 §3.5",
        "Sleeper85/esphome-jk-bms-can ESP32_LFP_Wire_jk-bms-can.yaml (0x70)",
        "dalathegreat/Battery-Emulator@62532e94 Software/src/inverter/SOL-ARK-LV-CAN.cpp",
        "syssi/esphome-virtual-can-bms#3 (a real GX capture)",
        "https://example.org/notes.html",
        "capture:setfirelabs-pylontech.json",
    ]
    base, load, _ = PARTS[kind]
    profile = load(base.replace("SOURCES", json.dumps(entries)), "p.yaml")
    (part,) = profile.sourced_parts
    assert part.sources == tuple(entries)
    assert part.sourced and not part.unverified
    assert capture_files(part.sources) == ("setfirelabs-pylontech.json",)


def test_unverified_is_counted_apart_and_a_part_without_sources_is_counted_missing() -> None:
    text = CAN_BASE.replace("SOURCES", '["unverified: no document gives its DLC"]') + (
        "  - {id: 0x355, period_s: 1, dlc: 1, fields: [{name: s, offset: 0, size: 1, value: soh_pct}]}\n"
    )
    profile = load_profile_text(text, "x.yaml")
    assert profile.source_counts == SourceCounts("frames", sourced=0, unverified=1, missing=1)


def test_a_register_with_sources_starts_a_block_that_runs_to_the_next() -> None:
    text = """\
name: r
transport: rs485
framing: modbus-rtu
span: [0, 0x30]
registers:
  - {address: 0x10, name: a, words: 1, value: soc_pct, sources: ["Growatt 1xSxxP ESS p.9"]}
  - {address: 0x11, name: b, words: 2, value: soh_pct}
  - {address: 0x20, name: c, words: 1, value: cell_count, sources: ["unverified: nobody documents it"]}
modules:
  base: 0x28
  stride: 4
  count: 2
  registers: [{offset: 0, name: v, words: 1, value: pack_voltage_v}]
"""
    parts = load_rs485_profile_text(text, "r.yaml").sourced_parts
    assert [(p.label, p.sourced, p.unverified) for p in parts] == [
        ("registers 0x0010-0x0012", True, False),
        ("registers 0x0020-0x0020", False, True),
        ("module registers 0x0000-0x0000", False, False),
    ]


def test_a_variant_keeps_the_sources_of_frames_it_leaves_alone_only(tmp_path: Path) -> None:
    base = CAN_BASE.replace("SOURCES", '["PYLON CANBUS Protocol v1.2 p.4"]') + (
        "  - {id: 0x355, period_s: 1, dlc: 1, sources: ['PYLON CANBUS Protocol v1.2 p.4'],"
        " fields: [{name: s, offset: 0, size: 1, value: soh_pct}]}\n"
        "confirmed_by: ['Deye SUN-12K: stuartpittaway/diyBMSv4ESP32#216']\n"
    )
    (tmp_path / "base.yaml").write_text(base, encoding="utf-8")
    (tmp_path / "variant.yaml").write_text(
        "name: v\nextends: base.yaml\nframes:\n  - {id: 0x355, dlc: 8}\n", encoding="utf-8"
    )
    variant = load_profile(str(tmp_path / "variant.yaml"))
    assert {p.label: p.sources for p in variant.sourced_parts} == {
        "frame 0x351": ("PYLON CANBUS Protocol v1.2 p.4",),
        "frame 0x355": (),  # its bytes changed: the base's source no longer speaks for them
    }
    assert load_profile(str(tmp_path / "base.yaml")).confirmed_by == ("Deye SUN-12K: stuartpittaway/diyBMSv4ESP32#216",)
    assert variant.confirmed_by == ()  # another inverter: its own reports or none


@pytest.mark.parametrize(
    "entry",
    ["Deye SUN-12K", "stuartpittaway/diyBMSv4ESP32#216", "Deye: a forum post", "Deye: capture:x.json"],
)
def test_confirmed_by_needs_an_inverter_and_a_report(entry: str) -> None:
    text = CAN_BASE.replace("SOURCES", '["PYLON CANBUS Protocol v1.2 p.4"]') + f"confirmed_by: [{json.dumps(entry)}]\n"
    with pytest.raises(ProfileError, match=r"^x\.yaml: confirmed_by: .* is not '<inverter>: <report>'$"):
        load_profile_text(text, "x.yaml")


def test_profiles_json_counts_sourced_and_unverified_parts_and_lists_the_reports(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["profiles", "--json"]) == 0
    listed = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    for name in builtin_profile_names():
        counts = load_profile(name).source_counts
        assert listed[name]["sources"] == {"unit": "frames", **_counts(counts)}
        assert listed[name]["confirmed_by"] == list(load_profile(name).confirmed_by)
    for name in rs485_profile_names():
        counts = load_rs485_profile(name).source_counts
        assert listed[name]["sources"] == {"unit": counts.unit, **_counts(counts)}
    assert listed["pylontech-rs485"]["sources"]["unit"] == "commands"
    assert listed["growatt-rs485"]["sources"]["unit"] == "register blocks"
    assert all(p["sources"]["missing"] == 0 for p in listed.values())
    reports = " ".join(report for p in listed.values() for report in p["confirmed_by"])
    for make in CONFIRMED_MAKES:
        assert make in reports, make


def _counts(counts: SourceCounts) -> dict[str, int]:
    return {"sourced": counts.sourced, "unverified": counts.unverified, "missing": counts.missing}


def test_profiles_prints_the_counts_and_the_reports(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profiles"]) == 0
    blocks = re.split(r"\n(?=\S)", capsys.readouterr().out)
    deye = next(block for block in blocks if block.startswith("deye ")) + "\n"
    counts = load_profile("deye").source_counts
    assert f"  sources: {counts.sourced} frames sourced, {counts.unverified} unverified\n" in deye
    assert all(f"  confirmed on: {report}\n" in deye for report in load_profile("deye").confirmed_by)


def inverter_table() -> list[dict[str, str]]:
    """The rows of the inverter table, wherever it lives (README.md or docs/inverters.md)."""
    for path in (REPO / "docs" / "inverters.md", REPO / "README.md"):
        if not path.is_file():
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        for index, line in enumerate(lines):
            if line.startswith("| inverter | profile |") and "confirmed" in line:
                header = [cell.strip() for cell in line.strip("|").split("|")]
                rows = []
                for row in lines[index + 2 :]:
                    if not row.startswith("|"):
                        break
                    rows.append(dict(zip(header, (cell.strip() for cell in row.strip("|").split("|")), strict=True)))
                return rows
    raise AssertionError("no inverter table with a 'confirmed' column in docs/inverters.md or README.md")


def test_the_inverter_table_says_which_profiles_a_public_report_confirms() -> None:
    rows = inverter_table()
    column = next(key for key in rows[0] if "confirmed" in key)
    seen = set()
    for row in rows:
        names = re.findall(r"`([a-z0-9-]+)`", row["profile"])
        profiles = [name for name in names if name in builtin_profile_names() or name in rs485_profile_names()]
        confirmed = [
            report
            for name in profiles
            for report in (
                load_rs485_profile(name) if name in rs485_profile_names() else load_profile(name)
            ).confirmed_by
        ]
        cell = row[column]
        if confirmed:
            seen.add(row["inverter"])
            issues = {match.split(": ", 1)[1].split(" ")[0] for match in confirmed}
            assert any(issue.split("/", 1)[1] in cell for issue in issues), (row["inverter"], cell)
        else:
            assert cell.startswith("no"), (row["inverter"], cell)
    for make in CONFIRMED_MAKES:
        assert any(make in inverter for inverter in seen), make
