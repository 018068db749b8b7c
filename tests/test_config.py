"""The configuration file: shipped files load, defaults apply, and every mistake is one exact line."""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
from pathlib import Path
from typing import Any, Final

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import (
    KNOWN_BMS_DRIVERS,
    BmsConfig,
    CanConfig,
    Config,
    FailsafeConfig,
    InverterConfig,
    LimitsConfig,
    LoggingConfig,
    load_config,
    parse_config,
)
from gateway.effective import resolve
from gateway.errors import ConfigError
from gateway.model import Chemistry
from gateway.profiles import load_profile

CONFIG_DIR: Final = Path(__file__).resolve().parent.parent / "config"
DEMO_CONFIG: Final = Path(__file__).resolve().parent.parent / "gateway" / "cli" / "demo.yaml"  # package data
MINIMAL: Final = "bms:\n  port: /dev/ttyUSB0\ninverter:\n  profile: pylontech-can\n"


def _write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "gateway.yaml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


# --- shipped files ----------------------------------------------------------------------------------------


def test_example_loads() -> None:
    config = load_config(CONFIG_DIR / "example.yaml")
    assert config.bms.port == "/dev/ttyUSB0"
    assert config.inverter.profile == "pylontech-can"
    assert config.inverter.can == CanConfig(interface="socketcan", channel="can0", bitrate=500000)


def test_demo_loads() -> None:
    config = load_config(DEMO_CONFIG)
    assert config.bms.port == "/tmp/bms-gateway-demo/bms"
    assert config.bms.poll_interval_s == 1.0
    assert config.inverter.profile == "pylontech-can"
    assert config.inverter.can == CanConfig(interface="virtual", channel="bms-gateway-demo")
    assert config.inverter.can.bitrate is None
    assert config.failsafe == FailsafeConfig(bms_timeout_s=5.0, silence_after_s=15.0)


def _schema_keys(cls: type[Any], path: str = "") -> list[str]:
    keys: list[str] = []
    for spec in dataclasses.fields(cls):
        if not {"config_parse", "config_section"} & spec.metadata.keys():  # extra options, explicit_keys
            continue
        key = f"{path}.{spec.name}" if path else spec.name
        keys.append(key)
        nested = spec.metadata.get("config_section")
        if nested is not None:
            keys.extend(_schema_keys(nested, key))
    return keys


def test_example_documents_every_key() -> None:
    """Every schema key is set in example.yaml, each leaf right under a comment line that explains it."""
    path = CONFIG_DIR / "example.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    lines = path.read_text(encoding="utf-8").splitlines()
    for key in _schema_keys(Config):
        node = data
        for part in key.split("."):
            assert isinstance(node, dict), key
            assert part in node, f"{key} is not in example.yaml"
            node = node[part]
        if isinstance(node, dict):
            continue
        name = key.rsplit(".", 1)[-1]
        found = [i for i, line in enumerate(lines) if re.match(rf"\s*{name}:", line)]
        assert any(lines[i - 1].lstrip().startswith("#") for i in found), f"{key} has no comment"


# --- defaults ---------------------------------------------------------------------------------------------


def test_minimal_file_gets_defaults(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, MINIMAL))
    assert config == Config(
        bms=BmsConfig(
            driver="jk-uart",
            port="/dev/ttyUSB0",
            baudrate=115200,
            poll_interval_s=1.0,
            timeout_s=0.5,
            retries=1,
        ),
        inverter=InverterConfig(profile="pylontech-can", can=None),
        limits=LimitsConfig(max_charge_current_a=100.0, max_discharge_current_a=100.0),
        failsafe=FailsafeConfig(bms_timeout_s=10.0, silence_after_s=None),
        logging=LoggingConfig(level="info"),
    )


def test_profile_overridable_values_stay_none_when_unset() -> None:
    config = parse_config(
        {"bms": {"port": "p"}, "inverter": {"profile": "x", "can": {"interface": "socketcan", "channel": "can0"}}}
    )
    assert config.inverter.can is not None
    assert config.inverter.can.bitrate is None
    assert config.failsafe.silence_after_s is None


def test_empty_sections_mean_defaults() -> None:
    config = parse_config({"bms": {"port": "p"}, "inverter": {"profile": "x", "can": None}, "limits": None})
    assert config.inverter.can is None
    assert config.limits == LimitsConfig()


