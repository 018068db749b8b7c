"""A CAN bus a newcomer has not brought up (newcomer audit, issue 18): the service keeps retrying it (the fail-safe's
business), says once what to do, ``status`` shows why the sends fail, and the stop line claims a final zero set only
when one went out. A misspelt interface, which no retry can fix, is refused when the bus is first opened."""

from __future__ import annotations

import errno
import json
import logging
from typing import Any

import can
import pytest
from telemetry_fixtures import PROFILE, SETTINGS, stamped
from test_sd_notify import NotifySocket, notify  # noqa: F401 (a fixture)

from gateway.app import can_bus
from gateway.cli.status import render
from gateway.clock import FakeClock
from gateway.config import parse_config
from gateway.errors import LinkError
from gateway.runtime import ControlLoop
from gateway.sim.scenarios import SCENARIOS
from gateway.telemetry.service import Telemetry
from gateway.telemetry.status_doc import status_document, to_json_text
from gateway.transport.can_link import CanLink, CanSettings

LINK_LOGGER = "gateway.transport.can_link"
LOOP_LOGGER = "gateway.runtime"
DOWN = "Failed to transmit: Network is down"
UP_HINT = (
    "hint: can0 is down: sudo ip link set can0 up type can bitrate 500000 restart-ms 100, or let install.sh's CAN "
    "unit do it at every boot (sudo systemctl enable --now bms-gateway-can@can0)"
)


class DownBus(can.BusABC):
    """SocketCAN on an interface that exists but is down: it opens, and every send fails as python-can words it."""

    def __init__(self, up: bool = False) -> None:
        self.up = up
        self.sent: list[can.Message] = []
        super().__init__(channel="can0")

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        if not self.up:
            raise can.CanOperationError(DOWN, errno.ENETDOWN)
        self.sent.append(msg)

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        return None, False


def link_on(bus: can.BusABC, clock: FakeClock) -> CanLink:
    return CanLink(CanSettings("socketcan", "can0", 500_000), clock, bus_factory=lambda **_: bus)


def warnings(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno >= logging.WARNING]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start_s=100.0)


def running_loop(link: CanLink, clock: FakeClock, seconds: int) -> ControlLoop:
    """A loop with fresh BMS data every second for ``seconds``, sending through ``link``."""
    loop = ControlLoop(PROFILE, link, clock, SETTINGS, send_error=lambda: link.last_error)
    for _ in range(seconds):
        loop.on_readings((stamped(SCENARIOS["normal-charge"].step(0).reading, clock.monotonic()),))
        loop.tick()
        clock.advance(1.0)
    return loop


def test_a_can_bus_that_is_down_is_retried_and_named_once_with_the_command_that_brings_it_up(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    link = link_on(DownBus(), clock)
    try:
        link.open()  # must not raise: the interface may come up later, and then the frames go out
        loop = running_loop(link, clock, 30)
        assert loop.send_failures > 10 and loop.frames_sent == 0
        logged = warnings(caplog, LINK_LOGGER)
        assert len(logged) == 1, logged  # one line for the whole episode, not one per frame
        assert logged[0].startswith(f"CAN: send on socketcan channel can0 failed: {DOWN} [Error Code 100]; ")
        assert logged[0].endswith(f"; {UP_HINT}")
    finally:
        link.close()


def test_a_missing_interface_is_named_with_where_to_look(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    def no_such_device(**_: Any) -> can.BusABC:
        raise OSError(errno.ENODEV, "No such device")  # what SocketCAN's bind says for an unknown can0

    caplog.set_level(logging.INFO, logger=LINK_LOGGER)
    link = CanLink(CanSettings("socketcan", "can0", 500_000), clock, bus_factory=no_such_device)
    link.open()
    link.close()
    assert warnings(caplog, LINK_LOGGER) == [
        "CAN: cannot open socketcan channel can0: [Errno 19] No such device; retrying every 5 s; hint: there is no "
        "network interface can0 (ip link show lists them): plug the USB-CAN adapter in, or check the CAN HAT's "
        "dtoverlay line in /boot/firmware/config.txt and reboot"
    ]


def test_status_shows_why_the_frames_do_not_go_out(clock: FakeClock) -> None:
    link = link_on(DownBus(), clock)
    try:
        link.open()
        snapshot = running_loop(link, clock, 5).snapshot()
    finally:
        link.close()
    assert snapshot.send_error == f"send on socketcan channel can0 failed: {DOWN} [Error Code 100]"
    document = json.loads(to_json_text(status_document(snapshot)))
    assert document["inverter"]["last_send_error"] == snapshot.send_error
    inverter_line = next(line for line in render(document).splitlines() if line.startswith("inverter link:"))
    assert inverter_line.endswith(f", send failures {snapshot.send_failures}; last error: {snapshot.send_error}")


def test_a_healthy_link_shows_no_error(clock: FakeClock) -> None:
    link = link_on(DownBus(up=True), clock)
    try:
        snapshot = running_loop(link, clock, 5).snapshot()
    finally:
        link.close()
    assert snapshot.send_error is None and snapshot.frames_sent > 0
    line = next(line for line in render(status_document(snapshot)).splitlines() if line.startswith("inverter link:"))
    assert "error" not in line


def telemetry_for(clock: FakeClock, systemd: NotifySocket) -> Telemetry:
    config = parse_config(
        {
            "bms": {"port": "/dev/null"},
            "inverter": {"profile": "pylontech-can", "can": {"interface": "socketcan", "channel": "can0"}},
            "status": {"enabled": False},
        }
    )
    return Telemetry.from_config(config, clock, {"NOTIFY_SOCKET": systemd.path})


@pytest.mark.parametrize("up", [False, True])
def test_the_stop_line_claims_the_zero_set_only_when_it_went_out(
    up: bool,
    clock: FakeClock,
    notify: NotifySocket,  # noqa: F811 (the fixture imported above)
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The old code logged "last frames sent with zero current limits" (and told systemd so) after every send failed.
    caplog.set_level(logging.INFO, logger=LOOP_LOGGER)
    link = link_on(DownBus(up=up), clock)
    try:
        loop = running_loop(link, clock, 3)
        loop.shutdown()
        final = loop.snapshot()
        telemetry_for(clock, notify).stop(final)
    finally:
        link.close()
    stops = [r.getMessage() for r in caplog.records if r.name == LOOP_LOGGER and r.getMessage().startswith("stopped")]
    if up:
        assert stops == ["stopped: last frames sent with zero current limits"]
        assert notify.drain() == ["STOPPING=1\nSTATUS=stopping: last frames sent with zero current limits"]
    else:
        assert stops == [
            "stopped: the last frames with zero current limits did not go out (send on socketcan channel can0 "
            f"failed: {DOWN} [Error Code 100])"
        ]
        assert notify.drain() == ["STOPPING=1\nSTATUS=stopping"]
    assert final.zero_set_sent is up


def test_a_misspelt_interface_is_refused_when_the_bus_is_first_opened(clock: FakeClock) -> None:
    # The config refuses it already; the link must not retry it for ever either (python-can raises a bare
    # NotImplementedError for it when its config files are ignored, which the old code took for hardware trouble).
    link = CanLink(CanSettings("socketcn", "can0", 500_000), clock, bus_factory=can_bus)
    with pytest.raises(LinkError) as caught:
        link.open()
    link.close()
    assert str(caught.value) == "CAN: cannot open socketcn channel can0: CAN interface 'socketcn' not supported"
    assert caught.value.hint is not None and caught.value.hint.startswith("check inverter.can.interface")
