"""MQTT against a real mosquitto on loopback: Home Assistant discovery, retained availability, the last will of a
killed gateway, TLS and passwords, reconnects, and a control loop that a dead broker costs nothing.

Every test that needs the broker skips when mosquitto is not installed, and fails under ``CI=true``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from telemetry_fixtures import (
    HA_ONLINE,
    Broker,
    FakePaho,
    Message,
    Recorder,
    assert_availability,
    free_port,
    password_file,
    send,
    snapshot,
    stepped_publisher,
    wait_until,
)

from gateway.clock import FakeClock, SystemClock
from gateway.config import MqttConfig, MqttTlsConfig, parse_config
from gateway.errors import ConfigError
from gateway.secret import Secret
from gateway.telemetry import mqtt as mqtt_module
from gateway.telemetry.ha_discovery import entities, topic_payloads
from gateway.telemetry.mqtt import QUEUE_DEPTH, MqttPublisher
from gateway.telemetry.mqtt_outbox import PAHO_WINDOW, STATE_DEPTH, Outbox, Outgoing

NODE = "testnode"
BASE = f"bms-gateway/{NODE}"
AVAILABILITY = f"{BASE}/availability"
DATA_AVAILABILITY = f"{BASE}/data_availability"
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path)
    broker.start()
    yield broker
    broker.stop()


def publisher_for(port: int, **options: object) -> MqttPublisher:
    config = MqttConfig(enabled=True, host="127.0.0.1", port=port, node_id=NODE, min_interval_s=0.5, **options)  # type: ignore[arg-type]
    return MqttPublisher(config, SystemClock())


@pytest.fixture
def recorder(broker: Broker) -> Iterator[Recorder]:
    recorder = Recorder(broker.port, ("homeassistant/#", f"{BASE}/#"))
    yield recorder
    recorder.close()


def is_online(message: Message) -> bool:
    return message.topic == AVAILABILITY and message.text == "online"


# --- discovery ------------------------------------------------------------------------------------------------


def test_discovery_configs_are_what_home_assistant_needs(broker: Broker, recorder: Recorder) -> None:
    publisher = publisher_for(broker.port)
    publisher.start()
    try:
        publisher.offer(snapshot())
        recorder.wait_for(lambda m: m.topic == f"{BASE}/limits", what="limits payload")
        recorder.wait_for(lambda m: m.topic.endswith("/cell_16_voltage/config"), what="cell discovery")
        # six payload topics and the two availability topics
        wait_until(lambda: len({m.topic for m in recorder.messages if m.topic.startswith(f"{BASE}/")}) >= 8)
    finally:
        publisher.stop()

    configs = {
        m.topic: json.loads(m.payload) for m in recorder.messages if m.topic.startswith("homeassistant/") and m.payload
    }
    # The "Forget silent packs" button (tested on its own below); the rest are the sensors.
    button = configs.pop(f"homeassistant/button/{NODE}/forget_silent_packs/config")
    assert button["command_topic"] == f"{BASE}/packs/forget" and button["payload_press"] == "PRESS"
    assert button["availability_topic"] == AVAILABILITY and button["unique_id"] == f"{NODE}_forget_silent_packs"
    expected = entities(16, 2)
    assert len(configs) == len(expected)
    payloads = {
        m.topic: json.loads(m.payload)
        for m in recorder.messages
        if m.topic.startswith(f"{BASE}/") and m.topic not in (AVAILABILITY, DATA_AVAILABILITY)
    }
    unique_ids = set()
    for topic, config in configs.items():
        component, node, object_id, tail = topic.split("/")[1:]
        assert (node, tail) == (NODE, "config"), topic
        assert component in ("sensor", "binary_sensor"), topic
        assert config["unique_id"] == f"{NODE}_{object_id}"
        unique_ids.add(config["unique_id"])
        assert config["name"]
        assert_availability(config, BASE, topic)
        assert config["device"]["identifiers"] == [f"bms-gateway_{NODE}"]
        assert config["device"]["manufacturer"] and config["device"]["sw_version"]
        # The template names a key that the state topic really carries.
        key = re.search(r"value_json\.(\w+)", config["value_template"])
        assert key is not None, topic
        assert config["state_topic"] in payloads, f"{topic}: nothing published on {config['state_topic']}"
        value = payloads[config["state_topic"]][key.group(1)]
        unit = {"voltage": "V", "current": "A", "power": "W", "temperature": "°C", "battery": "%", "duration": "s"}
        device_class = config.get("device_class")
        if component == "sensor" and device_class in unit:
            assert config["unit_of_measurement"] == unit[device_class], topic
            assert config["state_class"] == "measurement", topic
            assert value is None or isinstance(value, int | float), topic
        if device_class == "enum":
            assert value in config["options"] and "unit_of_measurement" not in config, topic
        if component == "binary_sensor":
            assert (config["payload_on"], config["payload_off"]) == ("ON", "OFF")
            assert isinstance(value, bool), topic
    assert len(unique_ids) == len(configs)
    # Retained: a Home Assistant that subscribes later gets every config, and availability.
    late = Recorder(broker.port, ("homeassistant/#", AVAILABILITY))
    try:
        late.wait_for(lambda m: m.topic == AVAILABILITY and m.retain, what="retained availability")
        retained = len(configs) + 1  # and the button
        wait_until(lambda: len([m for m in late.messages if m.topic.startswith("homeassistant/")]) == retained)
        assert all(m.retain for m in late.messages)
    finally:
        late.close()
    # The limits carry the limiter and reason of each limit.
    limits = payloads[f"{BASE}/limits"]
    assert limits["charge_current_limiter"] == "ceiling"
    assert limits["charge_current_reason"].startswith("ceiling: ")
    assert limits["charge_current_limit_a"] == 100.0


def test_availability_online_retained_then_offline_on_stop(broker: Broker, recorder: Recorder) -> None:
    publisher = publisher_for(broker.port)
    publisher.start()
    recorder.wait_for(is_online, what="online")
    late = Recorder(broker.port, (AVAILABILITY,))
    try:
        assert late.wait_for(lambda m: m.topic == AVAILABILITY).retain
    finally:
        late.close()
    publisher.stop()
    recorder.wait_for(lambda m: m.topic == AVAILABILITY and m.text == "offline", what="offline on stop")
    assert not publisher.connected


def test_last_will_when_the_gateway_is_killed(broker: Broker, recorder: Recorder, tmp_path: Path) -> None:
    """A gateway process killed with SIGKILL cannot say goodbye: the broker publishes its last will."""
    script = (
        "import sys, time\n"
        "from gateway.clock import SystemClock\n"
        "from gateway.config import MqttConfig\n"
        "from gateway.telemetry.mqtt import MqttPublisher\n"
        f"p = MqttPublisher(MqttConfig(enabled=True, host='127.0.0.1', port={broker.port}, node_id='{NODE}'), "
        "SystemClock())\n"
        "p.start()\n"
        "time.sleep(60)\n"
    )
    process = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    try:
        recorder.wait_for(is_online, timeout_s=15, what="online from the gateway process")
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=5)
        recorder.wait_for(lambda m: m.topic == AVAILABILITY and m.text == "offline", what="the last will")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    late = Recorder(broker.port, (AVAILABILITY,))
    try:
        retained = late.wait_for(lambda m: m.topic == AVAILABILITY)
        assert (retained.text, retained.retain) == ("offline", True)
    finally:
        late.close()


# --- rate and change ------------------------------------------------------------------------------------------


def test_publishes_on_change_at_a_bounded_rate(broker: Broker, recorder: Recorder) -> None:
    publisher = publisher_for(broker.port)  # min_interval_s 0.5
    publisher.start()
    try:
        recorder.wait_for(is_online)
        start = time.monotonic()
        t = 0.0
        while time.monotonic() - start < 2.0:  # a loop offering a changing snapshot at about 200 Hz
            publisher.offer(snapshot(at_s=t))
            t += 0.3
            time.sleep(0.005)
        time.sleep(0.6)
        state = recorder.on(f"{BASE}/state")
        assert 2 <= len(state) <= 2.0 / 0.5 + 2, len(state)
        settings = recorder.on(f"{BASE}/settings")
        assert len(settings) == 1, "unchanged payloads are not published again"
        # A fail-safe change goes out within about a second, not at the next min_interval.
        publisher.offer(snapshot(stale=True))
        recorder.wait_for(lambda m: m.topic == f"{BASE}/health" and '"stale"' in m.text, timeout_s=1.5)
    finally:
        publisher.stop()


# --- a broker that is down, gone or slow costs the loop nothing -----------------------------------------------


def fake_control_loop(publisher: MqttPublisher, seconds: float) -> tuple[int, float]:
    """A loop ticking every millisecond that offers a snapshot each tick: (ticks, longest offer(), s)."""
    item = snapshot()
    ticks, longest = 0, 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        before = time.perf_counter()
        publisher.offer(item)
        longest = max(longest, time.perf_counter() - before)
        ticks += 1
        time.sleep(0.001)
    return ticks, longest


def test_offer_never_blocks_while_the_broker_is_down_and_reconnects(broker: Broker, recorder: Recorder) -> None:
    publisher = publisher_for(broker.port)
    publisher.start()
    try:
        recorder.wait_for(is_online)
        up_ticks, _ = fake_control_loop(publisher, 1.0)
        recorder.close()
        broker.stop()
        wait_until(lambda: not publisher.connected, what="the publisher noticing the broker is gone")
        down_ticks, longest_s = fake_control_loop(publisher, 2.0)
        assert longest_s < 0.05, f"offer() took {longest_s * 1000:.1f} ms with the broker down"
        assert down_ticks >= up_ticks, "the loop ran slower with the broker down"
        assert len(publisher._queue) <= QUEUE_DEPTH

        broker.start()  # same port: the publisher reconnects by itself and says online again
        again = Recorder(broker.port, (AVAILABILITY, f"{BASE}/state"))
        try:
            again.wait_for(is_online, timeout_s=40, what="online after the broker came back")
            publisher.offer(snapshot(at_s=5.0))
            again.wait_for(lambda m: m.topic == f"{BASE}/state", timeout_s=5, what="state after reconnect")
        finally:
            again.close()
    finally:
        publisher.stop()


def test_offer_never_blocks_against_a_broker_that_never_answers() -> None:
    """A TCP listener that never accepts: paho's thread waits in connect, the loop does not."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(0)
        publisher = publisher_for(silent.getsockname()[1])
        publisher.start()
        try:
            ticks, longest_s = fake_control_loop(publisher, 1.0)
            assert ticks > 100 and longest_s < 0.05
            assert not publisher.connected
        finally:
            before = time.monotonic()
            publisher.stop()
            assert time.monotonic() - before < 10, "stop() must not hang on a dead broker"