def test_numbers_become_floats_and_channel_may_be_an_integer() -> None:
    config = parse_config(
        {
            "bms": {"port": "p", "poll_interval_s": 2},
            "inverter": {"profile": "x", "can": {"interface": "kvaser", "channel": 0}},
        }
    )
    assert config.bms.poll_interval_s == 2.0
    assert isinstance(config.bms.poll_interval_s, float)
    assert config.inverter.can is not None
    assert config.inverter.can.channel == "0"


def test_config_is_frozen() -> None:
    config = parse_config({"bms": {"port": "p"}, "inverter": {"profile": "x"}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.bms.port = "other"  # type: ignore[misc]


def test_known_drivers() -> None:
    assert frozenset({"jk-uart", "jk-modbus"}) == KNOWN_BMS_DRIVERS


def test_jk_modbus_takes_addresses_in_polling_order() -> None:
    bms = {"driver": "jk-modbus", "port": "p", "addresses": [3, 1, 2]}
    config = parse_config({"bms": bms, "inverter": {"profile": "x"}})
    assert config.bms.addresses == (3, 1, 2)
    assert "bms.addresses" in config.explicit_keys
    default = parse_config({"bms": {"driver": "jk-modbus", "port": "p"}, "inverter": {"profile": "x"}})
    assert default.bms.addresses == (1,)


def test_jk_uart_accepts_the_default_address_written_out() -> None:
    # example.yaml documents every key with its default, so `addresses: [1]` must pass with jk-uart.
    config = parse_config({"bms": {"port": "p", "addresses": [1]}, "inverter": {"profile": "x"}})
    assert config.bms.addresses == (1,)


# --- CAN pass-through options -----------------------------------------------------------------------------


def test_can_extra_keys_are_kept_unchanged(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        MINIMAL
        + "  can:\n"
        + "    interface: socketcan\n"
        + "    channel: can0\n"
        + "    bitrate: 250000\n"
        + "    receive_own_messages: true\n"
        + "    fd: false\n"
        + "    can_filters:\n"
        + "      - {can_id: 0x351, can_mask: 0x7FF, extended: false}\n",
    )
    can = load_config(path).inverter.can
    assert can is not None
    assert (can.interface, can.channel, can.bitrate) == ("socketcan", "can0", 250000)
    assert dict(can.extra) == {
        "receive_own_messages": True,
        "fd": False,
        "can_filters": [{"can_id": 0x351, "can_mask": 0x7FF, "extended": False}],
    }


def test_to_json_is_plain_and_serialisable() -> None:
    config = parse_config(
        {
            "bms": {"port": "p"},
            "inverter": {"profile": "x", "can": {"interface": "virtual", "channel": "c", "fd": True}},
        }
    )
    out = config.to_json()
    assert json.loads(json.dumps(out)) == out
    assert out["bms"] == {
        "driver": "jk-uart",
        "port": "p",
        "allow_network_port": False,
        "baudrate": 115200,
        "poll_interval_s": 1.0,
        "fast_poll_interval_s": 0.2,
        "timeout_s": 0.5,
        "retries": 1,
        "addresses": [1],
    }
    assert out["inverter"] == {
        "profile": "x",
        "can": {"interface": "virtual", "channel": "c", "bitrate": None, "extra": {"fd": True}},
        "serial": None,
        "address": None,
    }
    assert out["extra_outputs"] == []
    assert out["failsafe"] == {"bms_timeout_s": 10.0, "silence_after_s": None}
    assert out["logging"] == {"level": "info"}


# --- mistakes, each with its exact message ----------------------------------------------------------------

BASE: Final = {"bms": "  port: /dev/ttyUSB0\n", "inverter": "  profile: pylontech-can\n"}


def _file(**sections: str) -> str:
    """A config file: MINIMAL's sections, each replaced or joined by the given section bodies."""
    merged = {**BASE, **sections}
    return "".join(f"{name}:\n{body}" for name, body in merged.items())


MISTAKES: Final = [
    # wrong type
    (
        "baudrate text",
        _file(bms="  port: p\n  baudrate: fast\n"),
        "bms.baudrate: expected a positive integer, got 'fast'",
    ),
    (
        "baudrate bool",
        _file(bms="  port: p\n  baudrate: true\n"),
        "bms.baudrate: expected a positive integer, got true",
    ),
    (
        "baudrate float",
        _file(bms="  port: p\n  baudrate: 9600.0\n"),
        "bms.baudrate: expected a positive integer, got 9600.0",
    ),
    ("port number", _file(bms="  port: 5\n"), "bms.port: expected a non-empty string, got 5"),
    ("port null", _file(bms="  port:\n"), "bms.port: expected a non-empty string, got null"),
    ("port list", _file(bms="  port: [a]\n"), "bms.port: expected a non-empty string, got a list"),
    # Security audit I1: spy:// wrote the traffic, the control password included, to a file; socket:// and
    # rfc2217:// carry it in clear over the network; a 300-digit current parsed to 1e299.
    (
        "port spy url",
        _file(bms="  port: spy:///dev/ttyUSB0?file=/tmp/x\n"),
        "bms.port: spy:// URLs are not accepted: give the device path (/dev/ttyUSB0, or better /dev/serial/by-id/...)",
    ),
    (
        "port loop url",
        _file(bms="  port: loop://\n"),
        "bms.port: loop:// URLs are not accepted: give the device path (/dev/ttyUSB0, or better /dev/serial/by-id/...)",
    ),
    (
        "port over the network without consent",
        _file(bms="  port: socket://10.0.0.5:4001\n"),
        "bms.port: socket:// carries the BMS traffic (and any control password) over the network in clear; set "
        "bms.allow_network_port: true to accept that",
    ),
    (
        "inverter port over the network without consent",
        _file(inverter="  profile: pylontech-rs485\n  serial: {port: 'RFC2217://h:2217'}\n"),
        "inverter.serial.port: rfc2217:// carries the BMS traffic (and any control password) over the network in "
        "clear; set inverter.serial.allow_network_port: true to accept that",
    ),
    (
        "current above the bound",
        _file(limits="  max_charge_current_a: 2001\n"),
        "limits.max_charge_current_a: expected a number from 0 to 2000, got 2001",
    ),
    (
        "current of 300 digits",
        _file(limits="  max_discharge_current_a: " + "9" * 300 + "\n"),
        "limits.max_discharge_current_a: expected a number from 0 to 2000, got " + "9" * 40 + "...",
    ),
    (
        "ramp above the bound",
        _file(charging="  cvl_ramp_v_per_s: 1001\n"),
        "charging.cvl_ramp_v_per_s: expected a number greater than 0 and at most 1000, got 1001",
    ),
    (
        "timeout text",
        _file(bms="  port: p\n  timeout_s: '0.5'\n"),
        "bms.timeout_s: expected a number greater than 0 and at most 10, got '0.5'",
    ),
    (
        "limit bool",
        _file(limits="  max_charge_current_a: false\n"),
        "limits.max_charge_current_a: expected a number from 0 to 2000, got false",
    ),
    (
        "channel bool",
        _file(inverter="  profile: x\n  can: {interface: socketcan, channel: true}\n"),
        "inverter.can.channel: expected a non-empty string or an integer, got true",
    ),
    ("section not a mapping", _file(limits="  - 1\n"), "limits: expected a mapping, got a list"),
    (
        "extra not plain",
        _file(inverter="  profile: x\n  can: {interface: v, channel: c, when: 2024-01-01}\n"),
        "inverter.can.when: expected a string, number, true/false, null, list or mapping, got a date",
    ),
    (
        "extra bad name",
        _file(inverter="  profile: x\n  can: {interface: v, channel: c, bad name: 1}\n"),
        "inverter.can.bad name: expected an option name of letters, digits and underscores",
    ),
    # out of range
    ("baudrate zero", _file(bms="  port: p\n  baudrate: 0\n"), "bms.baudrate: expected a positive integer, got 0"),
    (
        "poll too fast",
        _file(bms="  port: p\n  poll_interval_s: 0.01\n"),
        "bms.poll_interval_s: expected a number from 0.05 to 60, got 0.01",
    ),
    (
        "poll too slow",
        _file(bms="  port: p\n  poll_interval_s: 61\n"),
        "bms.poll_interval_s: expected a number from 0.05 to 60, got 61",
    ),
    (
        "timeout zero",
        _file(bms="  port: p\n  timeout_s: 0\n"),
        "bms.timeout_s: expected a number greater than 0 and at most 10, got 0",
    ),
    (
        "timeout long",
        _file(bms="  port: p\n  timeout_s: 10.5\n"),
        "bms.timeout_s: expected a number greater than 0 and at most 10, got 10.5",
    ),
    (
        "retries negative",
        _file(bms="  port: p\n  retries: -1\n"),
        "bms.retries: expected a non-negative integer, got -1",
    ),
    (
        "limit negative",
        _file(limits="  max_discharge_current_a: -5\n"),
        "limits.max_discharge_current_a: expected a number from 0 to 2000, got -5",
    ),
    (
        "timeout infinite",
        _file(failsafe="  bms_timeout_s: .inf\n"),
        "failsafe.bms_timeout_s: expected a positive number, got .inf",
    ),
    (
        "timeout nan",
        _file(failsafe="  bms_timeout_s: .nan\n"),
        "failsafe.bms_timeout_s: expected a positive number, got .nan",
    ),
    (
        "bitrate zero",
        _file(inverter="  profile: x\n  can: {interface: v, channel: c, bitrate: 0}\n"),
        "inverter.can.bitrate: expected a positive integer, got 0",
    ),
    # choices
    (
        "unknown driver",
        _file(bms="  port: p\n  driver: daly\n"),
        "bms.driver: expected one of jk-modbus, jk-uart, got 'daly'",
    ),
    (
        "driver typo",
        _file(bms="  port: p\n  driver: jk_uart\n"),
        "bms.driver: expected one of jk-modbus, jk-uart, got 'jk_uart' (did you mean jk-uart?)",
    ),
    # bms.addresses
    (
        "addresses not a list",
        _file(bms="  port: p\n  driver: jk-modbus\n  addresses: 1\n"),
        "bms.addresses: expected a non-empty list of distinct integers from 1 to 247, got 1",
    ),
    (
        "addresses empty",
        _file(bms="  port: p\n  driver: jk-modbus\n  addresses: []\n"),
        "bms.addresses: expected a non-empty list of distinct integers from 1 to 247, got a list",
    ),
    (
        "address zero",
        _file(bms="  port: p\n  driver: jk-modbus\n  addresses: [1, 0]\n"),
        "bms.addresses: expected a non-empty list of distinct integers from 1 to 247, got 0 in the list",
    ),
    (
        "address too high",
        _file(bms="  port: p\n  driver: jk-modbus\n  addresses: [248]\n"),
        "bms.addresses: expected a non-empty list of distinct integers from 1 to 247, got 248 in the list",
    ),
    (
        "address text",
        _file(bms="  port: p\n  driver: jk-modbus\n  addresses: ['2']\n"),
        "bms.addresses: expected a non-empty list of distinct integers from 1 to 247, got '2' in the list",
    ),
    (
        "address bool",
        _file(bms="  port: p\n  driver: jk-modbus\n  addresses: [true]\n"),
        "bms.addresses: expected a non-empty list of distinct integers from 1 to 247, got true in the list",
    ),
    (
        "address twice",
        _file(bms="  port: p\n  driver: jk-modbus\n  addresses: [1, 2, 1]\n"),
        "bms.addresses: expected a non-empty list of distinct integers from 1 to 247, got 1 more than once",
    ),
    (
        "addresses for jk-uart",
        _file(bms="  port: p\n  addresses: [1, 2]\n"),
        "bms.addresses: only for driver jk-modbus (driver is jk-uart)",
    ),
    (
        "level typo",
        _file(logging="  level: warn\n"),
        "logging.level: expected one of debug, info, warning, error, got 'warn' (did you mean warning?)",
    ),
    (
        "level case",
        _file(logging="  level: INFO\n"),
        "logging.level: expected one of debug, info, warning, error, got 'INFO' (did you mean info?)",
    ),
    # unknown keys
    (
        "key typo",
        _file(limits="  max_charge_cuurent_a: 50\n"),
        "limits.max_charge_cuurent_a: unknown key (did you mean max_charge_current_a?)",
    ),
    (
        "key unlike any",
        _file(limits="  speed: 1\n"),
        "limits.speed: unknown key (known keys: max_charge_current_a, max_discharge_current_a, bms_current_fraction, "
        "temperature_margin_c, current_hold_s, current_ramp_a_per_s, current_deadband_a, overshoot_margin_a, "
        "overshoot_after_s, inverter_response_s, enforcement_disable_min_s, overshoot_forgive_s, current_sharing, "
        "offline_current_fraction, recovery_current_c, soc_ccl_taper)",
    ),
    ("section typo", MINIMAL + "loging:\n  level: info\n", "loging: unknown key (did you mean logging?)"),
    (
        "section unknown",
        MINIMAL + "influxdb: {}\n",
        "influxdb: unknown key (known keys: bms, inverter, extra_outputs, state_dir, limits, charging, failsafe, "
        "logging, mqtt, status, relay, control)",
    ),
    ("typo beats missing", _file(bms="  prot: /dev/ttyUSB0\n"), "bms.prot: unknown key (did you mean port?)"),
    # missing required keys
    ("no port", _file(bms="  baudrate: 9600\n"), "bms.port: missing"),
    ("no bms", "inverter:\n  profile: x\n", "bms.port: missing"),
    ("no profile", "bms:\n  port: p\n", "inverter.profile: missing"),
    (
        "no can interface",
        _file(inverter="  profile: x\n  can:\n    channel: can0\n"),
        "inverter.can.interface: missing",
    ),
    (
        "no can channel",
        _file(inverter="  profile: x\n  can:\n    interface: socketcan\n"),
        "inverter.can.channel: missing",
    ),
    # rules across keys
    (
        "silence equal",
        _file(failsafe="  silence_after_s: 10\n"),
        "failsafe.silence_after_s: must be greater than failsafe.bms_timeout_s (10)",
    ),
    (
        "silence below",
        _file(failsafe="  bms_timeout_s: 2.5\n  silence_after_s: 1\n"),
        "failsafe.silence_after_s: must be greater than failsafe.bms_timeout_s (2.5)",
    ),
    # the file itself
    (
        "bad YAML",
        "bms:\n  port: p\n baudrate: 1\n",
        "config file {path}: invalid YAML at line 3, column 2: expected <block end>, but found '<block mapping start>'",
    ),
    (
        "unclosed list",
        "bms: [\n",
        "config file {path}: invalid YAML at line 2, column 1: expected the node content, but found '<stream end>'",
    ),
    (
        "duplicate key",
        "bms:\n  port: a\n  port: b\n",
        "config file {path}: invalid YAML at line 3, column 3: duplicate key 'port'",
    ),
    (
        "impossible date",
        "bms:\n  when: 2024-02-30\n",
        "config file {path}: invalid YAML at line 2, column 9: day is out of range for month",
    ),
    (
        "control character",
        "bms:\n  port: a\x07\n",
        "config file {path}: invalid YAML at line 2, column 10: character #x0007 is not allowed",
    ),
    (
        "python tag",
        "bms: !!python/object:os.system x\n",
        "config file {path}: invalid YAML at line 1, column 6: "
        "could not determine a constructor for the tag 'tag:yaml.org,2002:python/object:os.system'",
    ),
    (
        "two documents",
        MINIMAL + "---\n" + MINIMAL,
        "config file {path}: invalid YAML at line 5, column 1: "
        "expected a single document in the stream but found another document",
    ),
    ("top-level list", "- bms\n- inverter\n", "config file {path}: expected a mapping of sections, got a list"),
    ("top-level text", "hello\n", "config file {path}: expected a mapping of sections, got 'hello'"),
    ("empty file", "", "config file {path} is empty"),
    ("only comments", "# nothing yet\n", "config file {path} is empty"),
]


@pytest.mark.parametrize(("content", "expected"), [case[1:] for case in MISTAKES], ids=[case[0] for case in MISTAKES])
def test_mistake_has_exact_message(tmp_path: Path, content: str, expected: str) -> None:
    path = _write(tmp_path, content)
    assert _error(path) == expected.format(path=path)


def test_a_network_port_is_accepted_with_consent(tmp_path: Path) -> None:
    bms = "  port: socket://10.0.0.5:4001\n  allow_network_port: true\n"
    assert load_config(_write(tmp_path, _file(bms=bms))).bms.port == "socket://10.0.0.5:4001"


def test_error_carries_key_and_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, _file(bms="  port: p\n  baudrate: fast\n")))
    assert caught.value.key == "bms.baudrate"
    assert caught.value.problem == "expected a positive integer, got 'fast'"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.yaml"
    assert _error(path) == f"config file {path} not found"


