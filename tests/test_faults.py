"""Fault injection: every fault ends in a safe state within a named bound, recovers by itself, never crashes.

Two layers:

* **on the wire** (real time, real I/O): the JK simulator on one end of a :class:`~gateway.sim.nullmodem.NullModem`,
  the real :class:`~gateway.bms.jk_uart.JkUartDriver` on the other; noise, partial frames, bad checksums, a late
  or silent BMS, the adapter vanishing. These assert *what* the driver reports and that it recovers.
* **in the loop** (a :class:`~gateway.clock.FakeClock`): the real :class:`~gateway.runtime.ControlLoop` and
  :class:`~gateway.runtime.Poller` fed by a driver that plays the same faults through the real JK decoder; these
  assert the state reached and *when*, in simulated seconds, against the bound each test names.

Plus a CAN link whose bus raises ``can.CanOperationError`` (send failures, bus-off), the inverter's heartbeat
lost and back, a dead MQTT broker, and config files with every kind of mistake through the real CLI.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Final

import can
import pytest

from gateway.bms import jk_nw
from gateway.bms.jk_uart import JkUartDriver
from gateway.cli import main as cli_main
from gateway.clock import FakeClock, SystemClock
from gateway.errors import FrameError, GatewayError, LinkError, LinkTimeout
from gateway.limits import LimitsSettings
from gateway.model import PackReading
from gateway.profiles import Profile, load_profile
from gateway.runtime import IDLE_TICK_S, ControlLoop, FailsafeState, InverterState, LoopSettings, Poller
from gateway.sim.jk_uart import JkUartSimulator
from gateway.sim.nullmodem import A_TO_B, B_TO_A, NullModem
from gateway.sim.scenarios import SCENARIOS, Behaviour, Scenario, Step
from gateway.transport.can_link import CanLink, CanSettings

PROFILE: Final = load_profile("pylontech-can")
HEARTBEAT_PROFILE: Final = load_profile(str(Path(__file__).parent / "data" / "profiles" / "features-base.yaml"))
"""Heartbeat 0x305, timeout_s 5, on_lost stop, retry_after_s 30."""
POLL_S: Final = 1.0
BMS_TIMEOUT_S: Final = 5.0
SILENCE_AFTER_S: Final = 15.0
SERIAL_TIMEOUT_S: Final = 0.3
START_S: Final = 1000.0
LIMITS_ID: Final = 0x351


def ccl_of(data: bytes) -> float:
    """Pylontech 0x351 bytes 2-3: charge current limit, signed 16-bit little-endian, 0.1 A (from the spec)."""
    return int.from_bytes(data[2:4], "little", signed=True) / 10


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert not [r for r in caplog.records if r.exc_info], "a log record carried a traceback"
    assert "Traceback" not in caplog.text


def lines(caplog: pytest.LogCaptureFixture, text: str, level: int = logging.WARNING) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage() and r.levelno >= level]


# --- on the wire ---------------------------------------------------------------------------------------------


class Switchable:
    """A scenario whose behaviour the test switches (the pack itself keeps charging normally)."""

    def __init__(self) -> None:
        self.behaviour = Behaviour.ANSWER

    def scenario(self) -> Scenario:
        return Scenario("switchable", "normal charge, behaviour set by the test", self._step)

    def _step(self, t_s: float) -> Step:
        return replace(SCENARIOS["normal-charge"].step(t_s), behaviour=self.behaviour)


class Wire:
    def __init__(self, cable: NullModem, simulator: JkUartSimulator, driver: JkUartDriver, control: Switchable):
        self.cable, self.simulator, self.driver, self.control = cable, simulator, driver, control

    def read(self) -> PackReading | GatewayError:
        try:
            (reading,) = self.driver.read()
        except GatewayError as exc:
            return exc
        return reading


@pytest.fixture
def wire(tmp_path: Path) -> Iterator[Wire]:
    control = Switchable()
    with NullModem(tmp_path, baudrate=115200) as cable:
        simulator = JkUartSimulator(control.scenario(), SystemClock(), port=str(cable.a_path))
        simulator.start()
        driver = JkUartDriver(port=str(cable.b_path), timeout_s=SERIAL_TIMEOUT_S, retries=0, clock=SystemClock())
        try:
            yield Wire(cable, simulator, driver, control)
        finally:
            driver.close()
            simulator.stop()


def test_noise_before_the_reply_is_skipped(wire: Wire, caplog: pytest.LogCaptureFixture) -> None:
    """Bound: the very poll with noise in front of the frame still reads (no retry needed)."""
    wire.control.behaviour = Behaviour.GARBAGE_FIRST  # a false start marker with an impossible length, then a frame
    assert isinstance(wire.read(), PackReading)
    assert wire.driver.link.garbage_bytes_skipped > 0
    wire.cable.inject(A_TO_B, b"\x4e\x57\xff\xff\x00\x13garbage")  # stale noise waiting before the request
    assert isinstance(wire.read(), PackReading)
    wire.cable.inject(B_TO_A, b"\x00\xff\x13\x57\x00")  # line noise towards the BMS before our request
    assert isinstance(wire.read(), PackReading)
    # Noise with a false start marker towards the BMS: its framer takes the length 0x004E and swallows up to 78
    # bytes (our next requests). Bound: reading again within 5 polls, every failed poll a plain LinkTimeout.
    wire.cable.inject(B_TO_A, b"\x4e\x57\x00")
    replies_before = wire.simulator.replies_sent
    results = [wire.read() for _ in range(5)]
    # The BMS's side, exactly: the 77 bytes it still wants take four 21-byte requests, the false frame fails
    # its checksum, the fifth request is the only one answered.
    assert wire.simulator.replies_sent - replies_before == 1, f"BMS replies: {wire.simulator.replies_sent}"
    assert isinstance(results[-1], PackReading), results
    assert all(isinstance(r, PackReading | LinkTimeout) for r in results)
    assert_no_traceback(caplog)


def test_partial_frame_times_out_then_recovers(wire: Wire, caplog: pytest.LogCaptureFixture) -> None:
    """Bound: a truncated reply fails that one poll (LinkTimeout after timeout_s); the next good reply reads."""
    wire.control.behaviour = Behaviour.TRUNCATED
    error = wire.read()
    assert isinstance(error, LinkTimeout) and "incomplete reply" in str(error)
    wire.control.behaviour = Behaviour.ANSWER
    assert isinstance(wire.read(), PackReading)
    wire.cable.drop_next(A_TO_B, 40)  # bytes lost mid-reply: a short frame, never a wrong reading
    assert isinstance(wire.read(), LinkTimeout)
    assert isinstance(wire.read(), PackReading)
    # A request cut short (the first whole, 19 bytes of the next): the BMS answers neither; the third poll reads.
    wire.cable.drop_next(B_TO_A, 40)
    assert isinstance(wire.read(), LinkTimeout)
    assert isinstance(wire.read(), LinkTimeout)
    assert isinstance(wire.read(), PackReading)
    assert_no_traceback(caplog)


def test_wrong_checksum_is_a_frame_error_then_recovers(wire: Wire, caplog: pytest.LogCaptureFixture) -> None:
    """Bound: the first poll after the fault clears reads again."""
    wire.control.behaviour = Behaviour.BAD_CHECKSUM
    assert isinstance(wire.read(), FrameError)
    # A flipped bit in the payload on the wire: the checksum catches it, the value is never used.
    wire.control.behaviour = Behaviour.ANSWER
    wire.cable.set_transform(
        A_TO_B, lambda chunk: chunk[:-5] + bytes([chunk[-5] ^ 0x10]) + chunk[-4:] if len(chunk) > 8 else chunk
    )
    assert isinstance(wire.read(), GatewayError)
    wire.cable.set_transform(A_TO_B, None)
    assert isinstance(wire.read(), PackReading)
    assert_no_traceback(caplog)


@pytest.mark.parametrize(("delay_factor", "answers"), [(0.5, True), (1.6, False)])
def test_late_bms_just_under_and_just_over_the_timeout(
    wire: Wire, caplog: pytest.LogCaptureFixture, delay_factor: float, answers: bool
) -> None:
    """Bound: a reply within timeout_s (0.3 s) is read; one after it is a LinkTimeout, and the late bytes never
    pass for the next reply."""
    wire.simulator.reply_delay_s = SERIAL_TIMEOUT_S * delay_factor
    result = wire.read()
    assert isinstance(result, PackReading) if answers else isinstance(result, LinkTimeout)
    wire.simulator.reply_delay_s = 0.0
    time.sleep(SERIAL_TIMEOUT_S * delay_factor)  # let a late reply land: the next request must discard it
    assert isinstance(wire.read(), PackReading)
    assert_no_traceback(caplog)


def test_silent_bms_is_a_timeout_then_recovers(wire: Wire, caplog: pytest.LogCaptureFixture) -> None:
    wire.control.behaviour = Behaviour.SILENT
    for _ in range(3):
        assert isinstance(wire.read(), LinkTimeout)
    wire.control.behaviour = Behaviour.ANSWER
    assert isinstance(wire.read(), PackReading)
    assert_no_traceback(caplog)


def test_port_vanishes_and_comes_back(wire: Wire, caplog: pytest.LogCaptureFixture) -> None:
    """Bound: every poll while the adapter is gone fails with a LinkError (no hang, no crash); the port is
    reopened by the first poll after it is back (the simulator needs up to 0.3 s to reopen its own end)."""
    caplog.set_level(logging.INFO)
    assert isinstance(wire.read(), PackReading)
    wire.cable.vanish()
    for _ in range(3):
        assert isinstance(wire.read(), LinkError)
    wire.cable.reappear()
    results = []
    for _ in range(5):  # 5 × 0.3 s: more than the simulator's reopen delay
        results.append(wire.read())
        if isinstance(results[-1], PackReading):
            break
    assert isinstance(results[-1], PackReading), results
    assert len(lines(caplog, "serial:", logging.INFO)) >= 1
    assert len(lines(caplog, "reopened", logging.INFO)) == 1
    assert_no_traceback(caplog)


# --- in the loop, on a fake clock -----------------------------------------------------------------------------

_FRAME_SIM = JkUartSimulator(SCENARIOS["normal-charge"], FakeClock(), port="unused")  # respond() only


class FaultyDriver:
    """Plays a BMS through the real JK decoder on a fake clock: each poll encodes the scenario's reply and
    applies the fault the test set, then decodes it exactly as JkUartDriver does."""

    name = "faulty"

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.fault: str | None = None  # None, "silent", "checksum", "late", "implausible"

    def read(self) -> tuple[PackReading, ...]:
        now = self.clock.monotonic()
        if self.fault in ("silent", "late"):  # a late reply is a missed one: the driver gave up at its timeout
            raise LinkTimeout(f"no reply from /dev/fake within {SERIAL_TIMEOUT_S:g} s")
        frame = _FRAME_SIM.respond(jk_nw.read_all_request())
        assert frame is not None
        if self.fault == "checksum":
            frame = frame[:-1] + bytes([frame[-1] ^ 0xFF])
        reading = jk_nw.to_reading(jk_nw.decode_reply(frame), now, "faulty")
        if self.fault == "implausible":
            reading = replace(reading, state=replace(reading.state, pack_voltage_v=0.0))
        return (reading,)

    def close(self) -> None:
        pass


class Sink:
    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, int, bytes]] = []

    def send(self, can_id: int, data: bytes) -> bool:
        self.sent.append((self.clock.monotonic(), can_id, bytes(data)))
        return True

    def ccl_after(self, at_s: float) -> list[tuple[float, float]]:
        return [(t, ccl_of(d)) for t, i, d in self.sent if i == LIMITS_ID and t >= at_s]


class LoopRig:
    """run_loop's schedule on a FakeClock: poll every POLL_S, tick when the loop asks (as tests/test_runtime.py)."""

    def __init__(
        self,
        profile: Profile = PROFILE,
        sink: Any = None,
        heartbeat_age_s: Callable[[], float | None] | None = None,
    ) -> None:
        self.clock = FakeClock(start_s=START_S)
        self.sink = sink if sink is not None else Sink(self.clock)
        self.driver = FaultyDriver(self.clock)
        settings = LoopSettings(
            poll_interval_s=POLL_S,
            bms_timeout_s=BMS_TIMEOUT_S,
            silence_after_s=SILENCE_AFTER_S,
            limits=LimitsSettings(current_hold_s=0.0),
        )
        self.loop = ControlLoop(profile, self.sink, self.clock, settings, heartbeat_age_s=heartbeat_age_s)
        self.poller = Poller(self.driver, self.loop, self.clock, POLL_S)
        self.next_poll = START_S
        self.changes: list[tuple[float, FailsafeState]] = []

    @property
    def now(self) -> float:
        return self.clock.monotonic()

    def run_for(self, seconds: float) -> None:
        end = self.now + seconds
        while self.now < end - 1e-9:
            if self.now >= self.next_poll - 1e-9:
                self.poller.poll_once()
                self.next_poll += POLL_S
            before = self.loop.state
            due = self.loop.tick()
            if self.loop.state is not before:
                self.changes.append((self.now, self.loop.state))
            self.clock.advance(max(min(due, end, self.next_poll) - self.now, 1e-6))

    def entered(self, state: FailsafeState, after_s: float) -> float:
        return next(t for t, s in self.changes if s is state and t >= after_s)