def test_the_queue_is_bounded_and_drops_the_oldest() -> None:
    publisher = publisher_for(1)  # never started: nothing takes from the queue
    items = [snapshot(at_s=float(i)) for i in range(10)]
    for item in items:
        publisher.offer(item)
    assert list(publisher._queue) == items[-QUEUE_DEPTH:]
    assert (publisher.offered, publisher.dropped) == (10, 10 - QUEUE_DEPTH)


# --- a flood costs bounded work and memory (security audit M2) --------------------------------------------------


def test_a_home_assistant_status_flood_resyncs_at_most_once_per_30_s_of_fake_time() -> None:
    """``p_mqtt_resync.py``: 500k ``online`` in 60 s made the gateway republish all discovery each time."""
    clock = FakeClock()
    publisher, paho = stepped_publisher(clock)
    publisher.offer(snapshot())
    publisher._step()  # the connect's resync
    marker = f"{BASE}/availability"  # published once per resync
    start_s = clock.monotonic()
    for _ in range(2400):  # 8 messages a second (exact in binary fractions) for 300 s
        publisher._on_message(paho, None, HA_ONLINE)  # type: ignore[arg-type]
        publisher._step()
        clock.advance(0.125)
    resyncs = [at_s - start_s for at_s in paho.times(marker)]
    assert resyncs == [30.0 * n for n in range(10)]  # the connect's, then one per 30 s (was one per message)
    assert publisher.ha_restarts.requests == 2400
    # Discovery went out with each resync only: a cell's config as often as availability.
    assert len(paho.times(f"homeassistant/sensor/{NODE}/cell_01_voltage/config")) == len(resyncs)