def test_directory(tmp_path: Path) -> None:
    assert _error(tmp_path) == f"config file {tmp_path} is a directory"


def test_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, MINIMAL)

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    assert _error(path) == f"config file {path} cannot be read: Permission denied"


def test_not_utf8(tmp_path: Path) -> None:
    path = _write(tmp_path, b"bms:\n  port: \xff\n")
    assert _error(path) == f"config file {path} is not UTF-8 text (bad byte at offset 13)"


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, "\ufeff" + MINIMAL)).bms.port == "/dev/ttyUSB0"


def test_self_referencing_extra(tmp_path: Path) -> None:
    path = _write(tmp_path, _file(inverter="  profile: x\n  can: {interface: v, channel: c, loop: &a [*a]}\n"))
    assert _error(path) == (
        f"config file {path}: invalid YAML at line 5, column 45: YAML aliases (*a) are not allowed here: "
        "write the value out"
    )


def test_an_alias_bomb_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    # Security audit L7: nine aliases nested eight deep in the pass-through keys expanded to 9^8 nodes (29 s,
    # 1.2 GB, then "OK"). Refused while the YAML is composed: here 9^40 nodes, which no machine could expand.
    levels = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 41)]
    bomb = "\n".join(f"    {line}" for line in levels)
    path = _write(tmp_path, _file(inverter=f"  profile: x\n  can:\n    interface: v\n    channel: c\n{bomb}\n"))
    assert "YAML aliases (*l0) are not allowed here" in _error(path)


