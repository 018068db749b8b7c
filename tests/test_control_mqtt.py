"""The BMS control switches in Home Assistant, end to end: a real mosquitto on loopback, the gateway as
``build_gateway`` assembles it and ``Gateway.run`` runs it, and the simulated JK on the other end of a
null-modem, every command byte on the wire checked.

Control off: no switch exists (their discovery topics carry empty retained payloads) and a command on their
topics puts no write on the wire. Control on with ``control.mqtt`` (the gateway logs in to the broker as its own
user): three switches, and ``OFF`` on the charge switch's command topic turns the simulated BMS's charge switch
off, read back, and its state topic shows ``OFF``. A retained ``OFF`` is never obeyed: not at the start, not
after a broker restart, not after another client took over the gateway's client id (security audit H1). MQTT
control with an anonymous or overheard broker is a config error (H2).

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
from typing import Any, cast

import paho.mqtt.client as mqtt
import pytest
import yaml
from nw_wire import Wire
from telemetry_fixtures import Broker, Recorder, password_file, send, wait_until

from gateway.app import Gateway, build_gateway
from gateway.bms import jk_nw
from gateway.bms.control import Switch
from gateway.bms.jk_uart import JkUartDriver
from gateway.cli import main
from gateway.clock import SystemClock
from gateway.config import Config, parse_config
from gateway.control import Controller
from gateway.errors import GatewayError, LinkTimeout
from gateway.model import PackReading
from gateway.runtime import Poller
from gateway.sim.jk_uart import SIMULATOR_PASSWORD, JkUartSimulator
from gateway.sim.nullmodem import NullModem
from gateway.sim.scenarios import SCENARIOS
from gateway.telemetry.switches import SwitchBridge

NODE = "ctlnode"
CLIENT_ID = f"bms-gateway-{NODE}"
BASE = f"bms-gateway/{NODE}"
BROKER_USER, BROKER_PASSWORD = "gateway", "gw-broker-pw"
"""The gateway's own broker user (MQTT control needs one); the test's clients stand in for Home Assistant
anonymously."""
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
                "username": BROKER_USER,
                "password": BROKER_PASSWORD,
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
    # A broker with users, that also lets anonymous clients in (the test's), keeps retained messages across a
    # restart (as a real one with persistence does) and logs every PUBLISH by client id.
    passwords = password_file(tmp_path / "passwords", {BROKER_USER: BROKER_PASSWORD})
    store = tmp_path / "store"
    store.mkdir()
    broker = Broker(
        tmp_path,
        extra=f"password_file {passwords}\nallow_anonymous true\npersistence true\npersistence_location {store}/\n"
        "log_type all\n",
    )
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
        with rig.running({"enabled": True, "password": password, "mqtt": True}):
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


def settled(rig: Rig, caplog: pytest.LogCaptureFixture, tag: str) -> None:
    """Wait until the gateway has handled every command delivered to it so far.

    A live command the gateway must refuse (payload ``tag`` on the balancer switch) is sent now: the broker
    delivers a connection's messages in order, and the poller runs waiting commands in arrival order, so once
    its refusal is logged, anything delivered before it has run too (a write included).
    """
    send(rig.broker.port, COMMAND["balancer"], tag)
    wait_until(lambda: any(tag in r.getMessage() for r in caplog.records), 15, what=f"the refusal of {tag!r}")


def test_a_retained_off_is_never_obeyed_at_start_after_a_broker_restart_or_a_takeover(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """Security audit H1: ``p_mqtt_retained.py`` switched the discharge off three times (DCL 0) this way."""
    caplog.set_level(logging.INFO)
    send(rig.broker.port, COMMAND["discharge"], "OFF", retain=True)  # left by anyone, any time before
    control = {"enabled": True, "password": SIMULATOR_PASSWORD.reveal(), "mqtt": True}
    with rig.running(control) as gateway:
        publisher = gateway.telemetry.publisher
        assert publisher is not None

        def replayed(times: int, tag: str) -> None:
            """The broker has replayed the retained OFF to the gateway ``times`` times (once per subscription)."""
            wait_until(
                lambda: rig.broker.replayed_to(CLIENT_ID, COMMAND["discharge"]) >= times, 30, what=f"replay {times}"
            )
            settled(rig, caplog, tag)
            assert jk_nw.Command.WRITE not in rig.wire.commands(), f"the retained OFF was obeyed ({tag})"
            assert rig.simulator.writes_applied == 0 and rig.simulator.switch_overrides() == {}

        replayed(1, "sync-at-start")
        rig.broker.stop()  # the broker restarts: it keeps the retained OFF, the gateway subscribes again
        rig.broker.start()
        replayed(2, "sync-after-restart")
        intruder = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, client_id=CLIENT_ID)
        intruder.connect("127.0.0.1", rig.broker.port)  # takes the session over: the broker drops the gateway
        intruder.loop(1.0)  # CONNACK; without a loop of its own it never comes back once the gateway reconnects
        try:
            replayed(3, "sync-after-takeover")
        finally:
            sock = intruder.socket()
            if sock is not None:
                sock.close()
        assert publisher.retained.refused == 3

        send(rig.broker.port, COMMAND["discharge"], "OFF")  # a live command is obeyed: the gateway listened
        wait_until(lambda: rig.simulator.writes_applied == 1, 15, what="the live OFF written")
    assert rig.simulator.switch_overrides() == {Switch.DISCHARGE: False}
    refusals = [r.getMessage() for r in caplog.records if "refused a retained" in r.getMessage()]
    assert refusals == [
        f"mqtt: refused a retained discharge switch command on {COMMAND['discharge']}: nobody sent it now, the "
        "broker replayed it (further ones are only counted); hint: clear it with mosquitto_pub -r -n -t "
        f"'{COMMAND['discharge']}'"
    ]
    # Everything the gateway published, as the broker saw it: never a command topic.
    published = rig.broker.published_by(CLIENT_ID)
    assert {f"{BASE}/availability", f"{BASE}/state", STATE["discharge"]} <= {topic for topic, _ in published}
    assert [topic for topic, _ in published if topic.endswith("/set") or topic == f"{BASE}/packs/forget"] == []


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
    assert bridge.on_command(COMMAND["charge"], b"OFF", retained=False) is False
    assert bridge.states(SCENARIOS["normal-charge"].step(100).reading) == []
    bridge.run_pending()  # nothing waits


def bridge_config(control: dict[str, Any]) -> Config:
    return parse_config(
        {
            "bms": {"driver": "jk-uart", "port": "/dev/null"},
            "inverter": {"profile": "pylontech-can", "can": {"interface": "virtual", "channel": "x"}},
            "mqtt": {"enabled": True, "username": BROKER_USER, "password": BROKER_PASSWORD},
            "control": control,
        }
    )


def test_control_without_control_mqtt_offers_no_switch_to_mqtt() -> None:
    """``control.enabled`` allows ``bms-gateway control``; Home Assistant's switches need ``control.mqtt`` too."""
    password = SIMULATOR_PASSWORD.reveal()
    controller = cast(Controller, object())  # never called: nothing reaches it
    bridge = SwitchBridge(bridge_config({"enabled": True, "password": password}), NODE, controller)
    assert not bridge.enabled and bridge.command_topics() == []
    assert bridge.discovery() == dict.fromkeys(DISCOVERY.values(), "")  # switches left from before are removed
    assert bridge.on_command(COMMAND["charge"], b"OFF", retained=False) is False
    opted_in = SwitchBridge(bridge_config({"enabled": True, "password": password, "mqtt": True}), NODE, controller)
    assert opted_in.enabled and sorted(opted_in.command_topics()) == sorted(COMMAND.values())