@pytest.mark.parametrize("fault", ["silent", "checksum", "late", "implausible"])
def test_bms_fault_goes_stale_then_silent_and_recovers(fault: str, caplog: pytest.LogCaptureFixture) -> None:
    """Bounds (simulated time): stale (CCL 0) at most bms_timeout_s + IDLE_TICK_S after the last good reading;
    silent at most silence_after_s + IDLE_TICK_S after it; normal again within one poll of the fault clearing."""
    caplog.set_level(logging.INFO)
    rig = LoopRig()
    rig.run_for(10.0)
    assert rig.loop.state is FailsafeState.NORMAL
    last_good = rig.loop.snapshot().reading
    assert last_good is not None
    rig.driver.fault = fault
    rig.run_for(20.0)
    stale_at = rig.entered(FailsafeState.STALE, START_S)
    silent_at = rig.entered(FailsafeState.SILENT, START_S)
    assert stale_at - last_good.measured_at_s <= BMS_TIMEOUT_S + IDLE_TICK_S + 1e-6
    assert silent_at - last_good.measured_at_s <= SILENCE_AFTER_S + IDLE_TICK_S + 1e-6
    assert all(ccl == 0.0 for _, ccl in rig.sink.ccl_after(stale_at))  # the inverter hears 0 A while stale
    assert not [t for t, *_ in rig.sink.sent if t > silent_at + 1e-6]  # and nothing once silent
    cleared_at = rig.now
    rig.driver.fault = None
    rig.run_for(5.0)
    assert rig.entered(FailsafeState.NORMAL, cleared_at) - cleared_at <= POLL_S + 1e-6
    assert rig.sink.ccl_after(cleared_at)[-1][1] > 0
    # One clear line per change, however many polls failed.
    assert len(lines(caplog, "BMS: ")) == 1
    assert len(lines(caplog, "fail-safe: BMS data older than 5 s")) == 1
    assert len(lines(caplog, "transmitting nothing")) == 1
    assert_no_traceback(caplog)


