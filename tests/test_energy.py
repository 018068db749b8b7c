"""Energy counters (kWh and Ah in and out): a known current profile integrates to the known values over the
readings' measured times, a gap longer than the BMS timeout is not integrated, the counters survive a restart
through the state store, and what is published is only ever what was kept, so a crash never makes it go down."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from limits_fixtures import reading
from prometheus_client.parser import text_string_to_metric_families
from telemetry_fixtures import PROFILE, SETTINGS, NullSink

from gateway.clock import FakeClock
from gateway.config import StatusConfig
from gateway.energy import KIND, EnergyCounters, EnergyMeter, energy_between
from gateway.runtime import STATE_SAVE_INTERVAL_S, ControlLoop
from gateway.state_store import StateStore
from gateway.telemetry.ha_discovery import Topics, discovery_configs, topic_payloads
from gateway.telemetry.http_status import LatestSnapshot, StatusServer
from gateway.telemetry.status_doc import status_document

BMS_TIMEOUT_S = 10.0
CELL_V = 3.25
"""16 cells at 3.25 V: the pack at 52.0 V."""
HOUR_S = 3600.0
PACK = "test:pack"


def meter_on(store: StateStore | None, clock: FakeClock) -> EnergyMeter:
    return EnergyMeter(clock, BMS_TIMEOUT_S, store, save_interval_s=STATE_SAVE_INTERVAL_S)


def feed(
    meter: EnergyMeter,
    clock: FakeClock,
    current_a: Callable[[float], float],
    times_s: Iterator[float] | list[float],
    *,
    pack_id: str = PACK,
    delivered_after_s: Callable[[int], float] = lambda n: 0.0,
) -> None:
    """A reading of ``current_a(t)`` measured at each of ``times_s`` (from the clock's start), handed to the meter
    ``delivered_after_s(n)`` later (the poll's own delay; the clock moves to that moment)."""
    start_s = clock.monotonic()
    for n, t in enumerate(times_s):
        measured_s = start_s + t
        clock.advance(max(0.0, measured_s + delivered_after_s(n) - clock.monotonic()))
        one = replace(reading(CELL_V, now_s=measured_s, current_a=current_a(t)), pack_id=pack_id)
        meter.on_readings((one,))


def every(step_s: float, until_s: float) -> list[float]:
    return [n * step_s for n in range(round(until_s / step_s) + 1)]


def test_constant_50_a_at_52_v_for_an_hour_is_2_6_kwh_over_the_measured_times(tmp_path: Path) -> None:
    clock = FakeClock()
    meter = meter_on(StateStore(tmp_path), clock)
    # Measured at uneven moments (a BMS answering late), delivered even later: only measured_at_s counts.
    steps = [0.7, 1.3, 2.0, 0.5, 1.5]
    times = [0.0]
    while times[-1] < HOUR_S:
        times.append(min(HOUR_S, times[-1] + steps[len(times) % len(steps)]))
    feed(meter, clock, lambda t: 50.0, times, delivered_after_s=lambda n: 0.4 * (n % 3))
    meter.close()
    total = meter.published.total
    assert total.charged_kwh == pytest.approx(2.6, rel=1e-9)
    assert total.charged_ah == pytest.approx(50.0, rel=1e-9)
    assert (total.discharged_kwh, total.discharged_ah) == (0.0, 0.0)


def test_a_ramp_integrates_exactly_and_a_sign_change_counts_on_both_sides(tmp_path: Path) -> None:
    clock = FakeClock()
    up = meter_on(StateStore(tmp_path / "up"), clock)
    feed(up, clock, lambda t: 100.0 * t / HOUR_S, every(9.6, HOUR_S))  # 0 → 100 A
    up.close()
    assert up.published.total.charged_kwh == pytest.approx(2.6, rel=1e-9)
    assert up.published.total.charged_ah == pytest.approx(50.0, rel=1e-9)

    # +50 A → −50 A: zero is crossed at 1800 s, between two readings (9.6 s apart: 1795.2 s and 1804.8 s).
    swing = meter_on(StateStore(tmp_path / "swing"), clock)
    feed(swing, clock, lambda t: 50.0 - 100.0 * t / HOUR_S, every(9.6, HOUR_S))
    swing.close()
    total = swing.published.total
    assert total.charged_ah == pytest.approx(12.5, rel=1e-9)
    assert total.discharged_ah == pytest.approx(12.5, rel=1e-9)
    assert total.charged_kwh == pytest.approx(0.65, rel=1e-9)
    assert total.discharged_kwh == pytest.approx(0.65, rel=1e-9)


def test_one_step_across_zero_is_split_where_the_line_crosses() -> None:
    before = reading(CELL_V, now_s=0.0, current_a=30.0).state
    after = reading(CELL_V, now_s=4.0, current_a=-10.0).state  # crosses zero at 3 s
    step = energy_between(before, after, BMS_TIMEOUT_S)
    assert step.charged_ah == pytest.approx(30.0 * 3 / 2 / 3600)
    assert step.discharged_ah == pytest.approx(10.0 * 1 / 2 / 3600)


@pytest.mark.parametrize(
    ("silence_s", "integrated"), [(BMS_TIMEOUT_S + 1.0, False), (BMS_TIMEOUT_S, True)], ids=["longer", "at-timeout"]
)
def test_a_gap_longer_than_the_bms_timeout_is_not_integrated(
    tmp_path: Path, silence_s: float, integrated: bool
) -> None:
    clock = FakeClock()
    meter = meter_on(StateStore(tmp_path), clock)
    ten_min_s = 600.0
    # 10 min at 1 s, silence, 10 min at 1 s: 50 A at 52 V is 2600 W.
    times = every(1.0, ten_min_s) + [ten_min_s + silence_s + t for t in every(1.0, ten_min_s)]
    feed(meter, clock, lambda t: 50.0, times)
    meter.close()
    seconds = 2 * ten_min_s + (silence_s if integrated else 0.0)
    assert meter.published.total.charged_kwh == pytest.approx(2600.0 * seconds / 3.6e6, rel=1e-9)


def test_a_restart_keeps_the_counters(tmp_path: Path) -> None:
    clock = FakeClock()
    store = StateStore(tmp_path)
    first = meter_on(store, clock)
    feed(first, clock, lambda t: 50.0, every(1.0, HOUR_S / 2))
    first.close()  # the stop's write
    kept = first.published

    clock.advance(30.0)  # the restart
    second = meter_on(store, clock)
    assert second.published == kept and kept.total.charged_kwh == pytest.approx(1.3, rel=1e-9)
    feed(second, clock, lambda t: 50.0, every(1.0, HOUR_S / 2))
    second.close()
    assert second.published.total.charged_kwh == pytest.approx(2.6, rel=1e-9)
    assert StateStore(tmp_path).load(KIND) is not None


def test_only_what_was_kept_is_published_and_a_crash_never_makes_it_go_down(tmp_path: Path) -> None:
    clock = FakeClock()
    store = StateStore(tmp_path)
    meter = meter_on(store, clock)
    chance = random.Random(20)
    published: list[EnergyCounters] = []
    crashes = 0
    for t in every(1.0, 3 * HOUR_S):
        one = reading(CELL_V, now_s=clock.monotonic(), current_a=50.0 if t < 2 * HOUR_S else -40.0)
        meter.on_readings((one,))
        now = meter.published.total
        record = store.load(KIND)
        on_disk = EnergyCounters() if record is None else EnergyCounters.from_json(record.data["packs"][PACK])
        assert now == on_disk  # never a value that was not kept
        published.append(now)
        if chance.random() < 0.002:  # a crash: no write on stop, a new meter from the same store
            crashes += 1
            meter = meter_on(store, clock)
            published.append(meter.published.total)
        clock.advance(1.0)
    assert crashes >= 5
    for field in ("charged_kwh", "discharged_kwh", "charged_ah", "discharged_ah"):
        values = [getattr(c, field) for c in published]
        assert values == sorted(values), f"{field} went down"
    # The price: what was integrated after the last write before each crash is lost.
    assert 0 < published[-1].charged_kwh < 2 * 2.6
    # Published only at a write: nothing in the first 60 s of a fresh start.
    fresh = meter_on(StateStore(tmp_path / "fresh"), clock)
    feed(fresh, clock, lambda t: 50.0, every(1.0, STATE_SAVE_INTERVAL_S - 1.0))
    assert fresh.published.total == EnergyCounters()


def test_a_record_that_cannot_be_written_publishes_nothing_new_and_says_so_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_a_directory = tmp_path / "state"
    not_a_directory.write_text("a file where the state directory should be", encoding="utf-8")
    clock = FakeClock()
    meter = meter_on(StateStore(not_a_directory), clock)
    with caplog.at_level(logging.WARNING, logger="gateway.energy"):
        feed(meter, clock, lambda t: 50.0, every(1.0, 5 * STATE_SAVE_INTERVAL_S))
        meter.close()
    assert meter.published.total == EnergyCounters()
    (line,) = [r.getMessage() for r in caplog.records if r.name == "gateway.energy"]  # once in 5 min of failures
    assert "cannot keep the energy counters" in line and str(not_a_directory) in line


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("{not json", "not JSON"),
        (
            json.dumps(
                {
                    "format": "bms-gateway-state",
                    "version": 1,
                    "kind": KIND,
                    "saved_wall_s": 1.0,
                    "data": {"packs": {PACK: {"charged_kwh": -1.0}}},
                }
            ),
            "not a record of energy counters",
        ),
    ],
)
def test_a_corrupt_record_is_ignored_with_one_line(
    tmp_path: Path, content: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = StateStore(tmp_path)
    store.path(KIND).write_text(content, encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        meter = meter_on(store, FakeClock())
    assert meter.published.total == EnergyCounters() and meter.published.packs == {}
    (line,) = [r.getMessage() for r in caplog.records]
    assert why in line and str(store.path(KIND)) in line


def test_the_counters_of_a_pack_not_present_are_kept_and_counted_in_the_total(tmp_path: Path) -> None:
    clock = FakeClock()
    store = StateStore(tmp_path)
    two = meter_on(store, clock)
    feed(two, clock, lambda t: 50.0, every(1.0, 600.0), pack_id="bus#1")
    two.on_readings(())
    feed(two, clock, lambda t: -20.0, every(1.0, 600.0), pack_id="bus#2")
    two.close()
    gone = two.published.packs["bus#2"]

    one = meter_on(store, clock)  # bus#2 is not on the bus any more
    feed(one, clock, lambda t: 50.0, every(1.0, 600.0), pack_id="bus#1")
    one.close()
    assert one.published.packs["bus#2"] == gone and gone.discharged_ah == pytest.approx(20.0 / 6, rel=1e-9)
    assert one.published.total.discharged_ah == gone.discharged_ah
    assert one.published.total.charged_ah == pytest.approx(2 * 50.0 / 6, rel=1e-9)


# --- wired into the control loop, published on status, MQTT and Prometheus --------------------------------------


def two_packs_for(loop: ControlLoop, clock: FakeClock, seconds: int) -> None:
    """Two packs answering every second: bus#1 charging at 50 A, bus#2 at 30 A, both at 52 V."""
    for _ in range(seconds):
        now_s = clock.monotonic()
        loop.on_readings(
            tuple(
                replace(reading(CELL_V, now_s=now_s, current_a=amps), pack_id=pack_id)
                for pack_id, amps in (("bus#1", 50.0), ("bus#2", 30.0))
            )
        )
        loop.tick()
        clock.advance(1.0)


def test_the_control_loop_counts_each_pack_and_publishes_what_it_kept(tmp_path: Path) -> None:
    clock = FakeClock()
    store = StateStore(tmp_path)
    loop = ControlLoop(PROFILE, NullSink(), clock, SETTINGS, store=store)
    two_packs_for(loop, clock, 90)  # kept once, at 60 s: 59 s of readings behind it
    energy = loop.snapshot().energy
    assert energy is not None
    assert energy.packs["bus#1"].charged_ah == pytest.approx(50.0 * 60 / 3600, rel=1e-9)
    assert energy.total.charged_ah == pytest.approx(80.0 * 60 / 3600, rel=1e-9)

    document = status_document(loop.snapshot())["energy"]
    assert document["charged_ah"] == round(80.0 * 60 / 3600, 3)
    assert document["packs"]["bus#2"]["charged_kwh"] == round(30.0 * 52.0 * 60 / 3.6e6, 4)
    payload = json.loads(topic_payloads(loop.snapshot())["energy"])
    assert payload["charged_kwh"] == document["charged_kwh"] and payload["discharged_kwh"] == 0.0

    latest = LatestSnapshot()
    latest.offer(loop.snapshot())
    server = StatusServer(StatusConfig(port=0), latest, clock, mqtt_health=lambda: None)
    server.start()
    try:
        families = {f.name: f for f in text_string_to_metric_families(server.metrics_text().decode())}
    finally:
        server.stop()
    (battery,) = families["bms_gateway_energy_charged_kwh"].samples
    assert battery.name == "bms_gateway_energy_charged_kwh_total" and battery.labels == {}
    assert battery.value == pytest.approx(energy.total.charged_kwh)
    packs = {s.labels["pack"]: s.value for s in families["bms_gateway_pack_energy_charged_ah"].samples}
    assert packs == pytest.approx({"bus#1": 50.0 * 60 / 3600, "bus#2": 30.0 * 60 / 3600})
    assert families["bms_gateway_energy_discharged_ah"].type == "counter"

    loop.shutdown()  # the stop's write: 89 s of readings
    again = ControlLoop(PROFILE, NullSink(), clock, SETTINGS, store=store)
    restored = again.snapshot().energy
    assert restored is not None
    assert restored.total.charged_ah == pytest.approx(80.0 * 89 / 3600, rel=1e-9)


def test_home_assistant_gets_energy_dashboard_counters() -> None:
    topics = Topics("node", "bms/node", "homeassistant")
    configs = {topic: json.loads(payload) for topic, payload in discovery_configs(topics, 16, 2).items()}
    energy = {
        topic.split("/")[3]: config for topic, config in configs.items() if config["state_topic"] == "bms/node/energy"
    }
    assert set(energy) == {"energy_charged", "energy_discharged", "amp_hours_charged", "amp_hours_discharged"}
    for object_id, config in energy.items():
        assert config["state_class"] == "total_increasing", object_id
        # Counters stay meaningful while the BMS data is stale: only the gateway's availability.
        assert config["availability_topic"] == "bms/node/availability" and "availability" not in config
    assert energy["energy_charged"]["device_class"] == "energy"
    assert energy["energy_charged"]["unit_of_measurement"] == "kWh"
    assert energy["energy_discharged"]["value_template"] == "{{ value_json.discharged_kwh }}"
    assert energy["amp_hours_discharged"]["unit_of_measurement"] == "Ah"
    assert "device_class" not in energy["amp_hours_charged"]  # Home Assistant has no class for Ah
