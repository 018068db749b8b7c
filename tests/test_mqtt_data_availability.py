"""Home Assistant shows stale BMS data as unavailable (issue 18): a second availability topic, ``data_availability``,
``online`` only while the BMS data is fresh, listed beside the gateway's own availability by the entities that show
BMS values (``availability_mode: all``); the fail-safe state, alarms, limits and diagnostics keep only the gateway's.

The end-to-end test runs a real control loop on a fake clock, the real telemetry hooks and a real mosquitto; the
rest steps the publisher thread by hand on fake time against a stand-in for paho. Skipped without mosquitto,
except under ``CI=true``, where that fails.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from telemetry_fixtures import (
    BMS_TIMEOUT_S,
    HA_ONLINE,
    PROFILE,
    SETTINGS,
    Broker,
    FakePaho,
    NullSink,
    Recorder,
    assert_availability,
    snapshot,
    stamped,
    stepped_publisher,
)

from gateway.clock import FakeClock
from gateway.config import parse_config
from gateway.errors import LinkTimeout
from gateway.runtime import ControlLoop, FailsafeState
from gateway.sim.scenarios import SCENARIOS
from gateway.telemetry.ha_discovery import data_available
from gateway.telemetry.mqtt import URGENT_GAP_S
from gateway.telemetry.service import Telemetry

NODE = "datanode"
BASE = f"bms-gateway/{NODE}"
AVAILABILITY = f"{BASE}/availability"
DATA_AVAILABILITY = f"{BASE}/data_availability"
TICK_S = 0.1


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path)
    broker.start()
    yield broker
    broker.stop()


def payloads(recorder: Recorder, topic: str) -> list[str]:
    return [m.text for m in recorder.on(topic)]


def payloads_to(paho: FakePaho, topic: str) -> list[str]:
    return [payload for _, t, payload in paho.published if t == topic]


# --- end to end: a BMS that stops answering, on a real broker ---------------------------------------------------


class Rig:
    """A control loop on a fake clock behind the real telemetry hooks, publishing to the test's broker."""

    def __init__(self, port: int) -> None:
        self.clock = FakeClock()
        self.loop = ControlLoop(PROFILE, NullSink(), self.clock, SETTINGS)
        config = parse_config(
            {
                "bms": {"port": "p"},
                "inverter": {"profile": "pylontech-can"},
                "failsafe": {"bms_timeout_s": BMS_TIMEOUT_S},  # the loop's (SETTINGS)
                "mqtt": {"enabled": True, "host": "127.0.0.1", "port": port, "node_id": NODE},
                "status": {"enabled": False},
            }
        )
        self.telemetry = Telemetry.from_config(config, self.clock, {})

    def run(self, seconds: float, *, bms_answers: bool) -> None:
        """Tick every :data:`TICK_S` of fake time for ``seconds``; a poll each second answered or not."""
        for tick in range(round(seconds / TICK_S)):
            if tick % round(1 / TICK_S) == 0:
                self.poll(bms_answers=bms_answers)
            self.step()

    def poll(self, *, bms_answers: bool) -> None:
        if bms_answers:
            reading = SCENARIOS["normal-charge"].step(self.clock.monotonic()).reading
            self.loop.on_readings((stamped(reading, self.clock.monotonic()),))
        else:
            self.loop.on_poll_failed(LinkTimeout("no reply from /dev/ttyUSB0 within 0.5 s"))

    def step(self) -> None:
        self.loop.tick()
        self.telemetry.after_tick(self.loop)
        self.clock.advance(TICK_S)


def test_a_bms_that_stops_answering_makes_its_values_unavailable_until_a_fresh_reading(broker: Broker) -> None:
    recorder = Recorder(broker.port, (AVAILABILITY, DATA_AVAILABILITY))
    rig = Rig(broker.port)
    rig.telemetry.start(rig.loop)
    try:
        # Connected before the first reading: the gateway is online, its data not (a retained "online" left by an
        # earlier run must not make the last values look live).
        recorder.wait_for(lambda m: m.topic == DATA_AVAILABILITY, what="data availability")
        assert (payloads(recorder, AVAILABILITY), payloads(recorder, DATA_AVAILABILITY)) == (["online"], ["offline"])

        rig.run(3.0, bms_answers=True)
        recorder.wait_for(lambda m: len(recorder.on(DATA_AVAILABILITY)) == 2, what="data online")

        rig.run(BMS_TIMEOUT_S + 1.0, bms_answers=False)
        assert rig.loop.state is FailsafeState.STALE
        recorder.wait_for(lambda m: len(recorder.on(DATA_AVAILABILITY)) == 3, what="data offline")
        assert payloads(recorder, DATA_AVAILABILITY) == ["offline", "online", "offline"]
        assert payloads(recorder, AVAILABILITY) == ["online"]  # the gateway itself stays available
        late = Recorder(broker.port, (DATA_AVAILABILITY,))  # a Home Assistant restarting now gets it retained
        try:
            retained = late.wait_for(lambda m: m.topic == DATA_AVAILABILITY, what="retained data availability")
            assert (retained.text, retained.retain) == ("offline", True)
        finally:
            late.close()

        rig.poll(bms_answers=True)  # the first fresh reading
        rig.step()
        assert rig.loop.state is FailsafeState.NORMAL
        recorder.wait_for(lambda m: len(recorder.on(DATA_AVAILABILITY)) == 4, what="data online again")
        assert payloads(recorder, DATA_AVAILABILITY) == ["offline", "online", "offline", "online"]
        assert payloads(recorder, AVAILABILITY) == ["online"]
    finally:
        rig.telemetry.stop()
        recorder.close()


