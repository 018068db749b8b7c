"""Per-profile honesty (issue 18): every built-in profile, CAN and RS485, says in its own file how its inverter
reacts to 0 A and to silence; ``bms-gateway profiles`` lists both kinds with those lines; ``check`` prints the
fail-safe timeline the control loop really follows (compared with a loop run on a fake clock)."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from telemetry_fixtures import NullSink, stamped

from gateway.cli import main
from gateway.clock import FakeClock
from gateway.config import load_config
from gateway.effective import load_config_profile, resolve
from gateway.errors import ProfileError
from gateway.limits import LimitsSettings
from gateway.profiles import builtin_profiles, load_profile, load_profile_text
from gateway.rs485.profile import load_rs485_profile, load_rs485_profile_text, rs485_profile_names
from gateway.runtime import DEADLINE_SLACK_S, ControlLoop, FailsafeState, LoopSettings
from gateway.sim.scenarios import SCENARIOS

REPO = Path(__file__).resolve().parent.parent
PROFILE_FILES = sorted((REPO / "profiles").glob("*.yaml")) + sorted((REPO / "profiles" / "rs485").glob("*.yaml"))
UNVERIFIED = "unverified:"


@pytest.mark.parametrize("path", PROFILE_FILES, ids=lambda p: p.stem)
def test_every_builtin_profile_states_its_inverters_reaction_in_its_own_file(path: Path) -> None:
    own = yaml.safe_load(path.read_text(encoding="utf-8"))["inverter_behaviour"]  # not inherited: its own words
    rs485 = path.parent.name == "rs485"
    behaviour = (load_rs485_profile(path.stem) if rs485 else load_profile(path.stem)).inverter_behaviour
    assert behaviour is not None
    assert behaviour.at_zero_amps == " ".join(own["at_zero_amps"].split())
    for statement in (behaviour.at_zero_amps, behaviour.on_silence):
        if not statement.startswith(UNVERIFIED):  # a claim needs a source that names one
            assert behaviour.source and not behaviour.source.startswith("none"), (path.name, statement)


def test_profiles_that_ignore_zero_amps_go_silent_at_once() -> None:
    """Where the profile itself says its inverter is reported to go on at 0 A, the zero set is no protection."""
    for profile in builtin_profiles():
        assert profile.inverter_behaviour is not None
        if "reported to keep" in profile.inverter_behaviour.at_zero_amps:
            assert profile.stale.value == "silence", profile.name


BASE = """\
name: x
description: test
transport: can
bitrate: 500000
failsafe: {silence_after_s: 60}
frames: [{id: 0x351, period_s: 1, dlc: 1, fields: [{name: c, offset: 0, size: 1, value: soc_pct}]}]
"""
RS485_BASE = """\
name: r
transport: rs485
framing: modbus-rtu
read_functions: [3]
span: [0, 10]
registers: [{address: 0, name: soc, words: 1, value: soc_pct}]
"""


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            "{at_zero_amps: stops, on_silence: stops, sourse: x}",
            "x.yaml: inverter_behaviour: unknown key 'sourse' (did you mean 'source'?)",
        ),
        (
            "{at_zero_amps: stops, source: x}",
            "x.yaml: inverter_behaviour: on_silence must be a non-empty string (say 'unverified: ...' when unknown)",
        ),
        ("stops", "x.yaml: inverter_behaviour: must be a mapping of at_zero_amps, on_silence, source, got 'stops'"),
    ],
)
def test_a_bad_inverter_behaviour_is_one_line_in_both_profile_kinds(section: str, message: str) -> None:
    with pytest.raises(ProfileError) as can_error:
        load_profile_text(BASE + f"inverter_behaviour: {section}\n", "x.yaml")
    assert str(can_error.value) == message
    with pytest.raises(ProfileError) as rs485_error:
        load_rs485_profile_text(RS485_BASE + f"inverter_behaviour: {section}\n", "x.yaml")
    assert str(rs485_error.value) == message


def test_a_variant_does_not_inherit_its_bases_inverter_behaviour(tmp_path: Path) -> None:
    variant = tmp_path / "mine.yaml"
    variant.write_text("name: mine\ndescription: a variant\nextends: deye\n", encoding="utf-8")
    assert load_profile("deye").inverter_behaviour is not None
    assert load_profile(str(variant)).inverter_behaviour is None


# --- bms-gateway profiles --------------------------------------------------------------------------------------


def test_profiles_lists_can_and_rs485_profiles_with_their_inverters_reaction(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["profiles"]) == 0
    out = capsys.readouterr().out
    headers = [line.split()[0] for line in out.splitlines() if not line.startswith(" ")]
    assert headers == [p.name for p in builtin_profiles()] + rs485_profile_names()
    blocks = dict(zip(headers, re.split(r"^\S.*$", out, flags=re.M)[1:], strict=True))
    deye = blocks["deye"]
    assert "  fail-safe: stale BMS data: silent at once (failsafe.bms_timeout_s)" in deye
    assert "  inverter at 0 A: reported to keep charging or discharging at CCL = DCL = 0" in deye
    assert "  inverter on silence: unverified: " in deye
    assert "  fail-safe: stale BMS data: 0 A and enables cleared, silent after 60 s" in blocks["pylontech-rs485"]
    assert "keeps answering with 0 A after 60 s" in blocks["modbus-battery"]
    for name, block in blocks.items():
        assert "  inverter at 0 A: " in block and "  inverter on silence: " in block, name


def test_profiles_json_has_every_profile_with_transport_failsafe_and_behaviour(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["profiles", "--json"]) == 0
    listed = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    assert set(listed) == {p.name for p in builtin_profiles()} | set(rs485_profile_names())
    assert listed["voltronic-rs485"]["transport"] == "rs485, modbus-rtu"
    assert listed["modbus-battery"]["transport"] == "rs485, read-only, modbus-rtu/modbus-tcp"
    assert listed["sofar"]["failsafe"] == "stale BMS data: silent at once (failsafe.bms_timeout_s)"
    for entry in listed.values():
        assert set(entry["inverter_behaviour"]) == {"at_zero_amps", "on_silence", "source"}, entry["name"]


# --- check: the fail-safe timeline, as the control loop runs it --------------------------------------------------


@pytest.fixture
def tty_path() -> Iterator[str]:
    """A real terminal device to name as the BMS port (check may insist on a character device)."""
    controller, terminal = os.openpty()
    try:
        yield os.ttyname(terminal)
    finally:
        os.close(controller)
        os.close(terminal)


def check_timeline(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, float], str]:
    """``check``'s fail-safe lines as state -> seconds after the newest good reading, and the whole output."""
    assert main(["check", "-c", str(config)]) == 0
    out = capsys.readouterr().out
    steps = re.findall(r"^  (stale|silent)\s+after ([\d.]+) s \(", out, flags=re.M)
    return {state: float(after_s) for state, after_s in steps}, out


