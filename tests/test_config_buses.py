"""``bms`` as a list (several buses, mixed drivers): parsing, one-line errors naming the entry, and assembly into
one composite driver polled in turn."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from multipack_fixtures import four_at

from gateway.app import describe_buses, limits_settings, open_battery
from gateway.bms.composite import CompositeDriver
from gateway.bms.driver import MultiPackDriver
from gateway.bms.jk_modbus_driver import JkModbusDriver
from gateway.bms.jk_uart import JkUartDriver
from gateway.clock import FakeClock
from gateway.config import BmsConfig, Config, ConfigError, parse_config
from gateway.errors import FrameError, GatewayError, LinkError, LinkTimeout
from gateway.limits.settings import CurrentSharing
from gateway.model import PackReading

INVERTER = {"profile": "pylontech-can"}
TWO_BUSES: list[dict[str, Any]] = [
    {"driver": "jk-modbus", "port": "/dev/ttyUSB0", "addresses": [1, 2, 3]},
    {"driver": "jk-uart", "port": "/dev/ttyUSB1"},
]


def parse(bms: object, **sections: Any) -> Config:
    return parse_config({"bms": bms, "inverter": INVERTER, **sections})


def error(bms: object, **sections: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(bms, **sections)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_a_list_gives_one_entry_per_bus() -> None:
    config = parse(TWO_BUSES)
    assert [bus.port for bus in config.buses] == ["/dev/ttyUSB0", "/dev/ttyUSB1"]
    assert config.bms == config.buses[0] and config.bms.addresses == (1, 2, 3)
    assert config.buses[1] == BmsConfig(driver="jk-uart", port="/dev/ttyUSB1")
    assert "bms[1].port" in config.explicit_keys
    out = config.to_json()
    assert [bus["port"] for bus in out["bms"]] == ["/dev/ttyUSB0", "/dev/ttyUSB1"]
    # One mapping is one bus, shown as a mapping.
    single = parse(TWO_BUSES[0])
    assert single.buses == (single.bms,) and isinstance(single.to_json()["bms"], dict)
    assert parse(TWO_BUSES[:1]).buses == single.buses


@pytest.mark.parametrize(
    ("bms", "message"),
    [
        ([], "bms: expected a mapping, or a non-empty list of mappings, got an empty list"),
        ([TWO_BUSES[0], {"driver": "jk-uart"}], "bms[1].port: missing"),
        ([TWO_BUSES[0], "ttyUSB1"], "bms[1]: expected a mapping, got 'ttyUSB1'"),
        ([TWO_BUSES[0], None], "bms[1].port: missing"),
        ([{"port": "a", "baudrate": "fast"}], "bms[0].baudrate: expected a positive integer, got 'fast'"),
        ([TWO_BUSES[0], {"prot": "/dev/ttyUSB1"}], "bms[1].prot: unknown key (did you mean port?)"),
        (
            [TWO_BUSES[0], {"port": "/dev/ttyUSB1", "addresses": [1, 2]}],
            "bms[1].addresses: only for driver jk-modbus (driver is jk-uart)",
        ),
        (
            [TWO_BUSES[0], {"driver": "jk-modbus", "port": "/dev/ttyUSB0"}],
            "bms[1].port: /dev/ttyUSB0 is also bms[0].port: one entry per port",
        ),
        (
            [TWO_BUSES[0], {"port": "/dev/ttyUSB1", "poll_interval_s": 2}],
            "bms[1].poll_interval_s: set it on bms[0] only: every bus is polled in one cycle",
        ),
        ("ttyUSB0", "bms: expected a mapping, got 'ttyUSB0'"),
    ],
)
def test_list_errors_name_the_entry(bms: object, message: str) -> None:
    assert error(bms) == message


def test_the_first_entry_sets_the_poll_interval_for_all() -> None:
    config = parse([{**TWO_BUSES[0], "poll_interval_s": 2}, {**TWO_BUSES[1], "poll_interval_s": 2}])
    assert config.bms.poll_interval_s == 2.0
    message = error([{**TWO_BUSES[0], "poll_interval_s": 2}, TWO_BUSES[1]], failsafe={"bms_timeout_s": 1.5})
    assert message == "failsafe.bms_timeout_s: must be greater than bms.poll_interval_s (2)"


def test_sharing_keys() -> None:
    config = parse(TWO_BUSES[0], limits={"current_sharing": "capacity", "offline_current_fraction": 0.5})
    tuning = limits_settings(config)
    assert (tuning.current_sharing, tuning.offline_current_fraction) == (CurrentSharing.CAPACITY, 0.5)
    assert limits_settings(parse(TWO_BUSES[0])).current_sharing is CurrentSharing.AUTO
    assert error(TWO_BUSES[0], limits={"current_sharing": "even"}) == (
        "limits.current_sharing: expected one of equal, capacity, auto, got 'even'"
    )
    assert error(TWO_BUSES[0], limits={"offline_current_fraction": 0}) == (
        "limits.offline_current_fraction: expected a number greater than 0 and at most 1, got 0"
    )


def test_open_battery_opens_one_driver_per_bus() -> None:
    config = parse(TWO_BUSES)
    driver = open_battery(config, FakeClock())
    assert isinstance(driver, CompositeDriver) and isinstance(driver, MultiPackDriver)
    assert [type(d) for d in driver.drivers] == [JkModbusDriver, JkUartDriver]
    assert driver.pack_ids == (
        "jk-modbus:/dev/ttyUSB0#1",
        "jk-modbus:/dev/ttyUSB0#2",
        "jk-modbus:/dev/ttyUSB0#3",
        "jk-uart:/dev/ttyUSB1",
    )
    assert describe_buses(config) == "jk-modbus on /dev/ttyUSB0 (units 1, 2, 3) + jk-uart on /dev/ttyUSB1"
    assert isinstance(open_battery(parse(TWO_BUSES[1]), FakeClock()), JkUartDriver)


# --- the composite driver ------------------------------------------------------------------------------------


class Bus:
    """A driver of a few packs that answers, answers in part, or fails as a whole."""

    name = "fake"

    def __init__(self, prefix: str, units: tuple[int, ...]) -> None:
        self.pack_ids = tuple(f"{prefix}#{u}" for u in units)
        self.pack_errors: Mapping[str, GatewayError] = {}
        self.failure: GatewayError | None = None
        self.silent: tuple[str, ...] = ()
        self.closed = False

    def read(self) -> tuple[PackReading, ...]:
        if self.failure is not None:
            raise self.failure
        readings = four_at(1.0, prefix="")
        out = []
        for pack_id, reading in zip(self.pack_ids, readings, strict=False):
            if pack_id not in self.silent:
                out.append(type(reading)(pack_id, reading.state, reading.settings, reading.device))
        self.pack_errors = {p: LinkTimeout(f"no reply from {p}") for p in self.silent}
        return tuple(out)

    def close(self) -> None:
        self.closed = True


def test_composite_reads_every_bus_in_turn_and_reports_each_missing_pack() -> None:
    first, second = Bus("a", (1, 2)), Bus("b", (1,))
    driver = CompositeDriver([first, second])
    assert [r.pack_id for r in driver.read()] == ["a#1", "a#2", "b#1"]
    assert driver.pack_errors == {}
    first.silent = ("a#2",)
    second.failure = LinkError("serial port b lost")
    assert [r.pack_id for r in driver.read()] == ["a#1"]
    assert {p: str(e) for p, e in driver.pack_errors.items()} == {
        "a#2": "no reply from a#2",
        "b#1": "serial port b lost",
    }
    first.failure = LinkTimeout("no reply from units 1, 2 on a")
    with pytest.raises(LinkTimeout, match=r"^no reply from units 1, 2 on a \(and 1 more bus failed\)$"):
        driver.read()
    first.failure = FrameError("bad checksum", "on a")
    with pytest.raises(FrameError, match=r"^bad checksum: on a \(and 1 more bus failed\)$"):
        driver.read()
    driver.close()
    assert first.closed and second.closed
    with pytest.raises(ValueError):
        CompositeDriver([])