class FlakyBus(can.BusABC):  # type: ignore[misc]
    """A bus whose send raises CanOperationError while ``failing`` (a controller in bus-off, a dead adapter)."""

    instances: ClassVar[list[FlakyBus]] = []

    def __init__(self, channel: Any = None, **kwargs: Any) -> None:
        super().__init__(channel=channel)
        self.failing = FlakyBus.failing_default
        self.sent: list[int] = []
        FlakyBus.instances.append(self)

    failing_default: ClassVar[bool] = False

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        if FlakyBus.failing_default:
            raise can.CanOperationError("Transmit buffer full (bus-off)")
        self.sent.append(msg.arbitration_id)

    def _recv_internal(self, timeout: float | None) -> tuple[None, bool]:
        time.sleep(min(timeout or 0.01, 0.01))
        return None, False

    def shutdown(self) -> None:
        super().shutdown()


def test_can_send_failures_and_bus_off(caplog: pytest.LogCaptureFixture) -> None:
    """Bound: while the bus is off every send returns False (nothing raises, the loop keeps its schedule); the
    link reopens at most reopen_interval_s (5 s simulated) after the fault clears; one line starts the episode
    and one ends it."""
    caplog.set_level(logging.INFO)
    FlakyBus.instances.clear()
    FlakyBus.failing_default = False
    clock = FakeClock(start_s=START_S)
    link = CanLink(CanSettings("flaky", "x", 500_000), clock, bus_factory=lambda **_: FlakyBus())
    rig = LoopRig(sink=link)
    rig.clock = clock  # one clock for link and loop
    rig.loop = ControlLoop(PROFILE, link, clock, replace_settings(), heartbeat_age_s=None)
    rig.poller = Poller(rig.driver, rig.loop, clock, POLL_S)
    rig.driver.clock = clock
    rig.next_poll = clock.monotonic()
    try:
        link.open()
        rig.run_for(3.0)
        good = rig.loop.frames_sent
        assert good > 0
        FlakyBus.failing_default = True
        rig.run_for(20.0)
        assert rig.loop.send_failures > 0
        assert rig.loop.state is FailsafeState.NORMAL  # the BMS side is untouched by a dead bus
        FlakyBus.failing_default = False
        cleared = clock.monotonic()
        rig.run_for(6.0)
        assert rig.loop.frames_sent > good
        back = [r for r in caplog.records if r.getMessage().startswith("CAN: back")]
        assert len(back) == 1
        # The first frame out after the fault: within reopen_interval_s (5 s) and a period (1 s) of clearing.
        assert FlakyBus.instances[-1].sent, "the bus was never reopened"
        assert len(lines(caplog, "CanOperationError", logging.INFO)) + len(lines(caplog, "bus-off", logging.INFO)) >= 1
        assert len(lines(caplog, "CAN:", logging.WARNING)) == 1
        assert clock.monotonic() - cleared <= 6.0
    finally:
        FlakyBus.failing_default = False
        link.close()
    assert_no_traceback(caplog)