def test_deeply_nested_yaml(tmp_path: Path) -> None:
    path = _write(tmp_path, "a: " + "[" * 5000 + "]" * 5000 + "\n")
    assert _error(path) == f"config file {path}: invalid YAML: nested too deeply"


def test_parse_config_names_source() -> None:
    with pytest.raises(ConfigError, match=r"^config file <config> is empty$"):
        parse_config(None)
    with pytest.raises(ConfigError, match=r"^config file x\.yaml: expected a mapping of sections, got 3$"):
        parse_config(3, "x.yaml")


# --- nothing but ConfigError, whatever the input ----------------------------------------------------------

_SCALARS: Final = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["/dev/ttyUSB0", "jk-uart", "info", "socketcan", "can0", "pylontech-can"])
    | st.dates()
)
_KEYS: Final = st.sampled_from(
    [*{key.rsplit(".", 1)[-1] for key in _schema_keys(Config)}, "can", "fd", "x", "bms ", ""]
) | st.integers(0, 3)
_DATA: Final = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=6),
    max_leaves=30,
)
_QUICK: Final = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_QUICK
@given(_DATA)
def test_any_data_gives_config_or_config_error(data: object) -> None:
    try:
        config = parse_config(data)
    except ConfigError as error:
        assert "\n" not in str(error)
    else:
        assert isinstance(config, Config)
        json.dumps(config.to_json())