def loop_timeline(config_path: Path) -> dict[str, float]:
    """When a control loop set up as the service sets it up (gateway/app.py) enters each fail-safe state after
    one good reading and then none, s after that reading (fake clock)."""
    config = load_config(config_path)
    profile = load_config_profile(config)
    effective = resolve(config, profile)
    settings = LoopSettings(
        poll_interval_s=config.bms.poll_interval_s,
        bms_timeout_s=effective.bms_timeout_s.value,
        silence_after_s=effective.silence_after_s.value,
        limits=LimitsSettings(),
    )
    clock = FakeClock(start_s=1000.0)
    loop = ControlLoop(profile, NullSink(), clock, settings)
    read_at_s = clock.monotonic()
    loop.on_readings((stamped(SCENARIOS["normal-charge"].step(0.0).reading, read_at_s),))
    entered: dict[str, float] = {}
    while clock.monotonic() < read_at_s + 200:
        due_s = loop.tick()
        if loop.state in (FailsafeState.STALE, FailsafeState.SILENT):
            entered.setdefault(loop.state.value, clock.monotonic() - read_at_s)
        clock.advance(max(due_s - clock.monotonic(), DEADLINE_SLACK_S))
    return entered


@pytest.mark.parametrize(
    ("profile", "failsafe", "expected"),
    [
        ("deye", {}, {"silent": 10.0}),  # stale: silence: silent at bms_timeout_s, silence_after_s plays no part
        ("deye", {"bms_timeout_s": 5, "silence_after_s": 120}, {"silent": 5.0}),
        ("pylontech-can", {}, {"stale": 10.0, "silent": 60.0}),
        ("sma-sunny-island", {"bms_timeout_s": 5, "silence_after_s": 30}, {"stale": 5.0, "silent": 30.0}),
    ],
)
def test_check_prints_the_failsafe_timeline_the_control_loop_follows(
    profile: str,
    failsafe: dict[str, Any],
    expected: dict[str, float],
    tmp_path: Path,
    tty_path: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data: dict[str, Any] = {
        "bms": {"driver": "jk-uart", "port": tty_path},
        "inverter": {"profile": profile, "can": {"interface": "virtual", "channel": "bms-gateway-test"}},
    }
    if failsafe:
        data["failsafe"] = failsafe
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    printed, out = check_timeline(config, capsys)
    assert printed == expected, out
    ran = loop_timeline(config)
    assert set(ran) == set(printed)
    for state, after_s in printed.items():
        assert after_s <= ran[state] <= after_s + 2 * DEADLINE_SLACK_S, (state, ran)
    if "stale" not in expected:  # the configured or profile silence_after_s is named as not applying
        assert "(not used: profile deye goes silent at failsafe.bms_timeout_s)" in out