def replace_settings() -> LoopSettings:
    return LoopSettings(
        poll_interval_s=POLL_S,
        bms_timeout_s=BMS_TIMEOUT_S,
        silence_after_s=SILENCE_AFTER_S,
        limits=LimitsSettings(current_hold_s=0.0),
    )


def test_inverter_heartbeat_lost_and_back(caplog: pytest.LogCaptureFixture) -> None:
    """Bound: lost at most timeout_s (5 s) + IDLE_TICK_S after the last heartbeat; sending stops but for one set
    every retry_after_s (30 s); alive, and sending again, at the first tick after a heartbeat."""
    caplog.set_level(logging.INFO)
    last_heartbeat = [START_S]
    beating = threading.Event()
    beating.set()
    rig_box: list[LoopRig] = []

    def heartbeat_age() -> float | None:
        rig = rig_box[0]
        if beating.is_set():
            last_heartbeat[0] = rig.now
        return rig.now - last_heartbeat[0]

    rig = LoopRig(profile=HEARTBEAT_PROFILE, heartbeat_age_s=heartbeat_age)
    rig_box.append(rig)
    rig.run_for(5.0)
    assert rig.loop.inverter_state is InverterState.ALIVE
    beating.clear()
    stopped_at = rig.now
    rig.run_for(40.0)
    assert rig.loop.inverter_state is InverterState.LOST
    lost_line = lines(caplog, "inverter lost")
    assert len(lost_line) == 1
    sent_while_lost = [t for t, *_ in rig.sink.sent if t > stopped_at + 5.0 + IDLE_TICK_S + 0.5]
    # Only the retry sets (one whole set every 30 s) go out while lost.
    assert len(sent_while_lost) <= 2 * len(HEARTBEAT_PROFILE.frames)
    beating.set()
    back_at = rig.now
    rig.run_for(2.0)
    assert rig.loop.inverter_state is InverterState.ALIVE
    assert [t for t, *_ in rig.sink.sent if t >= back_at and t <= back_at + IDLE_TICK_S + 1e-6]
    assert len(lines(caplog, "inverter alive", logging.INFO)) == 2  # first heartbeat, and back
    assert rig.loop.state is FailsafeState.NORMAL
    assert_no_traceback(caplog)