# --- the publisher thread, stepped on fake time ------------------------------------------------------------------


def test_data_goes_offline_in_the_round_that_sees_it_stale_not_with_the_next_batch() -> None:
    clock = FakeClock()
    publisher, paho = stepped_publisher(clock, NODE)
    publisher._step()  # the connect's resync, before any snapshot
    assert [(t, p) for _, t, p in paho.published[:2]] == [(AVAILABILITY, "online"), (DATA_AVAILABILITY, "offline")]

    publisher.offer(snapshot())
    publisher._step()  # the first batch
    assert payloads_to(paho, DATA_AVAILABILITY) == ["offline", "online"]
    clock.advance(URGENT_GAP_S / 4)
    publisher.offer(snapshot(stale=True))
    wait_s = publisher._step()
    assert payloads_to(paho, DATA_AVAILABILITY) == ["offline", "online", "offline"]
    assert paho.times(DATA_AVAILABILITY)[-1] == clock.monotonic()  # at once...
    health = [json.loads(p)["failsafe"] for p in payloads_to(paho, f"{BASE}/health")]
    assert health == ["normal"] and wait_s == pytest.approx(URGENT_GAP_S * 3 / 4)  # ...the batch not yet due

    clock.advance(URGENT_GAP_S)
    publisher.offer(snapshot(stale=True))
    publisher._step()
    assert [json.loads(p)["failsafe"] for p in payloads_to(paho, f"{BASE}/health")] == ["normal", "stale"]
    assert payloads_to(paho, DATA_AVAILABILITY) == ["offline", "online", "offline"]  # only changes are sent

    # Home Assistant restarts: everything again, the data's availability too (its current value).
    publisher._on_message(paho, None, HA_ONLINE)  # type: ignore[arg-type]
    clock.advance(30.0)
    publisher._step()
    assert payloads_to(paho, DATA_AVAILABILITY) == ["offline", "online", "offline", "offline"]
    assert payloads_to(paho, AVAILABILITY) == ["online", "online"]


def test_data_is_fresh_only_while_the_fail_safe_is_normal_and_the_reading_young_enough() -> None:
    fresh = snapshot()
    assert fresh.state is FailsafeState.NORMAL and data_available(fresh, BMS_TIMEOUT_S)
    for state in (FailsafeState.WAITING, FailsafeState.STALE, FailsafeState.SILENT, FailsafeState.STOPPED):
        assert not data_available(dataclasses.replace(fresh, state=state), BMS_TIMEOUT_S), state
    assert not data_available(snapshot(stale=True), BMS_TIMEOUT_S)
    assert not data_available(dataclasses.replace(fresh, reading=None, reading_age_s=None), BMS_TIMEOUT_S)
    assert not data_available(None)
    old = dataclasses.replace(fresh, reading_age_s=BMS_TIMEOUT_S + 0.5)  # older than the timeout, still "normal"
    assert not data_available(old, BMS_TIMEOUT_S)
    assert data_available(old)  # without a timeout the fail-safe state alone decides


# --- discovery ----------------------------------------------------------------------------------------------------


def test_every_discovery_config_lists_the_data_availability_exactly_for_the_bms_values() -> None:
    clock = FakeClock()
    publisher, paho = stepped_publisher(clock, NODE)
    publisher.offer(snapshot())  # 16 cells, 2 temperature sensors
    publisher._step()
    configs = {
        topic.split("/")[-2]: json.loads(payload)
        for _, topic, payload in paho.published
        if topic.startswith("homeassistant/") and payload
    }
    assert len(configs) == len(publisher._discovery_topics)
    for object_id, config in configs.items():
        assert_availability(config, BASE, object_id)
    with_data = {object_id for object_id, config in configs.items() if "availability" in config}
    bms_values = {
        "soc", "pack_voltage", "current", "power", "min_cell_voltage", "max_cell_voltage", "cell_delta",
        "remaining_capacity", "soh", "cycle_count", "mos_temperature", "temperature_1", "temperature_2",
        "balance_current", "charge_mos", "discharge_mos", "balancing",
        *(f"cell_{n:02d}_voltage" for n in range(1, 17)),
        "cell_ovp", "cell_ovpr", "cell_uvp", "cell_uvpr", "bms_max_charge_current", "bms_max_discharge_current",
    }  # fmt: skip
    assert with_data == bms_values
    gateway_only = set(configs) - with_data
    assert {"failsafe", "bms_link", "bms_data_age", "alarm", "alarm_count", "charge_current_limit"} <= gateway_only
    assert {"charge_phase", "charge_voltage_limit_reason", "frames_sent", "forget_silent_packs"} <= gateway_only
