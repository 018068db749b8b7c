"""Shared by the telemetry tests: real snapshots from a real control loop, and a real mosquitto on loopback.

:func:`snapshot` runs :class:`~gateway.runtime.ControlLoop` on a fake clock with a simulated pack, so that the
snapshots carry real limits with real reasons. :class:`Broker` starts ``mosquitto`` on a free loopback port; when
mosquitto is not installed the test is skipped, except under ``CI=true`` where it fails (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from gateway.clock import FakeClock
from gateway.config import MqttConfig
from gateway.limits import LimitsSettings
from gateway.model import PackReading
from gateway.profiles import load_profile
from gateway.runtime import ControlLoop, LoopSettings, Snapshot
from gateway.sim.scenarios import SCENARIOS
from gateway.telemetry.mqtt import MqttPublisher

PROFILE = load_profile("pylontech-can")
BMS_TIMEOUT_S = 5.0
SETTINGS = LoopSettings(poll_interval_s=1.0, bms_timeout_s=BMS_TIMEOUT_S, silence_after_s=15.0, limits=LimitsSettings())


class NullSink:
    def __init__(self) -> None:
        self.frames: list[tuple[int, bytes]] = []

    def send(self, can_id: int, data: bytes) -> bool:
        self.frames.append((can_id, data))
        return True


def stamped(reading: PackReading, at_s: float) -> PackReading:
    return replace(
        reading,
        state=replace(reading.state, measured_at_s=at_s),
        settings=replace(reading.settings, measured_at_s=at_s),
    )


SNAPSHOT_CLOCK_S = 1000.0
"""The monotonic time of :func:`snapshot`'s fake clock when it takes the reading, s."""


def snapshot(scenario: str = "normal-charge", *, at_s: float = 0.0, stale: bool = False) -> Snapshot:
    """A snapshot of a loop that got one reading of ``scenario`` at ``at_s`` (and then went stale)."""
    clock = FakeClock(start_s=SNAPSHOT_CLOCK_S)
    loop = ControlLoop(PROFILE, NullSink(), clock, SETTINGS)
    loop.on_readings((stamped(SCENARIOS[scenario].step(at_s).reading, clock.monotonic()),))
    loop.tick()
    if stale:
        clock.advance(BMS_TIMEOUT_S + 1)
        loop.tick()
    return loop.snapshot()


# --- mosquitto -------------------------------------------------------------------------------------------------


def mosquitto_binary() -> str:
    """The broker's path; skips the test (fails it under CI=true) when mosquitto is not installed."""
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None
    )
    if found is None:
        message = "mosquitto is not installed (apt-get install mosquitto); these tests need a real broker"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}: under CI=true this is a failure, .ci/run must install it")
        pytest.skip(message)
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Broker:
    """A mosquitto on 127.0.0.1:``port`` with its own config in ``directory``; start/stop/kill at will."""

    def __init__(self, directory: Path, *, extra: str = "", port: int | None = None) -> None:
        self.binary = mosquitto_binary()
        self.directory = directory
        self.port = port or free_port()
        self.config = directory / "mosquitto.conf"
        self.log = directory / "mosquitto.log"
        anonymous = "" if "password_file" in extra else "allow_anonymous true\n"
        user = "user root\n" if os.geteuid() == 0 else ""  # as root, mosquitto would drop to a user who cannot read tmp
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n{anonymous}{user}persistence false\n{extra}", encoding="utf-8"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=out, stderr=out)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        log = self.log.read_text(errors="replace")[-2000:]
        self.stop()
        failure = f"mosquitto did not start on port {self.port}: {log}"
        if os.environ.get("CI") == "true":
            pytest.fail(failure)
        pytest.skip(failure)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    # With ``log_type all`` in ``extra`` the broker's log shows every PUBLISH it takes and sends, by client id.

    def published_by(self, client_id: str) -> list[tuple[str, bool]]:
        """(topic, retain flag) of every PUBLISH the broker received from ``client_id``, in order."""
        pattern = rf"Received PUBLISH from {re.escape(client_id)} \(d\d, q\d, r(\d), m\d+, '(.*)', \.\.\. \("
        return [(m.group(2), m.group(1) == "1") for m in re.finditer(pattern, self.log.read_text(errors="replace"))]

    def replayed_to(self, client_id: str, topic: str) -> int:
        """How many retained messages on ``topic`` the broker replayed to ``client_id`` when it subscribed (across
        restarts: the log is appended)."""
        pattern = rf"Sending PUBLISH to {re.escape(client_id)} \(d\d, q\d, r1, m\d+, '{re.escape(topic)}'"
        return len(re.findall(pattern, self.log.read_text(errors="replace")))


def password_file(path: Path, users: dict[str, str]) -> Path:
    """Write a mosquitto password file with ``users`` (name → password), for ``password_file`` in a broker's
    ``extra`` config."""
    tool = shutil.which("mosquitto_passwd") or str(Path(mosquitto_binary()).parent.parent / "bin/mosquitto_passwd")
    for index, (user, password) in enumerate(users.items()):
        create = ["-c"] if index == 0 else []
        subprocess.run([tool, "-b", *create, str(path), user, password], check=True, capture_output=True)
    return path


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    retain: bool

    @property
    def text(self) -> str:
        return self.payload.decode()