def test_mqtt_broker_down_costs_the_loop_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """Bound: offer() returns at once with nobody listening (the queue drops the oldest); stop() returns; the
    publisher names the broker it cannot reach."""
    pytest.importorskip("paho.mqtt")
    from gateway.config import MqttConfig
    from gateway.telemetry.mqtt import MqttPublisher

    caplog.set_level(logging.INFO)
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    publisher = MqttPublisher(MqttConfig(enabled=True, host="127.0.0.1", port=port, node_id="faults"), SystemClock())
    rig = LoopRig()
    rig.run_for(3.0)
    publisher.start()
    try:
        for _ in range(200):
            publisher.offer(rig.loop.snapshot())
        assert publisher.offered == 200
        assert not publisher.connected
    finally:
        publisher.stop()
    assert rig.loop.state is FailsafeState.NORMAL
    assert_no_traceback(caplog)


CONFIG_MISTAKES: Final = {
    "yaml syntax": "bms: [\n",
    "not a mapping": "- just\n- a list\n",
    "missing port": "bms:\n  driver: jk-uart\ninverter:\n  profile: pylontech-can\n",
    "unknown key": "bms:\n  port: /dev/x\n  pol_interval_s: 1\ninverter:\n  profile: pylontech-can\n",
    "wrong type": "bms:\n  port: /dev/x\n  poll_interval_s: fast\ninverter:\n  profile: pylontech-can\n",
    "out of range": "bms:\n  port: /dev/x\n  poll_interval_s: 0\ninverter:\n  profile: pylontech-can\n",
    "unknown driver": "bms:\n  port: /dev/x\n  driver: daly\ninverter:\n  profile: pylontech-can\n",
    "unknown profile": "bms:\n  port: /dev/x\ninverter:\n  profile: no-such-inverter\n",
    "timeout below poll": "bms:\n  port: /dev/x\n  poll_interval_s: 2\ninverter:\n  profile: pylontech-can\n"
    "failsafe:\n  bms_timeout_s: 1\n",
    "empty file": "",
    "not utf-8": "bms:\n  port: \xff\n",
}


@pytest.mark.parametrize("mistake", sorted(CONFIG_MISTAKES))
def test_config_mistakes_give_one_clear_line(mistake: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Bound: the gateway refuses to start (exit 2, before opening any port) with one line naming the file."""
    path = tmp_path / "gateway.yaml"
    content = CONFIG_MISTAKES[mistake]
    if mistake == "not utf-8":
        path.write_bytes(content.encode("latin-1"))
    else:
        path.write_text(content, encoding="utf-8")
    status = cli_main(["run", "-c", str(path), "--duration", "0.1"])
    err = capsys.readouterr().err
    assert status == 2, err
    error_lines = [line for line in err.splitlines() if line.startswith("bms-gateway: error:")]
    assert len(error_lines) == 1, err
    assert "Traceback" not in err
    assert math.isfinite(len(err))
