"""The fail-safe relay against a fake GPIO line: dropped on fail-safe and shutdown, closed only on fresh data."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest
from telemetry_fixtures import BMS_TIMEOUT_S, PROFILE, SETTINGS, NullSink, stamped

from gateway.clock import FakeClock
from gateway.config import RelayConfig, parse_config
from gateway.errors import ConfigError
from gateway.runtime import ControlLoop, FailsafeState
from gateway.sim.scenarios import SCENARIOS
from gateway.telemetry.relay import FailsafeRelay, GpiodLine, open_relay


class FakeLine:
    def __init__(self) -> None:
        self.values: list[bool] = []
        self.released = False

    def set(self, energized: bool) -> None:
        assert not self.released, "driven after release"
        self.values.append(energized)

    def release(self) -> None:
        self.released = True

    @property
    def energized(self) -> bool:
        return bool(self.values) and self.values[-1]


def test_relay_follows_the_real_control_loop() -> None:
    clock = FakeClock()
    loop = ControlLoop(PROFILE, NullSink(), clock, SETTINGS)
    line = FakeLine()
    relay = FailsafeRelay(line)

    def tick(seconds: float, *, fresh: bool) -> None:
        end = clock.monotonic() + seconds
        while clock.monotonic() < end:
            if fresh:
                loop.on_readings((stamped(SCENARIOS["normal-charge"].step(0).reading, clock.monotonic()),))
            loop.tick()
            relay.update(loop.state)  # what Telemetry.after_tick does
            clock.advance(0.5)

    assert line.values == [False], "dropped from the very start"
    tick(3, fresh=False)
    assert loop.state is FailsafeState.WAITING and not line.energized, "no data yet: stays dropped"
    tick(3, fresh=True)
    assert loop.state is FailsafeState.NORMAL and line.energized
    tick(BMS_TIMEOUT_S + 1, fresh=False)
    assert loop.state is FailsafeState.STALE and not line.energized, "fail-safe engaged: dropped"
    tick(20, fresh=False)
    assert loop.state is FailsafeState.SILENT and not line.energized
    tick(1, fresh=True)
    assert loop.state is FailsafeState.NORMAL and line.energized, "fresh data: closed again"
    assert line.values == [False, True, False, True], "one drive per change, no chatter"
    loop.shutdown()
    relay.shutdown()
    assert line.values[-1] is False and line.released


def test_relay_drops_at_shutdown_from_normal() -> None:
    line = FakeLine()
    relay = FailsafeRelay(line)
    relay.update(FailsafeState.NORMAL)
    relay.shutdown()
    assert line.values == [False, True, False] and line.released


class BrokenLine(FakeLine):
    def __init__(self) -> None:
        super().__init__()
        self.broken = True

    def set(self, energized: bool) -> None:
        if self.broken:
            raise OSError(5, "Input/output error")
        super().set(energized)


def test_a_failing_line_logs_once_and_is_retried(caplog: pytest.LogCaptureFixture) -> None:
    line = BrokenLine()
    relay = FailsafeRelay(line)
    for _ in range(5):
        relay.update(FailsafeState.NORMAL)
    assert len([r for r in caplog.records if "cannot drive the GPIO line" in r.getMessage()]) == 1
    line.broken = False
    relay.update(FailsafeState.NORMAL)
    assert line.values == [True] and relay.closed


def test_disabled_relay_opens_nothing() -> None:
    assert open_relay(RelayConfig()) is None


def test_missing_gpiod_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gpiod", None)
    with pytest.raises(ConfigError) as caught:
        open_relay(RelayConfig(enabled=True, line=17))
    assert str(caught.value) == "relay.enabled: needs gpiod: pip install 'bms-gateway[relay]'"


def fake_gpiod(requests: list[dict[str, Any]], *, fail: bool = False) -> tuple[types.ModuleType, types.ModuleType]:
    """Just enough of libgpiod v2's Python API (gpiod.request_lines, LineSettings, line.Value/Direction)."""
    line = types.ModuleType("gpiod.line")
    line.Value = types.SimpleNamespace(ACTIVE="active", INACTIVE="inactive")  # type: ignore[attr-defined]
    line.Direction = types.SimpleNamespace(OUTPUT="output")  # type: ignore[attr-defined]
    gpiod = types.ModuleType("gpiod")
    gpiod.LineSettings = lambda **kw: kw  # type: ignore[attr-defined]

    class Request:
        def __init__(self, record: dict[str, Any]) -> None:
            self.record = record

        def set_value(self, offset: int, value: str) -> None:
            self.record["values"].append((offset, value))

        def release(self) -> None:
            self.record["released"] = True

    def request_lines(path: str, consumer: str, config: dict[int, Any]) -> Request:
        if fail:
            raise OSError(16, "Device or resource busy")
        record = {"path": path, "consumer": consumer, "config": config, "values": [], "released": False}
        requests.append(record)
        return Request(record)

    gpiod.request_lines = request_lines  # type: ignore[attr-defined]
    return gpiod, line


def test_gpiod_line_requests_an_inactive_output(monkeypatch: pytest.MonkeyPatch) -> None:
    requests: list[dict[str, Any]] = []
    gpiod, line = fake_gpiod(requests)
    monkeypatch.setitem(sys.modules, "gpiod", gpiod)
    monkeypatch.setitem(sys.modules, "gpiod.line", line)
    relay = open_relay(RelayConfig(enabled=True, chip="/dev/gpiochip4", line=17, active_low=True))
    assert relay is not None
    (request,) = requests
    assert (request["path"], request["consumer"]) == ("/dev/gpiochip4", "bms-gateway")
    assert request["config"] == {17: {"direction": "output", "output_value": "inactive", "active_low": True}}
    relay.update(FailsafeState.NORMAL)
    relay.update(FailsafeState.STALE)
    relay.shutdown()
    assert request["values"] == [(17, "inactive"), (17, "active"), (17, "inactive"), (17, "inactive")]
    assert request["released"]


def test_a_busy_gpio_line_is_one_config_line(monkeypatch: pytest.MonkeyPatch) -> None:
    gpiod, line = fake_gpiod([], fail=True)
    monkeypatch.setitem(sys.modules, "gpiod", gpiod)
    monkeypatch.setitem(sys.modules, "gpiod.line", line)
    with pytest.raises(ConfigError) as caught:
        GpiodLine(RelayConfig(enabled=True, line=17))
    assert str(caught.value) == "relay.line: cannot request line 17 on /dev/gpiochip0: Device or resource busy"


def test_enabled_relay_needs_a_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"bms": {"port": "p"}, "inverter": {"profile": "x"}, "relay": {"enabled": True}})
    assert str(caught.value) == "relay.line: missing (needed when relay.enabled is true)"