@_QUICK
@given(st.text(alphabet=st.sampled_from(list("bms:port -[]{}&*!|>'\"#\n\t\x07\ufeff0.5e,?%@`")), max_size=60))
def test_any_text_gives_config_or_config_error(content: str) -> None:
    from gateway import yaml_schema

    try:
        data = yaml_schema._load_yaml(content, "fuzz.yaml")
        parse_config(data, "fuzz.yaml")
    except ConfigError as error:
        assert "\n" not in str(error)


def test_dates_are_shown_as_dates() -> None:
    with pytest.raises(ConfigError, match=r"^bms\.port: expected a non-empty string, got a date$"):
        parse_config({"bms": {"port": datetime.date(2024, 1, 1)}, "inverter": {"profile": "x"}})


def test_bms_timeout_must_exceed_poll_interval() -> None:
    data = {
        "bms": {"port": "/dev/ttyUSB0", "poll_interval_s": 2},
        "inverter": {"profile": "pylontech-can"},
        "failsafe": {"bms_timeout_s": 2},
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert str(caught.value) == "failsafe.bms_timeout_s: must be greater than bms.poll_interval_s (2)"


# --- which keys the file set -------------------------------------------------------------------------------


def test_explicit_keys_are_the_keys_the_file_wrote() -> None:
    config = parse_config(
        {
            "bms": {"port": "p"},
            "inverter": {"profile": "x", "can": {"interface": "virtual", "channel": "c", "fd": True}},
            "failsafe": {"bms_timeout_s": 10, "silence_after_s": None},  # the default, and null: still written
        }
    )
    assert config.explicit_keys == {
        "bms",
        "bms.port",
        "inverter",
        "inverter.profile",
        "inverter.can",
        "inverter.can.interface",
        "inverter.can.channel",
        "inverter.can.fd",
        "failsafe",
        "failsafe.bms_timeout_s",
        "failsafe.silence_after_s",
    }
    assert config.failsafe == FailsafeConfig()  # the values are the defaults all the same


def test_explicit_keys_are_not_a_key_of_the_file() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"bms": {"port": "p"}, "inverter": {"profile": "x"}, "explicit_keys": ["bms.baudrate"]})
    assert (
        str(caught.value)
        == "explicit_keys: unknown key (known keys: bms, inverter, extra_outputs, state_dir, limits, charging, "
        "failsafe, logging, mqtt, status, relay, control)"
    )
    config = parse_config({"bms": {"port": "p"}, "inverter": {"profile": "x"}})
    assert "explicit_keys" not in config.to_json()
    assert "explicit_keys" not in repr(config)


