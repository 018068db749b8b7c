"""RS485 profile files: the built-ins load, a mistake is one line naming file, command or register and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ProfileError, ProfileNotFoundError
from gateway.profiles import builtin_profile_names
from gateway.rs485 import Framing, is_rs485_profile, load_rs485_profile, load_rs485_profile_text, rs485_profile_names

REPO = Path(__file__).resolve().parents[1]


def test_builtins() -> None:
    assert rs485_profile_names() == ["growatt-rs485", "modbus-battery", "pylontech-rs485", "voltronic-rs485"]
    assert not set(rs485_profile_names()) & set(builtin_profile_names())  # the CAN loader never sees them


@pytest.mark.parametrize("name", rs485_profile_names())
def test_every_builtin_loads_and_is_named_after_its_file(name: str) -> None:
    profile = load_rs485_profile(name)
    assert profile.name == name
    assert (profile.pylontech is None) != (profile.registers is None)
    assert profile.steers == (name != "modbus-battery")
    assert is_rs485_profile(name)


def test_load_by_path(tmp_path: Path) -> None:
    copy = tmp_path / "mine.yaml"
    copy.write_text((REPO / "profiles" / "rs485" / "voltronic-rs485.yaml").read_text(encoding="utf-8"))
    assert load_rs485_profile(str(copy)).registers == load_rs485_profile("voltronic-rs485").registers
    assert is_rs485_profile(str(copy)) and not is_rs485_profile(str(REPO / "profiles" / "pylontech-can.yaml"))
    assert load_rs485_profile("modbus-battery").framings == (Framing.MODBUS_RTU, Framing.MODBUS_TCP)


def test_not_found(tmp_path: Path) -> None:
    with pytest.raises(ProfileNotFoundError, match="no built-in RS485 profile named 'growatt' "):
        load_rs485_profile("growatt")
    with pytest.raises(ProfileNotFoundError, match="cannot read RS485 profile file"):
        load_rs485_profile(str(tmp_path / "missing.yaml"))


HEAD = "name: t\ntransport: rs485\nframing: pylontech-ascii\nversion: 0x20\n"
MODBUS = "name: t\ntransport: rs485\nframing: modbus-rtu\nspan: [0, 10]\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: t\ntransport: can\nframing: modbus-rtu\n", "transport: expected rs485, got 'can'"),
        (HEAD + "commands: []\n", "commands: expected a non-empty list"),
        (HEAD + "commands:\n  - {cid2: 0x42, name: a, fields: [{name: x, bytes: 2, value: soc_pctt}]}\n",
         "command 0x42 (a): field 0 'x': unknown number value 'soc_pctt' (did you mean soc_pct?)"),
        (HEAD + "commands:\n  - {cid2: 0x42, name: a, fields: [{name: x, bytes: 2}]}\n",
         "command 0x42 (a): field 0 'x': needs exactly one of value, constant, flags, text, text_constant, list, "
         "state, modules (has none)"),
        (HEAD + "commands:\n  - {cid2: 0x42, name: a, fields: [{name: x, bytes: 1, flags: {9: [always]}}]}\n",
         "command 0x42 (a): field 0 'x': flags: bit 9 is not a bit of 1 bytes"),
        (HEAD + "commands:\n  - {cid2: 0x42, name: a, all_modules: true}\n",
         "command 0x42 (a): all_modules: needs info: pack (the request's INFO FF asks for every module)"),
        (HEAD + "span: [0, 1]\ncommands: []\n", "span: not a key of a pylontech-ascii profile"),
        (MODBUS + "registers:\n  - {address: 0, name: a, words: 2, value: soc_pct}\n"
         "  - {address: 1, name: b, words: 1, value: soc_pct}\n", "registers: register 0x0001 is in both 'a' and 'b'"),
        (MODBUS + "registers:\n  - {address: 11, name: a, words: 1, value: soc_pct}\n",
         "register 0x000b 'a' is outside the span"),
        (MODBUS + "steers: true\nfailsafe: {answer_when_silent: true}\nregisters:\n  - {address: 1, name: a, words: 1, "
         "constant: 1}\n", "failsafe: answer_when_silent: only for read-only profiles (steers: false)"),
        ("name: t\ntransport: rs485\nframing: modbus-rtu\nname: u\n", "invalid YAML at line 4: duplicate key 'name'"),
        # Items packed smaller than a register (Voltronic's cell states): lists with a length only, whole registers.
        (MODBUS + "registers:\n  - {address: 1, name: a, bytes: 1, value: soc_pct}\n",
         "at 0x0001 'a': bytes: only a register list with length may size its items in bytes"),
        (MODBUS + "registers:\n  - {address: 1, name: a, bytes: 1, words: 1, list: cell_states, length: 2}\n",
         "at 0x0001 'a': bytes: only a register list with length"),
        (MODBUS + "registers:\n  - {address: 1, name: a, bytes: 1, list: cell_states, length: 3}\n",
         "at 0x0001 'a': length: 3 items of 1 bytes do not fill whole registers"),
        (HEAD + "commands:\n  - {cid2: 0x42, name: a, fields: [{name: x, words: 1, value: soc_pct}]}\n",
         "command 0x42 (a): field 0: unknown key 'words'"),
    ],
)  # fmt: skip
def test_invalid_profiles(text: str, message: str) -> None:
    with pytest.raises(ProfileError) as caught:
        load_rs485_profile_text(text, "t.yaml")
    assert str(caught.value).startswith("t.yaml: ") and message in str(caught.value)
    assert "\n" not in str(caught.value)