class Recorder:
    """A paho subscriber that records every message it gets, with helpers to wait for one."""

    def __init__(self, port: int, topics: tuple[str, ...] = ("#",), **options: Any) -> None:
        self.messages: list[Message] = []
        self._lock = threading.Condition()
        self._client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
        if "username" in options:
            self._client.username_pw_set(options["username"], options.get("password"))
        if "ca_file" in options:
            self._client.tls_set(ca_certs=options["ca_file"])
        subscribed = threading.Event()
        self._client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics])
        self._client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.loop_start()
        assert subscribed.wait(5), "the test's subscriber could not subscribe"

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Message(message.topic, bytes(message.payload), bool(message.retain)))
            self._lock.notify_all()

    def wait_for(self, match: Callable[[Message], bool], timeout_s: float = 5.0, what: str = "message") -> Message:
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while True:
                found = next((m for m in self.messages if match(m)), None)
                if found is not None:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    topics = sorted({m.topic for m in self.messages})
                    raise AssertionError(f"no {what} within {timeout_s} s; topics seen: {topics}")
                self._lock.wait(left)

    def on(self, topic: str) -> list[Message]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def send(port: int, topic: str, payload: str, *, retain: bool = False) -> None:
    """Publish one message as Home Assistant would, and wait until the broker has it."""
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout_s} s")
        time.sleep(0.02)


# --- paho stood in for, on fake time ----------------------------------------------------------------------------


class FakeInfo:
    """paho's MQTTMessageInfo: published once the fake broker took it."""

    def __init__(self, done: bool) -> None:
        self.rc = 0
        self.done = done

    def is_published(self) -> bool:
        return self.done


class FakePaho:
    """paho's client as the publisher thread uses it; records every message with the fake time it was handed
    over. While ``stalled`` nothing handed over is ever sent (a broker that stopped reading)."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.stalled = False
        self.published: list[tuple[float, str, str]] = []
        self._infos: list[FakeInfo] = []

    def publish(self, topic: str, payload: str, qos: int = 0, retain: bool = False) -> FakeInfo:
        self.published.append((self.clock.monotonic(), topic, payload))
        info = FakeInfo(done=not self.stalled)
        self._infos.append(info)
        return info

    def subscribe(self, topic: str, qos: int = 0) -> None:
        pass

    def release(self) -> None:
        """The broker reads again: everything handed over is sent."""
        self.stalled = False
        for info in self._infos:
            info.done = True

    def times(self, topic: str) -> list[float]:
        return [at_s for at_s, t, _ in self.published if t == topic]


CONNECTED = SimpleNamespace(is_failure=False)
HA_ONLINE = SimpleNamespace(topic="homeassistant/status", payload=b"online", retain=False)


def stepped_publisher(clock: FakeClock, node_id: str = "testnode", **options: Any) -> tuple[MqttPublisher, FakePaho]:
    """A connected publisher whose thread's rounds the test runs itself (``_step``), on fake time; ``options``
    go to :class:`MqttPublisher`."""
    paho = FakePaho(clock)
    config = MqttConfig(enabled=True, host="127.0.0.1", port=1, node_id=node_id, min_interval_s=0.5)
    publisher = MqttPublisher(config, clock, **options)
    publisher._client = paho  # type: ignore[assignment]
    publisher._on_connect(paho, None, None, CONNECTED, None)  # type: ignore[arg-type]
    return publisher, paho


# --- Home Assistant discovery ------------------------------------------------------------------------------------

BMS_DATA_SUFFIXES = ("state", "cells", "settings")
"""The topics that carry the BMS's values (SOC, voltages, current, power, cells, temperatures, its settings)."""


def assert_availability(config: dict[str, Any], base: str, where: str) -> None:
    """A discovery config of the gateway publishing under ``base``: an entity showing BMS values is available
    while both the gateway and the data are (``availability_mode: all``); every other one (the button, the
    fail-safe, alarms, limits, diagnostics) while the gateway is. ``where`` names the config in a failure."""
    gateway, data = f"{base}/availability", f"{base}/data_availability"
    if config.get("state_topic") in {f"{base}/{suffix}" for suffix in BMS_DATA_SUFFIXES}:
        assert config["availability"] == [
            {"topic": gateway, "payload_available": "online", "payload_not_available": "offline"},
            {"topic": data, "payload_available": "online", "payload_not_available": "offline"},
        ], where
        assert config["availability_mode"] == "all", where
        assert "availability_topic" not in config, where  # Home Assistant refuses both forms together
    else:
        assert config["availability_topic"] == gateway, where
        assert (config["payload_available"], config["payload_not_available"]) == ("online", "offline"), where
        assert "availability" not in config and "availability_mode" not in config, where
