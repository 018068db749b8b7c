"""The telemetry config sections and the hooks the runtime calls (gateway.telemetry.service)."""

from __future__ import annotations

import socket
import sys
import urllib.error
import urllib.request
from typing import Any

import pytest
from telemetry_fixtures import PROFILE, SETTINGS, NullSink, free_port, stamped

from gateway.clock import FakeClock
from gateway.config import Config, parse_config
from gateway.errors import ConfigError
from gateway.runtime import ControlLoop
from gateway.sim.scenarios import SCENARIOS
from gateway.telemetry.mqtt import MqttPublisher, resolve_node_id
from gateway.telemetry.service import SNAPSHOT_INTERVAL_S, Telemetry


def config(**sections: Any) -> Config:
    return parse_config({"bms": {"port": "p"}, "inverter": {"profile": "x"}, **sections})


def error(**sections: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        config(**sections)
    return str(caught.value)


def test_defaults() -> None:
    c = config()
    assert (c.mqtt.enabled, c.mqtt.host, c.mqtt.port, c.mqtt.topic_prefix) == (False, "localhost", 1883, "bms-gateway")
    assert (c.mqtt.discovery, c.mqtt.discovery_prefix, c.mqtt.min_interval_s) == (True, "homeassistant", 5.0)
    assert (c.status.enabled, c.status.bind, c.status.port, c.status.allow_remote) == (True, "127.0.0.1", 9480, False)
    assert (c.relay.enabled, c.relay.chip, c.relay.line) == (False, "/dev/gpiochip0", None)


@pytest.mark.parametrize(
    ("sections", "expected"),
    [
        ({"mqtt": {"password": "x"}}, "mqtt.password: needs mqtt.username"),
        ({"mqtt": {"port": 0}}, "mqtt.port: expected a port number from 1 to 65535, got 0"),
        ({"mqtt": {"enabled": "yes"}}, "mqtt.enabled: expected true or false, got 'yes'"),
        ({"mqtt": {"password": 5}}, "mqtt.password: expected a non-empty string"),
        (
            {"mqtt": {"topic_prefix": "bms/#"}},
            "mqtt.topic_prefix: expected a topic without +, #, empty levels or a leading/trailing /, got 'bms/#'",
        ),
        ({"mqtt": {"node_id": "my pi"}}, "mqtt.node_id: expected letters, digits, _ and - only, got 'my pi'"),
        ({"mqtt": {"tls": {"cert_file": "c.pem"}}}, "mqtt.tls.key_file: missing (needed with mqtt.tls.cert_file)"),
        ({"mqtt": {"min_interval_s": 0.1}}, "mqtt.min_interval_s: expected a number from 0.5 to 3600, got 0.1"),
        ({"mqtt": {"tsl": {}}}, "mqtt.tsl: unknown key (did you mean tls?)"),
        ({"status": {"port": 70000}}, "status.port: expected a port number from 1 to 65535, got 70000"),
        ({"relay": {"line": -1}}, "relay.line: expected a non-negative integer, got -1"),
    ],
)
def test_mistakes_are_one_exact_line(sections: dict[str, Any], expected: str) -> None:
    assert error(**sections) == expected


def test_node_id_defaults_to_the_host_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "rpi.local")
    assert resolve_node_id(config().mqtt) == "rpi_local"
    assert resolve_node_id(config(mqtt={"node_id": "garage"}).mqtt) == "garage"


def test_mqtt_enabled_without_paho_fails_before_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "paho.mqtt.client", None)
    with pytest.raises(ConfigError, match=r"^mqtt\.enabled: needs paho-mqtt: pip install 'bms-gateway\[mqtt\]'$"):
        Telemetry.from_config(config(mqtt={"enabled": True}), FakeClock(), {})


def test_a_busy_status_port_is_logged_and_the_gateway_runs_on(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        telemetry = Telemetry.from_config(config(status={"port": port}), FakeClock(), {})
        telemetry.start()
        try:
            assert telemetry.status_server is None
            assert f"status: cannot listen on 127.0.0.1:{port}" in caplog.text and "running without it" in caplog.text
        finally:
            telemetry.stop()


def test_after_tick_hands_over_snapshots_at_a_bounded_rate() -> None:
    clock = FakeClock()
    loop = ControlLoop(PROFILE, NullSink(), clock, SETTINGS)
    c = config(status={"enabled": False})
    publisher = MqttPublisher(c.mqtt, clock, node_id="n")  # never started: offer() only queues
    telemetry = Telemetry.from_config(c, clock, {})
    telemetry.publisher = publisher
    for _ in range(100):  # 10 s of ticks every 0.1 s, a reading every second
        if round(clock.monotonic() * 10) % 10 == 0:
            loop.on_readings((stamped(SCENARIOS["normal-charge"].step(0).reading, clock.monotonic()),))
        loop.tick()
        telemetry.after_tick(loop)
        clock.advance(0.1)
    assert publisher.offered <= 10 / SNAPSHOT_INTERVAL_S + 2
    latest = telemetry.latest.get()
    assert latest is not None and latest.limits is not None


def test_the_status_endpoint_takes_pack_commands_to_the_running_loop() -> None:
    clock = FakeClock()
    loop = ControlLoop(PROFILE, NullSink(), clock, SETTINGS)
    loop.on_readings((stamped(SCENARIOS["normal-charge"].step(0).reading, clock.monotonic()),))
    loop.tick()
    telemetry = Telemetry.from_config(config(status={"port": free_port()}), clock, {})
    telemetry.start(loop)
    try:
        assert telemetry.status_server is not None
        url = f"http://127.0.0.1:{telemetry.status_server.port}/packs/nine/forget"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=5)
        assert refused.value.code == 409
        assert refused.value.read().decode().startswith("no pack 'nine': the packs are ")
    finally:
        telemetry.stop()