def _origins(data: dict[str, Any]) -> dict[str, str]:
    effective = resolve(parse_config(data), load_profile("pylontech-can"))
    return {key: origin for key, _, origin in effective.rows()}


def test_origin_is_config_when_the_file_sets_the_default_value() -> None:
    can = {"interface": "virtual", "channel": "c"}
    written = _origins(
        {
            "bms": {"port": "p"},
            "inverter": {"profile": "pylontech-can", "can": {**can, "bitrate": 500000}},
            "failsafe": {"bms_timeout_s": 10.0},  # equal to the default
        }
    )
    assert written == {
        "inverter.can.bitrate": "config",  # equal to the profile's bitrate
        "failsafe.bms_timeout_s": "config",
        "failsafe.silence_after_s": "profile pylontech-can",
        "heartbeat.timeout_s": "profile pylontech-can",
    }
    left_out = _origins({"bms": {"port": "p"}, "inverter": {"profile": "pylontech-can", "can": can}})
    assert left_out["failsafe.bms_timeout_s"] == "default"
    assert left_out["inverter.can.bitrate"] == "profile pylontech-can"
    # A Config built in code has no file; a value other than the default was still chosen by someone.
    parsed = parse_config({"bms": {"port": "p"}, "inverter": {"profile": "x", "can": can}})
    coded = dataclasses.replace(parsed, failsafe=FailsafeConfig(bms_timeout_s=12.0), explicit_keys=frozenset())
    effective = resolve(coded, load_profile("pylontech-can"))
    assert effective.bms_timeout_s.origin == "config"