def write_config(path: Path, mqtt_section: dict[str, Any], *, control_mqtt: bool = True) -> Path:
    data = {
        "bms": {"driver": "jk-uart", "port": "/dev/null"},  # a device on every machine: check wants one
        "inverter": {"profile": "pylontech-can", "can": {"interface": "virtual", "channel": "x"}},
        "mqtt": {"enabled": True, **mqtt_section},
        "control": {"enabled": True, "password": "123456", "mqtt": control_mqtt},
        "status": {"enabled": False},
    }
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


UNSAFE_MQTT_CONTROL = {
    "anonymous": ({"host": "localhost"}, "control.mqtt: needs mqtt.username and mqtt.password"),
    "no-password": ({"host": "localhost", "username": "gw"}, "control.mqtt: needs mqtt.username and mqtt.password"),
    "plaintext-remote": (
        {"host": "192.168.1.5", "username": "gw", "password": "pw"},
        "control.mqtt: mqtt.host 192.168.1.5 is not a loopback address and mqtt.tls.enabled is false",
    ),
    "plaintext-hostname": (
        {"host": "broker.lan", "username": "gw", "password": "pw"},
        "control.mqtt: mqtt.host broker.lan is not a loopback address",
    ),
}


@pytest.mark.parametrize("command", ["check", "run"])
@pytest.mark.parametrize("case", sorted(UNSAFE_MQTT_CONTROL))
def test_mqtt_control_needs_credentials_and_tls_or_a_loopback_broker(
    command: str, case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    section, needle = UNSAFE_MQTT_CONTROL[case]
    assert main([command, "-c", str(write_config(tmp_path / "config.yaml", section))]) == 2
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == "" and len(lines) == 1, err
    assert lines[0].startswith(f"bms-gateway: error: {needle}") and "; hint: " in lines[0], lines[0]
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "section",
    [
        {"host": "127.0.0.1", "username": "gw", "password": "pw"},
        {"host": "::1", "username": "gw", "password": "pw"},
        {"host": "broker.lan", "port": 8883, "username": "gw", "password": "pw", "tls": {"enabled": True}},
    ],
)
def test_mqtt_control_with_credentials_over_tls_or_loopback_is_accepted(
    section: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check", "-c", str(write_config(tmp_path / "config.yaml", section))]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    broker = f"{section['host']}:{section.get('port', 1883)}"
    transport = "TLS" if "tls" in section else "loopback"
    assert (
        f"control: bms-gateway control and Home Assistant switches (broker {broker} as gw, {transport}): the "
        "broker's ACL decides who may publish to bms-gateway/+/control/+/set\n"
    ) in out


def test_check_says_home_assistant_switches_need_control_mqtt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_config(tmp_path / "config.yaml", {"host": "localhost"}, control_mqtt=False)  # anonymous: fine
    assert main(["check", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "control: bms-gateway control only (Home Assistant switches need control.mqtt: true and mqtt.enabled)" in out


# --- the documented broker ACL -----------------------------------------------------------------------------

CONTROL_DOC = Path(__file__).resolve().parent.parent / "docs" / "control.md"
ACL_USERS = {"bms-gateway": "gw-pw", "homeassistant": "ha-pw"}


def readme_acl() -> str:
    """The mosquitto ACL the documentation gives for MQTT control (docs/control.md, moved from the README)."""
    text = CONTROL_DOC.read_text(encoding="utf-8")
    start = text.index("# the gateway: its state topics")
    return text[start : text.index("```", start)]


def publish_as(port: int, user: str, messages: list[tuple[str, str]]) -> None:
    """Publish ``messages`` (topic, payload) in order as ``user``, each acknowledged by the broker."""
    client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2)
    client.username_pw_set(user, ACL_USERS[user])
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def test_the_readme_acl_lets_only_home_assistant_send_commands(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text(readme_acl(), encoding="utf-8")
    passwords = password_file(tmp_path / "passwords", ACL_USERS)
    broker = Broker(tmp_path, extra=f"password_file {passwords}\nacl_file {acl}\n")
    broker.start()
    home_assistant = Recorder(
        broker.port, ("bms-gateway/#", "homeassistant/#"), username="homeassistant", password="ha-pw"
    )
    gateway = Recorder(
        broker.port, (f"{BASE}/control/+/set", f"{BASE}/packs/forget"), username="bms-gateway", password="gw-pw"
    )
    try:
        publish_as(
            broker.port,
            "bms-gateway",
            [
                (COMMAND["charge"], "OFF"),  # the gateway's user cannot send a command ...
                (f"{BASE}/packs/forget", "PRESS"),
                (f"{BASE}/state", "{}"),  # ... but publishes its topics
                (STATE["charge"], "ON"),
                (DISCOVERY["charge"], "{}"),
                (f"{BASE}/availability", "online"),  # last: the broker keeps one client's order
            ],
        )
        home_assistant.wait_for(lambda m: m.topic == f"{BASE}/availability", what="the gateway's availability")
        seen = {m.topic for m in home_assistant.messages}
        assert {f"{BASE}/state", STATE["charge"], DISCOVERY["charge"]} <= seen
        assert COMMAND["charge"] not in seen and f"{BASE}/packs/forget" not in seen
        assert gateway.messages == []

        publish_as(broker.port, "homeassistant", [(COMMAND["discharge"], "OFF"), (f"{BASE}/packs/forget", "PRESS")])
        gateway.wait_for(lambda m: m.topic == f"{BASE}/packs/forget", what="Home Assistant's press")
        assert [(m.topic, m.text) for m in gateway.messages] == [
            (COMMAND["discharge"], "OFF"),
            (f"{BASE}/packs/forget", "PRESS"),
        ]
    finally:
        home_assistant.close()
        gateway.close()
        broker.stop()
