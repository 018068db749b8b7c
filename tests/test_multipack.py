"""Four JK-PB packs on one simulated RS485 bus, through the real ``jk-modbus`` driver and the control loop on a
fake clock: what the inverter hears (decoded from the Pylontech frames), with the numbers worked out by hand in
``multipack_fixtures``; one pack dropped and restored; every pack dropped (the fail-safe); an implausible pack.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from multipack_fixtures import FOUR, TUNING, constant, four_at

from gateway.battery import Extreme
from gateway.bms.jk_modbus_driver import JkModbusDriver
from gateway.clock import FakeClock
from gateway.errors import GatewayError, LinkTimeout
from gateway.limits import LimitsSettings
from gateway.model import PackReading
from gateway.profiles import Profile, load_profile
from gateway.runtime import ControlLoop, FailsafeState, LoopSettings, Poller
from gateway.sim.jk_modbus import JkModbusSimulator, SimPack
from gateway.sim.nullmodem import NullModem
from gateway.sim.scenarios import Behaviour
from gateway.telemetry.status_doc import status_document

PROFILE = load_profile("pylontech-can")
TIMEOUT_S = 0.15
"""Per reply, real time: the simulator answers within milliseconds; a silent pack costs this per probe."""
BMS_TIMEOUT_S = 5.0
SILENCE_AFTER_S = 15.0


class Sink:
    def send(self, can_id: int, data: bytes) -> bool:
        return True


@dataclass
class Rig:
    """The bus (null-modem + simulator), the driver, the loop and its poller, all on one fake clock."""

    clock: FakeClock
    simulator: JkModbusSimulator
    driver: JkModbusDriver
    loop: ControlLoop
    poller: Poller
    profile: Profile = PROFILE

    def cycle(self, seconds: float = 1.0) -> None:
        """One poll, then ticks every 0.1 s for ``seconds`` of fake time (frames go out as they fall due)."""
        self.poller.poll_once()
        for _ in range(round(seconds / 0.1)):
            self.loop.tick()
            self.clock.advance(0.1)

    def heard(self) -> dict[int, dict[str, object]]:
        """The latest frame of each id the inverter heard, decoded with the profile."""
        sent = self.loop.snapshot().sent
        return {can_id: dict(self.profile.frame(can_id).decode(data)) for can_id, data in sent.items()}

    def pack_id(self, unit: int) -> str:
        return f"jk-modbus:{self.driver.bus.port}#{unit}"


def start_rig(tmp_path: Path, profile: Profile = PROFILE) -> Iterator[Rig]:
    modem = NullModem(tmp_path / "rs485")
    modem.start()
    clock = FakeClock()
    simulator = JkModbusSimulator(
        {unit: SimPack(constant(reading)) for unit, reading in FOUR.items()}, clock, port=str(modem.a_path)
    )
    simulator.start()
    assert simulator.wait_serving(10)
    driver = JkModbusDriver(port=str(modem.b_path), clock=clock, addresses=tuple(FOUR), timeout_s=TIMEOUT_S, retries=0)
    settings = LoopSettings(
        poll_interval_s=1.0, bms_timeout_s=BMS_TIMEOUT_S, silence_after_s=SILENCE_AFTER_S, limits=TUNING
    )
    loop = ControlLoop(profile, Sink(), clock, settings)
    yield Rig(clock, simulator, driver, loop, Poller(driver, loop, clock, 1.0), profile)
    driver.close()
    simulator.stop()
    modem.stop()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    yield from start_rig(tmp_path)


def limits_heard(rig: Rig) -> tuple[object, ...]:
    frame = rig.heard()[0x351]
    return (
        frame["charge_voltage_limit"],
        frame["charge_current_limit"],
        frame["discharge_current_limit"],
        frame["discharge_voltage_limit"],
    )


def test_four_packs_are_heard_as_one_battery(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.runtime")
    rig.cycle()
    assert rig.loop.state is FailsafeState.NORMAL
    heard = rig.heard()
    # CVL 55.2 V; CCL 4 × 90 A (pack 4's lower max charge current sets it); DCL 4 × 180 A; DVL pack 3's 46.4 V.
    assert limits_heard(rig) == pytest.approx((55.2, 360.0, 720.0, 46.4))
    assert heard[0x355] == {"soc": 54, "soh": 100}  # (60·2 + 50·2 + 18·1 + 70·2) / 7
    assert heard[0x356]["voltage"] == pytest.approx(52.81, abs=0.006)  # mean of the pack voltages
    assert heard[0x356]["current"] == pytest.approx(70.0, abs=0.06)  # 25 + 20 + 10 + 15
    assert heard[0x356]["temperature"] == pytest.approx(24.75, abs=0.06)  # mean of the eight sensors
    assert heard[0x359]["module_count"] == 4
    assert heard[0x35C]["charge_enable"] is True and heard[0x35C]["discharge_enable"] is True

    snapshot = rig.loop.snapshot()
    assert snapshot.battery is not None
    assert snapshot.battery.online == tuple(rig.pack_id(u) for u in FOUR)
    extremes = snapshot.battery.extremes
    assert (extremes.max_cell, extremes.min_cell) == (
        Extreme(3.35, rig.pack_id(2), 7),
        Extreme(3.28, rig.pack_id(3), 3),
    )
    assert extremes.max_temperature == Extreme(30.0, rig.pack_id(3), 1)
    assert extremes.min_temperature == Extreme(19.0, rig.pack_id(4), 2)
    assert snapshot.limits is not None
    assert snapshot.limits.reasons["charge_current_limit_a"].reason.startswith("pack #4: BMS max × 0.9: 90.0 A")
    assert set(snapshot.pack_limits) == set(snapshot.battery.online)
    assert snapshot.pack_limits[rig.pack_id(4)].charge_current_limit_a == 90.0
    # Equal sharing with a 140 Ah pack among 280 Ah ones: one warning, naming the capacities.
    warnings = [r.getMessage() for r in caplog.records if "different capacity" in r.getMessage()]
    assert len(warnings) == 1 and "pack #3 140 Ah" in warnings[0]


def test_victron_names_the_pack_and_cell_of_each_extreme(tmp_path: Path) -> None:
    # By hand (multipack_fixtures): lowest cell pack 3 cell 3, highest pack 2 cell 7, coldest sensor pack 4 T2,
    # hottest pack 3 T1; the packs numbered in polling order.
    for victron in start_rig(tmp_path, load_profile("victron")):
        victron.cycle()
        heard = victron.heard()
        names = [heard[can_id]["id"] for can_id in (0x374, 0x375, 0x376, 0x377)]
        assert names == ["P3 C03", "P2 C07", "P4 T2", "P3 T1"]


def test_one_pack_dropped_and_restored(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.runtime")
    rig.cycle()
    rig.simulator.set_behaviour(3, Behaviour.SILENT)
    rig.cycle()
    # Pack 3 missed the poll: its share is withheld at once (it may have disconnected), it is still online.
    assert limits_heard(rig) == pytest.approx((55.2, 270.0, 540.0, 46.4))
    assert rig.heard()[0x359]["module_count"] == 4
    assert rig.loop.state is FailsafeState.NORMAL
    assert "no reply from unit 3" in rig.loop.snapshot().pack_errors[rig.pack_id(3)]

    for _ in range(5):
        rig.cycle()  # pack 3's last good reading is now older than bms_timeout_s: offline
    heard = rig.heard()
    assert heard[0x359]["module_count"] == 3
    # Packs 1, 2, 4 alone: SOC (60 + 50 + 70) / 3, voltage (52.81 + 52.85 + 52.80) / 3, current 25 + 20 + 15.
    # Pack 3's BMS is silent but its pack may still be on the bus: its last limits stay latched (battery-safety
    # audit P3), so its DVL 46.4 V still applies (the old engine dropped it to 44.8 V after the timeout).
    assert limits_heard(rig) == pytest.approx((55.2, 270.0, 540.0, 46.4))
    assert heard[0x355]["soc"] == 60
    assert heard[0x356]["voltage"] == pytest.approx(52.82, abs=0.006)
    assert heard[0x356]["current"] == pytest.approx(60.0, abs=0.06)
    snapshot = rig.loop.snapshot()
    assert snapshot.battery is not None and snapshot.battery.offline == (rig.pack_id(3),)

    rig.simulator.set_behaviour(3, None)
    rig.cycle()
    rig.cycle()
    # Back: its share returns only through the hold (30 s) and the ramp (5 A/s), not in one step.
    assert limits_heard(rig) == pytest.approx((55.2, 270.0, 540.0, 46.4))
    assert rig.heard()[0x359]["module_count"] == 4
    for _ in range(70):
        rig.cycle()
    assert limits_heard(rig) == pytest.approx((55.2, 360.0, 720.0, 46.4))
    lines = [(r.levelno, r.getMessage()) for r in caplog.records if "pack #3" in r.getMessage()]
    lines = [line for line in lines if "capacity" not in line[1]]
    assert lines == [
        (logging.ERROR, f"BMS: pack #3 silent (no reply from unit 3 on {rig.driver.bus.port} within "
         f"{TIMEOUT_S:g} s) but its pack may still be on the bus: its last blocks and limits stay latched until "
         "it answers again; the battery goes on with 3 of 4 packs"),
        (logging.INFO, "BMS: pack #3 back online; 4 of 4 packs"),
    ]  # fmt: skip


def test_every_pack_dropped_is_the_failsafe(rig: Rig) -> None:
    rig.cycle()
    for unit in FOUR:
        rig.simulator.set_behaviour(unit, Behaviour.SILENT)
    for _ in range(6):
        rig.cycle()
    assert rig.loop.state is FailsafeState.STALE
    heard = rig.heard()
    assert (heard[0x351]["charge_current_limit"], heard[0x351]["discharge_current_limit"]) == (0, 0)
    assert (heard[0x35C]["charge_enable"], heard[0x35C]["discharge_enable"]) == (False, False)
    assert heard[0x359]["alarm_internal_communication"] is True
    snapshot = rig.loop.snapshot()
    assert snapshot.last_error is not None and "no reply" in snapshot.last_error

    # Polling silent packs costs real time; the fake clock alone carries the loop to silence.
    for _ in range(round((SILENCE_AFTER_S - BMS_TIMEOUT_S) / 0.1)):
        rig.loop.tick()
        rig.clock.advance(0.1)
    assert rig.loop.state is FailsafeState.SILENT

    for unit in FOUR:
        rig.simulator.set_behaviour(unit, None)
    rig.cycle()
    rig.cycle()
    assert rig.loop.state is FailsafeState.NORMAL
    assert limits_heard(rig) == pytest.approx((55.2, 360.0, 720.0, 46.4))


# --- without the bus: an implausible pack, a pack that never answers -----------------------------------------


class ScriptedDriver:
    """A multi-pack driver whose answers the test sets: readings of the four fixture packs, per pack."""

    name = "scripted"

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self.pack_ids = tuple(f"jk-modbus:bus#{unit}" for unit in FOUR)
        self.pack_errors: Mapping[str, GatewayError] = {}
        self.silent: set[int] = set()
        self.broken_cell: set[int] = set()

    def read(self) -> tuple[PackReading, ...]:
        readings = []
        errors: dict[str, GatewayError] = {}
        for unit, reading in zip(FOUR, four_at(self._clock.monotonic()), strict=True):
            if unit in self.silent:
                errors[reading.pack_id] = LinkTimeout(f"no reply from unit {unit}")
                continue
            if unit in self.broken_cell:
                cells = (0.0, *reading.state.cell_voltages_v[1:])
                reading = replace(reading, state=replace(reading.state, cell_voltages_v=cells))
            readings.append(reading)
        self.pack_errors = errors
        if not readings:
            raise LinkTimeout("no reply from units 1, 2, 3, 4")
        return tuple(readings)

    def close(self) -> None:
        pass


def scripted_rig(tuning: LimitsSettings = TUNING) -> tuple[FakeClock, ScriptedDriver, ControlLoop, Poller]:
    clock = FakeClock()
    driver = ScriptedDriver(clock)
    settings = LoopSettings(
        poll_interval_s=1.0, bms_timeout_s=BMS_TIMEOUT_S, silence_after_s=SILENCE_AFTER_S, limits=tuning
    )
    loop = ControlLoop(PROFILE, Sink(), clock, settings)
    return clock, driver, loop, Poller(driver, loop, clock, 1.0)


def run(clock: FakeClock, loop: ControlLoop, poller: Poller, seconds: int) -> None:
    for _ in range(seconds):
        poller.poll_once()
        loop.tick()
        clock.advance(1.0)


def test_an_implausible_pack_counts_as_that_pack_failing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.runtime")
    clock, driver, loop, poller = scripted_rig()
    run(clock, loop, poller, 2)
    driver.broken_cell = {2}
    run(clock, loop, poller, 1)
    snapshot = loop.snapshot()
    assert snapshot.limits is not None and snapshot.limits.charge_current_limit_a == 270.0  # share withheld
    assert "implausible reading from jk-modbus:bus#2: cell 1 reads 0.000 V" in snapshot.pack_errors["jk-modbus:bus#2"]
    run(clock, loop, poller, 6)
    snapshot = loop.snapshot()
    assert snapshot.battery is not None and snapshot.battery.offline == ("jk-modbus:bus#2",)
    assert snapshot.battery.module_count == 3 and snapshot.state is FailsafeState.NORMAL
    implausible = [r for r in caplog.records if "implausible" in r.getMessage()]
    assert len(implausible) == 2, "one line when it turned implausible, one when it went offline"


def test_a_pack_that_never_answers_is_offline_from_the_start_and_reduces_by_the_fraction() -> None:
    clock, driver, loop, poller = scripted_rig(replace(TUNING, offline_current_fraction=0.5))
    driver.silent = {1}
    run(clock, loop, poller, 2)
    snapshot = loop.snapshot()
    assert snapshot.battery is not None and snapshot.battery.offline == ("jk-modbus:bus#1",)
    assert snapshot.battery.module_count == 3
    assert snapshot.limits is not None
    # Packs 2, 3, 4: 3 × 90 A × 0.5 and 3 × 180 A × 0.5.
    assert (snapshot.limits.charge_current_limit_a, snapshot.limits.discharge_current_limit_a) == (135.0, 270.0)


def test_a_latched_pack_is_an_alarm_until_it_answers_or_the_user_forgets_it(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.runtime")
    rig.cycle()
    assert not rig.loop.snapshot().latched_packs
    rig.simulator.set_behaviour(3, Behaviour.SILENT)
    for _ in range(6):
        rig.cycle()
    pack3 = rig.pack_id(3)
    snapshot = rig.loop.snapshot()
    assert snapshot.latched_packs == {pack3}
    document = status_document(snapshot)
    assert "pack_latched" in document["alarms"]
    each = document["packs"].pop("each")
    assert document["packs"] == {
        "online": [rig.pack_id(1), rig.pack_id(2), rig.pack_id(4)],
        "offline": [pack3],
        "latched": [pack3],
        "current_sharing": "equal",
    }
    assert [(p["label"], p["pack_id"]) for p in each] == [
        ("P1", rig.pack_id(1)),
        ("P2", rig.pack_id(2)),
        ("P3", rig.pack_id(4)),
    ]
    assert limits_heard(rig)[3] == pytest.approx(46.4)  # pack 3's DVL, latched

    # Only a latched pack can be forgotten; a refusal changes nothing.
    with pytest.raises(GatewayError, match=f"pack {rig.pack_id(1)} is not latched"):
        rig.loop.forget_pack(rig.pack_id(1), source="test")
    with pytest.raises(GatewayError, match="no pack 'nine'"):
        rig.loop.forget_pack("nine", source="test")
    rig.cycle()
    assert rig.loop.snapshot().latched_packs == {pack3}

    assert "dropped" in rig.loop.forget_pack(pack3, source="test")
    rig.cycle()
    # Forgotten: its DVL no longer holds the battery's (the others' own 44.8 V); no alarm; one warning.
    assert limits_heard(rig)[3] == pytest.approx(44.8)
    snapshot = rig.loop.snapshot()
    assert not snapshot.latched_packs and "pack_latched" not in status_document(snapshot)["alarms"]
    forgotten = [r.getMessage() for r in caplog.records if "forgotten" in r.getMessage()]
    assert forgotten == [
        f"BMS: pack {pack3} forgotten (asked by test): its latched blocks and limits are dropped; "
        "the battery goes on with 3 pack(s)"
    ]

    # It answers again: an ordinary pack, starting afresh.
    rig.simulator.set_behaviour(3, None)
    rig.cycle()
    snapshot = rig.loop.snapshot()
    assert snapshot.battery is not None and pack3 in snapshot.battery.online and not snapshot.latched_packs
