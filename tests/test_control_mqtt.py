"""The BMS control switches in Home Assistant, end to end: a real mosquitto on loopback, the gateway as
``build_gateway`` assembles it and ``Gateway.run`` runs it, and the simulated JK on the other end of a
null-modem, every command byte on the wire checked.

Control off: no switch exists (their discovery topics carry empty retained payloads) and a command on their
topics puts no write on the wire. Control on: three switches, and ``OFF`` on the charge switch's command topic
turns the simulated BMS's charge switch off, read back, and its state topic shows ``OFF``.

Skipped without mosquitto, except under ``CI=true``, where that fails.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from nw_wire import Wire
from telemetry_fixtures import Broker, Recorder, send, wait_until

from gateway.app import Gateway, build_gateway
from gateway.bms import jk_nw
from gateway.bms.control import Switch
from gateway.bms.jk_uart import JkUartDriver
from gateway.clock import SystemClock
from gateway.config import Config, parse_config
from gateway.errors import GatewayError, LinkTimeout
from gateway.model import PackReading
from gateway.runtime import Poller
from gateway.sim.jk_uart import SIMULATOR_PASSWORD, JkUartSimulator
from gateway.sim.nullmodem import NullModem
from gateway.sim.scenarios import SCENARIOS
from gateway.telemetry.switches import SwitchBridge

NODE = "ctlnode"
BASE = f"bms-gateway/{NODE}"
SWITCHES = ("charge", "discharge", "balancer")
DISCOVERY = {name: f"homeassistant/switch/{NODE}/{name}_switch/config" for name in SWITCHES}
COMMAND = {name: f"{BASE}/control/{name}/set" for name in SWITCHES}
STATE = {name: f"{BASE}/control/{name}" for name in SWITCHES}
READ_ALL = jk_nw.Command.READ_ALL
POLL_S = 0.2


@dataclass
class Rig:
    broker: Broker
    simulator: JkUartSimulator
    modem: NullModem
    wire: Wire

    def config(self, control: dict[str, Any] | None) -> Config:
        data: dict[str, Any] = {
            "bms": {"driver": "jk-uart", "port": str(self.modem.b_path), "timeout_s": 0.5, "poll_interval_s": POLL_S},
            "inverter": {
                "profile": "pylontech-can",
                "can": {"interface": "virtual", "channel": f"bms-gateway-ctl-{id(self)}"},
            },
            "mqtt": {
                "enabled": True,
                "host": "127.0.0.1",
                "port": self.broker.port,
                "node_id": NODE,
                "min_interval_s": 0.5,
            },
            "status": {"enabled": False},
        }
        if control is not None:
            data["control"] = control
        return parse_config(data)

    @contextlib.contextmanager
    def running(self, control: dict[str, Any] | None) -> Iterator[Gateway]:
        """The gateway as ``bms-gateway run`` assembles and runs it, on a thread of its own."""
        gateway = build_gateway(self.config(control), SystemClock())
        stop = threading.Event()
        thread = threading.Thread(target=gateway.run, args=(stop,), name="gateway-under-test", daemon=True)
        thread.start()
        try:
            yield gateway
        finally:
            stop.set()
            thread.join(15)
            assert not thread.is_alive(), "the gateway did not stop"

    def read(self) -> PackReading:
        """One poll on a port of its own (only while no gateway runs)."""
        driver = JkUartDriver(port=str(self.modem.b_path), timeout_s=0.5, retries=1, clock=SystemClock())
        try:
            return driver.read()[0]
        finally:
            driver.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    broker = Broker(tmp_path)
    broker.start()
    try:
        with NullModem(tmp_path / "cable") as modem:
            simulator = JkUartSimulator(SCENARIOS["normal-charge"], SystemClock(), port=str(modem.a_path))
            simulator.start()
            try:
                warm = JkUartDriver(port=str(modem.b_path), timeout_s=0.3, retries=0, clock=SystemClock())
                deadline = time.monotonic() + 10
                while True:  # the simulator opens its end in its own thread: poll until it answers
                    try:
                        warm.read()
                        break
                    except LinkTimeout:
                        assert time.monotonic() < deadline, "the simulator never answered"
                warm.close()
                simulator.commands_seen.clear()
                yield Rig(broker, simulator, modem, Wire(modem))
            finally:
                simulator.stop()
    finally:
        broker.stop()


def retained(port: int, topics: tuple[str, ...], settle_s: float = 1.0) -> dict[str, str]:
    """What a Home Assistant subscribing now gets for ``topics``: the retained payloads."""
    late = Recorder(port, topics)
    try:
        time.sleep(settle_s)
        return {m.topic: m.text for m in late.messages if m.retain}
    finally:
        late.close()


def test_control_off_no_switches_and_commands_write_nothing(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    # A switch left from a time control was on: it must disappear.
    send(rig.broker.port, DISCOVERY["charge"], json.dumps({"name": "old"}), retain=True)
    recorder = Recorder(rig.broker.port, ("homeassistant/#", f"{BASE}/#"))
    try:
        with rig.running(None) as gateway:
            assert gateway.telemetry.switches is not None and not gateway.telemetry.switches.enabled
            for topic in DISCOVERY.values():
                recorder.wait_for(lambda m, t=topic: m.topic == t and m.payload == b"", what=f"empty {topic}")
            recorder.wait_for(lambda m: m.topic == f"{BASE}/state", what="a state payload")
            polls = rig.simulator.commands_seen.count(READ_ALL)
            for name in SWITCHES:
                send(rig.broker.port, COMMAND[name], "OFF")
                send(rig.broker.port, COMMAND[name], "ON")
            wait_until(lambda: rig.simulator.commands_seen.count(READ_ALL) >= polls + 5, what="five more polls")
        assert not [m for m in recorder.messages if m.topic in STATE.values()]
    finally:
        recorder.close()

    assert set(rig.wire.commands()) == {READ_ALL}  # only read-all requests ever reached the BMS
    assert set(rig.simulator.commands_seen) == {READ_ALL}
    assert rig.simulator.writes_applied == rig.simulator.writes_rejected == 0
    assert rig.simulator.switch_overrides() == {}
    assert retained(rig.broker.port, tuple(DISCOVERY.values())) == {}  # no switch config left on the broker
    assert rig.read().settings.charge_mos_switch is True


def test_control_on_switch_charging_off_from_home_assistant(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    password = SIMULATOR_PASSWORD.reveal()
    recorder = Recorder(rig.broker.port, ("homeassistant/#", f"{BASE}/#"))
    try:
        with rig.running({"enabled": True, "password": password}):
            configs = {}
            for name, topic in DISCOVERY.items():
                found = recorder.wait_for(lambda m, t=topic: m.topic == t and bool(m.payload), what=f"{name} config")
                configs[name] = json.loads(found.payload)
            for name, config in configs.items():
                assert config["command_topic"] == COMMAND[name]
                assert config["state_topic"] == STATE[name]
                assert config["device"]["identifiers"] == [f"bms-gateway_{NODE}"]
                assert config["optimistic"] is False
            for name in SWITCHES:
                recorder.wait_for(lambda m, n=name: m.topic == STATE[n] and m.text == "ON", what=f"{name} ON")
            assert set(rig.wire.commands()) == {READ_ALL}  # nothing written before anyone asked

            send(rig.broker.port, COMMAND["charge"], "OFF")
            recorder.wait_for(lambda m: m.topic == STATE["charge"] and m.text == "OFF", 15, what="charge OFF")
            assert rig.simulator.switch_overrides() == {Switch.CHARGE: False}
            states = retained(rig.broker.port, tuple(STATE.values()))
            assert states == {STATE["charge"]: "OFF", STATE["discharge"]: "ON", STATE["balancer"]: "ON"}
            assert set(retained(rig.broker.port, tuple(DISCOVERY.values()), settle_s=0.5)) == set(DISCOVERY.values())
    finally:
        recorder.close()

    commands = rig.wire.commands()
    assert commands.count(jk_nw.Command.PASSWORD) == commands.count(jk_nw.Command.WRITE) == 1
    assert rig.simulator.writes_applied == 1 and rig.simulator.writes_rejected == 0
    after = rig.read()
    assert after.settings.charge_mos_switch is False and after.state.charge_mos_on is False
    assert "control: charge switch set off, verified (asked by mqtt)" in caplog.messages
    assert password not in caplog.text


# --- the pieces --------------------------------------------------------------------------------------------


class FailingDriver:
    name = "failing"

    def read(self) -> tuple[PackReading, ...]:
        raise GatewayError("no BMS")

    def close(self) -> None:
        pass


class Sink:
    def __init__(self) -> None:
        self.failures = 0

    def on_readings(self, readings: tuple[PackReading, ...]) -> None:
        raise AssertionError("no reading expected")

    def on_poll_failed(self, error: GatewayError) -> None:
        self.failures += 1


def test_between_polls_runs_on_the_poller_thread_after_each_poll(caplog: pytest.LogCaptureFixture) -> None:
    sink, calls = Sink(), []

    def hook() -> None:
        calls.append((threading.current_thread().name, sink.failures))
        if len(calls) == 1:
            raise RuntimeError("boom")  # logged; the polling goes on

    poller = Poller(FailingDriver(), sink, SystemClock(), 0.01, between_polls=hook)  # type: ignore[arg-type]
    stop = threading.Event()
    thread = threading.Thread(target=poller.run, args=(stop,), name="bms-poller")
    thread.start()
    wait_until(lambda: len(calls) >= 3, what="three hook calls")
    stop.set()
    thread.join(5)
    assert all(name == "bms-poller" for name, _ in calls)
    assert [polls for _, polls in calls[:3]] == [1, 2, 3]  # each right after its poll
    assert "between_polls hook failed" in caplog.text


def test_bridge_without_controller_subscribes_nothing_and_keeps_no_command() -> None:
    config = parse_config(
        {
            "bms": {"driver": "jk-uart", "port": "/dev/null"},
            "inverter": {"profile": "pylontech-can", "can": {"interface": "virtual", "channel": "x"}},
            "control": {"enabled": False, "password": SIMULATOR_PASSWORD.reveal()},
        }
    )
    bridge = SwitchBridge(config, NODE, None)
    assert bridge.command_topics() == []
    assert bridge.discovery() == dict.fromkeys(DISCOVERY.values(), "")
    assert bridge.on_command(COMMAND["charge"], b"OFF") is False
    assert bridge.states(SCENARIOS["normal-charge"].step(100).reading) == []
    bridge.run_pending()  # nothing waits