def test_a_request_within_the_pause_is_served_at_its_end_not_dropped() -> None:
    clock = FakeClock()
    publisher, paho = stepped_publisher(clock)
    publisher.offer(snapshot())
    publisher._step()  # the connect's resync at 0 s
    marker = f"{BASE}/availability"
    clock.advance(5.0)
    publisher._on_message(paho, None, HA_ONLINE)  # type: ignore[arg-type]
    assert publisher._step() == pytest.approx(25.0)  # the publisher thread sleeps until the pause is over
    clock.advance(24.9)
    publisher._step()
    assert len(paho.times(marker)) == 1
    clock.advance(0.1)
    publisher._step()
    assert len(paho.times(marker)) == 2  # one resync for the request, at 30 s
    clock.advance(60.0)
    assert publisher._step() is None and len(paho.times(marker)) == 2  # and nothing more without a request


def test_a_stalled_broker_bounds_the_backlog_and_discovery_and_availability_still_go_out() -> None:
    clock = FakeClock()
    publisher, paho = stepped_publisher(clock)
    paho.stalled = True
    for second in range(200):  # a loop offering a changing snapshot, 200 s of a broker that reads nothing
        publisher.offer(snapshot(at_s=float(second)))
        publisher._step()
        clock.advance(1.0)
    assert len(paho.published) == PAHO_WINDOW  # paho was never handed more than the window
    outbox = publisher._outbox
    assert outbox.states_waiting <= STATE_DEPTH and outbox.waiting < 200  # newest value per topic, bounded
    paho.release()
    while outbox.waiting:  # the broker reads again; each round hands over the next window
        publisher._step()
        paho.release()
    handed = [topic for _, topic, _ in paho.published]
    discovery = [topic for topic in handed if topic.startswith("homeassistant/")]
    assert handed[:2] == [AVAILABILITY, DATA_AVAILABILITY]  # availability and discovery first, none dropped
    assert f"homeassistant/sensor/{NODE}/cell_16_voltage/config" in discovery
    assert len(set(discovery)) == len(discovery) == len(publisher._discovery_topics)
    assert handed.index(f"{BASE}/state") > max(handed.index(topic) for topic in discovery)


