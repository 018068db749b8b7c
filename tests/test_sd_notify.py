"""sd_notify on a unix datagram socket the test owns as NOTIFY_SOCKET; the watchdog stops when the loop hangs.

The hang test runs a real :class:`~gateway.runtime.ControlLoop` and :class:`~gateway.runtime.Poller` on real
threads with the telemetry hooks wired exactly as the wiring recipe says (``before_tick``, ``tick``,
``after_tick``), hangs the loop through the fault hook, and shows that both the WATCHDOG=1 datagrams and the
inverter frames stop, and resume when it is released.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from telemetry_fixtures import PROFILE, SETTINGS, NullSink, stamped

from gateway.clock import FakeClock, SystemClock
from gateway.config import parse_config
from gateway.errors import ConfigError
from gateway.model import PackReading
from gateway.runtime import IDLE_TICK_S, ControlLoop, FailsafeState, Poller
from gateway.sim.scenarios import SCENARIOS
from gateway.telemetry.fault import LoopFault
from gateway.telemetry.sd_notify import Notifier, WatchdogPinger, watchdog_interval_s
from gateway.telemetry.service import Telemetry


class NotifySocket:
    """The systemd side: a datagram socket that collects what the gateway sends."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(self.path)
        self.socket.settimeout(0.05)

    def drain(self) -> list[str]:
        out = []
        while True:
            try:
                out.append(self.socket.recv(4096).decode())
            except TimeoutError:
                return out

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    sock = NotifySocket(tmp_path / "notify")
    yield sock
    sock.close()


def test_messages_reach_the_socket(notify: NotifySocket) -> None:
    notifier = Notifier(notify.path)
    assert notifier.ready("running: profile pylontech-can")
    assert notifier.status("fail-safe\nstale")
    assert notifier.watchdog()
    assert notifier.stopping()
    assert notify.drain() == [
        "READY=1\nSTATUS=running: profile pylontech-can",
        "STATUS=fail-safe stale",
        "WATCHDOG=1",
        "STOPPING=1",
    ]


def test_abstract_socket_name(tmp_path: Path) -> None:
    name = f"bms-gateway-test-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        listener.settimeout(1)
        assert Notifier("@" + name).ready()
        assert listener.recv(100) == b"READY=1"


def test_outside_systemd_nothing_happens() -> None:
    notifier = Notifier.from_env({})
    assert not notifier.enabled
    assert not notifier.ready() and not notifier.watchdog()
    pinger = WatchdogPinger.from_env(notifier, FakeClock(), {"WATCHDOG_USEC": "10000000"})
    pinger.on_tick()
    assert pinger.pings == 0


def test_a_vanished_socket_logs_once_and_never_raises(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier(str(tmp_path / "gone"))
    for _ in range(5):
        assert not notifier.watchdog()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot notify systemd" in warnings[0].getMessage()


def test_watchdog_interval_is_half_of_watchdog_sec() -> None:
    assert watchdog_interval_s({"WATCHDOG_USEC": "10000000"}) == 5.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}, pid=1) == 5.0
    assert watchdog_interval_s({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "1"}, pid=2) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval_s({}) is None


def test_pings_are_rate_limited(notify: NotifySocket) -> None:
    clock = FakeClock()
    pinger = WatchdogPinger(Notifier(notify.path), 5.0, clock)
    for _ in range(200):  # 20 s of ticks every 0.1 s
        pinger.on_tick()
        clock.advance(0.1)
    assert pinger.pings == 4  # at 0, 5, 10, 15 s
    assert notify.drain() == ["WATCHDOG=1"] * 4


def test_bad_fault_variable_is_one_config_line() -> None:
    with pytest.raises(ConfigError) as caught:
        LoopFault.from_env(FakeClock(), {"BMS_GATEWAY_FAULT": "crash"})
    assert str(caught.value) == "BMS_GATEWAY_FAULT: expected hang-after:<seconds>, got 'crash'"


# --- the real loop, hung -----------------------------------------------------------------------------------


class LiveDriver:
    """Answers every poll with the normal-charge scenario, stamped with the real clock."""

    name = "live"

    def __init__(self, clock: SystemClock) -> None:
        self._clock = clock

    def read(self) -> tuple[PackReading, ...]:
        return (stamped(SCENARIOS["normal-charge"].step(0.0).reading, self._clock.monotonic()),)

    def close(self) -> None:
        pass


def wired_loop(
    loop: ControlLoop, poller: Poller, telemetry: Telemetry, clock: SystemClock, stop: threading.Event
) -> None:
    """gateway.runtime.run_loop with the hooks of the wiring recipe."""
    poll_thread = threading.Thread(target=poller.run, args=(stop,), daemon=True)
    poll_thread.start()
    try:
        while not stop.is_set():
            telemetry.before_tick()
            next_due = loop.tick()
            telemetry.after_tick(loop)
            loop.wake.wait(max(0.0, min(next_due - clock.monotonic(), IDLE_TICK_S)))
            loop.wake.clear()
    finally:
        loop.shutdown()
        stop.set()
        poll_thread.join(timeout=5)


def test_a_hung_control_loop_stops_the_watchdog_and_the_frames(notify: NotifySocket) -> None:
    clock = SystemClock()
    sink = NullSink()
    loop = ControlLoop(PROFILE, sink, clock, SETTINGS)
    poller = Poller(LiveDriver(clock), loop, clock, 0.2)
    config = parse_config({"bms": {"port": "p"}, "inverter": {"profile": "x"}, "status": {"enabled": False}})
    telemetry = Telemetry.from_config(config, clock, {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "200000"})
    telemetry.start()
    telemetry.ready("test")
    stop = threading.Event()
    thread = threading.Thread(target=wired_loop, args=(loop, poller, telemetry, clock, stop), daemon=True)
    thread.start()
    try:
        time.sleep(1.5)
        before = notify.drain()
        assert before[0].startswith("READY=1")
        assert before.count("WATCHDOG=1") >= 5, before  # every 0.1 s (WatchdogSec 0.2 s / 2)
        assert loop.state is FailsafeState.NORMAL and sink.frames

        telemetry.fault.hang()
        assert telemetry.fault.hung.wait(2), "the loop never reached the fault hook"
        notify.drain()  # a ping sent just before the hang engaged
        frames_at_hang = len(sink.frames)
        time.sleep(1.0)
        assert notify.drain() == [], "watchdog pings went on while the control loop hung"
        assert len(sink.frames) == frames_at_hang, "frames went out while the control loop hung"

        telemetry.fault.release()
        time.sleep(0.5)
        assert "WATCHDOG=1" in notify.drain(), "pings did not resume"
        assert len(sink.frames) > frames_at_hang, "frames did not resume"
    finally:
        telemetry.fault.release()
        stop.set()
        thread.join(5)
        telemetry.stop(loop.snapshot())
    assert notify.drain()[-1].startswith("STOPPING=1")


def test_the_fault_variable_hangs_a_running_loop_by_itself() -> None:
    clock = FakeClock()
    fault = LoopFault.from_env(clock, {"BMS_GATEWAY_FAULT": "hang-after:5"})
    fault()  # returns: not yet
    clock.advance(5)
    thread = threading.Thread(target=fault, daemon=True)
    thread.start()
    assert fault.hung.wait(2)
    fault.release()
    thread.join(2)
    assert not thread.is_alive()