def test_every_limits_engine_setting_is_a_config_key() -> None:
    """The config's limits and charging sections reach every tunable of the engine, and nothing else."""
    from dataclasses import fields

    from gateway.app import limits_settings
    from gateway.config import ChargingConfig, LimitsConfig
    from gateway.limits.settings import LimitsSettings

    keys = {f.name for f in fields(LimitsConfig)} | {f.name for f in fields(ChargingConfig)}
    assert keys == {f.name for f in fields(LimitsSettings)}
    config = parse_config(
        {
            "bms": {"port": "/dev/null"},
            "inverter": {"profile": "pylontech-can"},
            "limits": {"bms_current_fraction": 0.5, "current_hold_s": 7},
            "charging": {"chemistry": "lto", "bulk_cell_v": 2.65, "soc_cap_pct": None},
        }
    )
    tuning = limits_settings(config)
    assert (tuning.bms_current_fraction, tuning.current_hold_s) == (0.5, 7.0)
    assert (tuning.chemistry, tuning.bulk_cell_v, tuning.soc_cap_pct) == (Chemistry.LTO, 2.65, None)
    assert tuning.absorption_s == LimitsSettings().absorption_s


@pytest.mark.parametrize(
    ("charging", "message"),
    [
        (
            {"float_cell_v": 3.5, "bulk_cell_v": 3.45},
            "charging.float_cell_v: must not be above charging.bulk_cell_v (3.45)",
        ),
        (
            {"charge_knee_cell_v": 3.55, "charge_cutoff_cell_v": 3.55},
            "charging.charge_knee_cell_v: must be below charging.charge_cutoff_cell_v (3.55)",
        ),
        (
            {"chemistry": "lipo"},
            "charging.chemistry: expected one of lifepo4, li_ion, lto, got 'lipo' (did you mean lifepo4?)",
        ),
        ({"bulk_cell_v": 345}, "charging.bulk_cell_v: expected a number from 1 to 5, got 345"),
    ],
)
def test_charging_mistakes_name_the_key(charging: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"bms": {"port": "/dev/null"}, "inverter": {"profile": "pylontech-can"}, "charging": charging})
    assert str(info.value) == message