def test_the_outbox_drops_the_oldest_state_never_discovery_or_availability() -> None:
    outbox = Outbox(state_depth=8, window=2)
    paho = FakePaho(FakeClock())
    paho.stalled = True
    outbox.put_first(Outgoing("avail", "online", qos=1, retain=True))
    for index in range(1000):
        outbox.put_first(Outgoing(f"config/{index % 50}", str(index), qos=1, retain=True))
        dropped = outbox.put_state(Outgoing(f"state/{index}", "x"))
        assert (dropped is None) == (index < 8)
    assert outbox.states_waiting == 8 and outbox.dropped_states == 1000 - 8
    assert outbox.drain(paho) == 2 and outbox.drain(paho) == 0  # the window is full while paho sends nothing
    paho.release()
    while outbox.drain(paho):
        paho.release()
    handed = [(topic, payload) for _, topic, payload in paho.published]
    assert handed[0] == ("avail", "online")
    assert handed[1:51] == [(f"config/{n}", str(950 + n)) for n in range(50)]  # newest payload per topic
    assert [topic for topic, _ in handed[51:]] == [f"state/{index}" for index in range(992, 1000)]


# --- TLS and passwords ---------------------------------------------------------------------------------------


def tls_broker(directory: Path, names: str = "IP:127.0.0.1,DNS:localhost") -> Broker:
    """A started mosquitto with TLS, a self-signed certificate for ``names`` (``directory/broker.crt``) and user
    ``gw`` with password ``s3cret-pw``."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    cert, key = directory / "broker.crt", directory / "broker.key"
    common_name = names.split(",")[0].partition(":")[2]
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={common_name}",
         "-addext", f"subjectAltName={names}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    passwords = password_file(directory / "passwords", {"gw": "s3cret-pw"})
    broker = Broker(directory, extra=f"password_file {passwords}\ncafile {cert}\ncertfile {cert}\nkeyfile {key}\n")
    broker.start()
    return broker


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[Broker]:
    broker = tls_broker(tmp_path)
    yield broker
    broker.stop()


def test_tls_with_username_and_password(
    secure_broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tls = MqttTlsConfig(enabled=True, ca_file=str(tmp_path / "broker.crt"))
    good = publisher_for(secure_broker.port, username="gw", password=Secret("s3cret-pw"), tls=tls)
    good.start()
    try:
        wait_until(lambda: good.connected, timeout_s=10, what="a TLS connection with the right password")
    finally:
        good.stop()
    bad = publisher_for(secure_broker.port, username="gw", password=Secret("wrong-pw"), tls=tls)
    bad.start()
    try:
        wait_until(lambda: bad.last_error is not None, timeout_s=10, what="the refusal")
        assert not bad.connected
        assert "refused" in bad.last_error or "cannot connect" in bad.last_error
    finally:
        bad.stop()
    assert "s3cret-pw" not in caplog.text and "wrong-pw" not in caplog.text


def connect_failure_lines(publisher: MqttPublisher, caplog: pytest.LogCaptureFixture) -> list[str]:
    """The log lines of a publisher that cannot connect, once it has failed and retried at least once."""
    publisher.start()
    try:
        wait_until(lambda: publisher.last_error is not None, timeout_s=10, what="a failed connection")
        first = publisher.last_error
        # paho retries after 1 s: the same reason again must not be logged again
        wait_until(lambda: publisher.connect_failures >= 2, timeout_s=10, what="a second failed attempt")
        assert not publisher.connected and publisher.last_error == first
    finally:
        publisher.stop()
    ours = [r.getMessage() for r in caplog.records if r.name == "gateway.telemetry.mqtt"]
    return [line for line in ours if "connect" in line]


TRUST = "hint: set mqtt.tls.ca_file to the CA certificate that signed the broker's (now: the system's CAs)"


def test_a_certificate_the_gateway_does_not_trust_is_named_with_a_hint(
    secure_broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tls = MqttTlsConfig(enabled=True)  # the system's CAs: the broker's self-signed certificate is not among them
    lines = connect_failure_lines(publisher_for(secure_broker.port, tls=tls, client_id="gw-trust"), caplog)
    broker = f"127.0.0.1:{secure_broker.port}"
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"mqtt: cannot connect to {broker}: TLS certificate verify failed (self")
    assert lines[0].endswith(f"; {TRUST} (retrying in the background)")


def test_a_certificate_for_another_name_is_a_host_name_mismatch(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    broker = tls_broker(tmp_path, names="DNS:elsewhere.example")
    try:
        tls = MqttTlsConfig(enabled=True, ca_file=str(tmp_path / "broker.crt"))  # trusted, but not for 127.0.0.1
        lines = connect_failure_lines(publisher_for(broker.port, tls=tls, client_id="gw-name"), caplog)
    finally:
        broker.stop()
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f"mqtt: cannot connect to 127.0.0.1:{broker.port}: TLS host name mismatch, the broker's certificate is not "
        "for 127.0.0.1 ("
    )
    assert "; hint: set mqtt.host to a name the certificate carries, or mqtt.tls.insecure: true" in lines[0]


def test_a_refused_connection_says_so_with_a_hint(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    port = free_port()  # nothing listens there
    lines = connect_failure_lines(publisher_for(port, client_id="gw-refused"), caplog)
    assert lines == [
        f"mqtt: cannot connect to 127.0.0.1:{port}: connection refused; hint: is the broker running and listening "
        f"on port {port} of 127.0.0.1? (mqtt.host, mqtt.port) (retrying in the background)"
    ]


def test_a_missing_ca_file_is_one_config_line(tmp_path: Path) -> None:
    tls = MqttTlsConfig(enabled=True, ca_file=str(tmp_path / "nope.crt"))
    with pytest.raises(ConfigError, match=r"^mqtt\.tls\.ca_file: cannot load the TLS files: "):
        publisher_for(1, tls=tls).start()


def test_missing_paho_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "paho.mqtt.client", None)
    with pytest.raises(ConfigError) as caught:
        mqtt_module.require_paho()
    assert str(caught.value) == "mqtt.enabled: needs paho-mqtt: pip install 'bms-gateway[mqtt]'"


def test_config_keeps_the_password_out_of_json_and_repr() -> None:
    config = parse_config(
        {
            "bms": {"port": "p"},
            "inverter": {"profile": "x"},
            "mqtt": {"enabled": True, "username": "u", "password": "pw1"},
        }
    )
    assert config.mqtt.password is not None and config.mqtt.password.reveal() == "pw1"
    assert "pw1" not in json.dumps(config.to_json()) and "pw1" not in repr(config)
    assert config.to_json()["mqtt"]["password"] == "<redacted>"


def test_payloads_leave_out_what_is_not_known_yet() -> None:
    waiting = snapshot()
    empty = type(waiting)(
        at_s=0.0, state=waiting.state, reading=None, limits=None, reading_age_s=None, last_error=None,
        heartbeat_age_s=None, frames_sent=0, send_failures=0,
    )  # fmt: skip
    assert set(topic_payloads(empty)) == {"health"}
    assert set(topic_payloads(waiting)) == {"health", "state", "cells", "alarms", "settings", "limits", "energy"}


def test_a_latched_pack_is_an_alarm_on_mqtt_and_urgent() -> None:
    calm = snapshot()
    latched = dataclasses.replace(calm, latched_packs=frozenset({"3"}))
    assert json.loads(topic_payloads(calm)["alarms"]) == {"any": False, "count": 0, "active": [], "latched_packs": []}
    assert json.loads(topic_payloads(latched)["alarms"]) == {
        "any": True,
        "count": 1,
        "active": ["pack_latched"],
        "latched_packs": ["3"],
    }
    # It goes out within the urgent gap, not at the next periodic batch.
    assert mqtt_module._urgent_key(latched) != mqtt_module._urgent_key(calm)


class Latching:
    """Stands in for the control loop: pack "3" is latched; records what it was asked to forget."""

    def __init__(self) -> None:
        self.latched_packs = frozenset({"3"})
        self.forgotten: list[tuple[str, str]] = []

    def forget_pack(self, pack_id: str, *, source: str) -> str:
        self.forgotten.append((pack_id, source))
        return "dropped"


def test_the_forget_button_forgets_latched_packs_but_never_on_a_retained_press(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.telemetry.pack_button")
    topic = f"{BASE}/packs/forget"
    send(broker.port, topic, "PRESS", retain=True)  # left on the broker: replayed to whoever subscribes
    publisher = publisher_for(broker.port)
    loop = Latching()
    assert publisher.forget_button is not None
    publisher.forget_button.attach(loop)
    publisher.start()
    try:
        wait_until(lambda: any("retained" in r.getMessage() for r in caplog.records), what="the retained press")
        assert loop.forgotten == []
        send(broker.port, topic, "", retain=True)  # clears the retained message (delivered as one, refused)
        send(broker.port, topic, "press")
        wait_until(lambda: any("is not PRESS" in r.getMessage() for r in caplog.records), what="a wrong payload")
        send(broker.port, topic, "PRESS")
        wait_until(lambda: bool(loop.forgotten), what="the press")
        assert loop.forgotten == [("3", "mqtt")]
    finally:
        publisher.stop()
    refusals = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert refusals[0] == (
        f"mqtt: refused a retained 'forget silent packs' press on {topic}: nobody sent it now, the broker replayed "
        f"it (further ones are only counted); hint: clear it with mosquitto_pub -r -n -t '{topic}'"
    )
