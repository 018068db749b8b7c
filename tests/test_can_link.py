"""Tests for gateway.transport.can_link: real python-can virtual buses plus small fake buses for failures."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import can
import pytest

from gateway.clock import FakeClock
from gateway.errors import FrameError, LinkError
from gateway.transport.can_link import CanLink, CanSettings

LOGGER = "gateway.transport.can_link"
_channel_numbers = itertools.count()


def wait_until(predicate: Callable[[], bool], timeout_s: float = 2.0) -> bool:
    """Poll ``predicate`` (real time, for the reader thread) until true or ``timeout_s`` seconds pass."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


@pytest.fixture
def channel() -> str:
    """A virtual channel name no other test shares."""
    return f"test-can-link-{next(_channel_numbers)}"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start_s=500.0)


@pytest.fixture
def inverter(channel: str) -> Iterator[can.BusABC]:
    """The far end of the virtual bus: plays the inverter."""
    bus = can.Bus(interface="virtual", channel=channel, receive_own_messages=False)
    yield bus
    bus.shutdown()


def virtual_link(channel: str, clock: FakeClock, **kwargs: Any) -> CanLink:
    settings = CanSettings("virtual", channel, None, {"receive_own_messages": False})
    return CanLink(settings, clock, **kwargs)


class FakeBus(can.BusABC):
    """A bus whose send fails ``send_failures`` times; refuses periodic sending outright."""

    def __init__(self, channel: str = "fake", send_failures: int = 0, recv_failures: int = 0) -> None:
        self.sent: list[can.Message] = []
        self.send_failures = send_failures
        self.recv_failures = recv_failures
        self.shut_down = False
        super().__init__(channel=channel)

    def send(self, msg: can.Message, timeout: float | None = None) -> None:
        if self.send_failures > 0:
            self.send_failures -= 1
            raise can.CanOperationError("Failed to transmit: No buffer space available", 105)
        self.sent.append(msg)

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        if self.recv_failures > 0:
            self.recv_failures -= 1
            raise can.CanOperationError("Failed to receive: Network is down", 100)
        time.sleep(min(timeout or 0.0, 0.01))
        return None, False

    def send_periodic(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("CanLink must never use send_periodic")

    def _send_periodic_internal(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("CanLink must never use periodic tasks")

    def shutdown(self) -> None:
        self.shut_down = True
        super().shutdown()


class Factory:
    """A bus_factory that raises the queued errors first, then hands out the queued (or fresh) buses."""

    def __init__(self, *outcomes: BaseException | can.BusABC) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[dict[str, Any]] = []
        self.buses: list[can.BusABC] = []

    def __call__(self, **kwargs: Any) -> can.BusABC:
        self.calls.append(kwargs)
        outcome = self.outcomes.pop(0) if self.outcomes else FakeBus()
        if isinstance(outcome, BaseException):
            raise outcome
        self.buses.append(outcome)
        return outcome


def fake_link(clock: FakeClock, factory: Factory, **kwargs: Any) -> CanLink:
    return CanLink(CanSettings("socketcan", "can0", 500_000), clock, bus_factory=factory, **kwargs)


# --- settings ---------------------------------------------------------------------------------------------


def test_settings_pass_interface_channel_bitrate_and_extra_unchanged() -> None:
    settings = CanSettings("slcan", "/dev/ttyACM0", 500_000, {"tty_baudrate": 115200, "sleep_after_open": 0.5})
    assert settings.bus_kwargs() == {
        "interface": "slcan",
        "channel": "/dev/ttyACM0",
        "bitrate": 500_000,
        "tty_baudrate": 115200,
        "sleep_after_open": 0.5,
        "timeout": 0.1,  # our slcan default: python-can's 1 ms read timeout busy-polls the port
    }


def test_slcan_read_timeout_default_yields_to_the_config() -> None:
    assert CanSettings("slcan", "/dev/ttyACM0", None, {"timeout": 0.2}).bus_kwargs()["timeout"] == 0.2
    assert "timeout" not in CanSettings("socketcan", "can0", None).bus_kwargs()


def test_settings_leave_bitrate_out_when_none() -> None:
    assert CanSettings("socketcan", "can0", None).bus_kwargs() == {"interface": "socketcan", "channel": "can0"}


def test_settings_extra_is_a_read_only_copy() -> None:
    extra = {"fd": False}
    settings = CanSettings("socketcan", "can0", None, extra)
    extra["fd"] = True
    assert settings.extra == {"fd": False}
    with pytest.raises(TypeError):
        settings.extra["fd"] = True  # type: ignore[index]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"interface": "", "channel": "can0", "bitrate": None}, "interface"),
        ({"interface": "socketcan", "channel": "can0", "bitrate": 0}, "bitrate"),
        ({"interface": "socketcan", "channel": "can0", "bitrate": None, "extra": {"bitrate": 1}}, "bitrate"),
    ],
)
def test_settings_reject_nonsense(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        CanSettings(**kwargs)


def test_factory_receives_the_settings_kwargs(clock: FakeClock) -> None:
    factory = Factory()
    settings = CanSettings("gs_usb", "0", None, {"index": 0})
    link = CanLink(settings, clock, bus_factory=factory)
    link.open()
    link.close()
    assert factory.calls == [{"interface": "gs_usb", "channel": "0", "index": 0}]


# --- sending on a virtual bus -----------------------------------------------------------------------------


def test_frames_arrive_on_the_other_bus_exactly(channel: str, clock: FakeClock, inverter: can.BusABC) -> None:
    link = virtual_link(channel, clock)
    link.open()
    try:
        assert link.is_open
        frames = [(0x351, bytes.fromhex("1802e803e8030e02")), (0x355, bytes.fromhex("5a006400")), (0x35E, b"")]
        for can_id, data in frames:
            assert link.send(can_id, data) is True
        for can_id, data in frames:
            msg = inverter.recv(timeout=1.0)
            assert msg is not None
            assert msg.arbitration_id == can_id
            assert bytes(msg.data) == data
            assert msg.dlc == len(data)
            assert msg.is_extended_id is False
            assert msg.is_remote_frame is False
        assert inverter.recv(timeout=0.05) is None, "one frame per send, nothing repeated"
        assert link.errors == 0
    finally:
        link.close()


def test_send_opens_the_bus_lazily(channel: str, clock: FakeClock, inverter: can.BusABC) -> None:
    link = virtual_link(channel, clock)
    try:
        assert not link.is_open
        assert link.send(0x359, b"\x00" * 7)
        msg = inverter.recv(timeout=1.0)
        assert msg is not None and msg.arbitration_id == 0x359
    finally:
        link.close()


def test_virtual_bus_send_periodic_is_never_touched(
    channel: str, clock: FakeClock, inverter: can.BusABC, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("CanLink must never use send_periodic")

    monkeypatch.setattr(can.BusABC, "send_periodic", forbidden)
    monkeypatch.setattr(can.BusABC, "_send_periodic_internal", forbidden)
    link = virtual_link(channel, clock)
    link.open()
    try:
        for _ in range(5):
            assert link.send(0x356, b"\x14\x15\x00\x00\xf0\x00")
        assert link.errors == 0
    finally:
        link.close()


@pytest.mark.parametrize(("can_id", "data"), [(0x800, b""), (-1, b""), (0x351, bytes(9))])
def test_send_rejects_frames_that_are_not_classic_standard(clock: FakeClock, can_id: int, data: bytes) -> None:
    link = fake_link(clock, Factory())
    with pytest.raises(ValueError):
        link.send(can_id, data)
    link.close()


def test_listen_ids_must_be_standard_ids(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="11-bit"):
        fake_link(clock, Factory(), listen_ids=[0x1FFFFFFF])


# --- receiving ------------------------------------------------------------------------------------------


def test_heartbeat_is_recorded_with_clock_time_and_ages(channel: str, clock: FakeClock, inverter: can.BusABC) -> None:
    link = virtual_link(channel, clock, listen_ids=[0x305])
    link.open()
    try:
        assert link.last_received(0x305) is None
        assert link.heartbeat_age_s(0x305) is None
        inverter.send(can.Message(arbitration_id=0x305, data=b"\x00" * 8, is_extended_id=False))
        assert wait_until(lambda: link.last_received(0x305) is not None)
        assert link.last_received(0x305) == (500.0, b"\x00" * 8)
        assert link.heartbeat_age_s(0x305) == 0.0
        clock.advance(3.5)
        assert link.heartbeat_age_s(0x305) == pytest.approx(3.5)

        inverter.send(can.Message(arbitration_id=0x305, data=b"\x01", is_extended_id=False))
        assert wait_until(lambda: link.last_received(0x305) == (503.5, b"\x01"))
        assert link.heartbeat_age_s(0x305) == 0.0
    finally:
        link.close()


def test_only_listened_standard_data_frames_are_recorded(channel: str, clock: FakeClock, inverter: can.BusABC) -> None:
    link = virtual_link(channel, clock, listen_ids=[0x305])
    link.open()
    try:
        inverter.send(can.Message(arbitration_id=0x305, data=b"\xee", is_extended_id=True))
        inverter.send(can.Message(arbitration_id=0x306, data=b"\xdd", is_extended_id=False))
        inverter.send(can.Message(arbitration_id=0x305, is_remote_frame=True, is_extended_id=False))
        inverter.send(can.Message(arbitration_id=0x305, data=b"\x42", is_extended_id=False))
        assert wait_until(lambda: link.last_received(0x305) is not None)
        assert link.last_received(0x305) == (500.0, b"\x42")
        assert link.last_received(0x306) is None
    finally:
        link.close()


def test_reader_survives_a_receive_error_and_resumes_after_reopen(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    first = FakeBus(recv_failures=1)
    second = FakeBus()
    factory = Factory(first, second)
    link = fake_link(clock, factory, reopen_interval_s=5.0)
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    link.open()
    try:
        assert wait_until(lambda: first.shut_down)
        assert not link.is_open
        assert link.errors == 1
        assert len(warnings_of(caplog)) == 1
        assert "receive on socketcan channel can0 failed" in warnings_of(caplog)[0]
        reader = [t for t in threading.enumerate() if t.name == "can-reader-can0"]
        assert len(reader) == 1 and reader[0].is_alive()

        assert link.send(0x351, b"\x01") is False, "still waiting for the reopen interval"
        clock.advance(5.0)
        assert link.send(0x351, b"\x01") is True
        assert factory.buses == [first, second]
        assert [m.arbitration_id for m in second.sent] == [0x351]
        assert reader[0].is_alive(), "the same reader thread serves the reopened bus"
    finally:
        link.close()


# --- failures --------------------------------------------------------------------------------------------


def test_open_failure_logs_once_and_send_reopens_after_interval(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    vanished = can.CanInitializationError("[Errno 19] No such device")
    factory = Factory(vanished, OSError(19, "No such device"))
    link = fake_link(clock, factory, reopen_interval_s=5.0)
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    try:
        link.open()  # must not raise
        assert not link.is_open
        assert link.errors == 1
        assert [line.partition("; hint: ")[0] for line in warnings_of(caplog)] == [  # hints: test_can_trouble.py
            "CAN: cannot open socketcan channel can0: [Errno 19] No such device; retrying every 5 s"
        ]

        clock.advance(4.9)
        assert link.send(0x351, b"\x01") is False
        assert len(factory.calls) == 1, "no reopen before the interval"

        clock.advance(0.1)
        assert link.send(0x351, b"\x01") is False, "second open attempt fails too"
        assert len(factory.calls) == 2
        assert link.errors == 2

        clock.advance(5.0)
        assert link.send(0x351, b"\x01") is True
        assert link.is_open
        assert len(warnings_of(caplog)) == 1, "one line for the whole episode"
        assert any(r.getMessage().startswith("CAN: back") for r in caplog.records)
        assert "Traceback" not in caplog.text
    finally:
        link.close()


def test_send_errors_are_one_episode_counted_and_recovered(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    failures = 3
    factory = Factory(FakeBus(send_failures=1), FakeBus(send_failures=1), FakeBus(send_failures=1))
    link = fake_link(clock, factory, reopen_interval_s=2.0, reopen_after_failures=1)
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    link.open()
    try:
        results = []
        for _ in range(failures + 1):
            results.append(link.send(0x355, b"\x50\x00\x64\x00"))
            results.append(link.send(0x356, b"\x00"))  # skipped quietly while the bus is down
            clock.advance(2.0)
        assert results == [False, False] * failures + [True, True]
        assert link.errors == failures
        assert warnings_of(caplog) == [
            "CAN: send on socketcan channel can0 failed: Failed to transmit: No buffer space available "
            "[Error Code 105]; retrying every 2 s"
        ]
        backs = [r for r in caplog.records if r.getMessage().startswith("CAN: back")]
        assert len(backs) == 1
        assert all(bus.shut_down for bus in factory.buses[:failures]), "a failed bus is shut down"  # type: ignore[attr-defined]
        assert "Traceback" not in caplog.text
    finally:
        link.close()


def test_a_second_episode_logs_again(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    factory = Factory(FakeBus(send_failures=1), FakeBus())
    link = fake_link(clock, factory, reopen_interval_s=1.0, reopen_after_failures=1)
    caplog.set_level(logging.INFO, logger=LOGGER)
    link.open()
    try:
        assert link.send(0x351, b"") is False
        clock.advance(1.0)
        assert link.send(0x351, b"") is True
        second = factory.buses[1]
        assert isinstance(second, FakeBus)
        second.send_failures = 1  # the adapter trips again later
        assert link.send(0x351, b"") is False
        assert len(warnings_of(caplog)) == 2
        assert link.errors == 2
    finally:
        link.close()


def test_a_bus_that_fails_to_shut_down_is_still_dropped(clock: FakeClock) -> None:
    class StubbornBus(FakeBus):
        def shutdown(self) -> None:
            super().shutdown()
            raise OSError(5, "Input/output error")

    link = fake_link(clock, Factory(StubbornBus(send_failures=1)), reopen_after_failures=1)
    link.open()
    try:
        assert link.send(0x351, b"") is False
        assert not link.is_open
    finally:
        link.close()


SINGLE_FAILURE_WARNING = (
    "CAN: send on socketcan channel can0 failed: Failed to transmit: No buffer space available [Error Code 105]; "
    "the frames go out again when next due; the bus is reopened after 5 failed sends in a row"
)


def infos_of(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER and r.levelno == logging.INFO and text in r.getMessage()
    ]


def test_a_single_failed_send_does_not_close_the_bus(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    """The audit's L8: one ENOBUFS closed the bus, and then no frame went out for reopen_interval_s (5 s)."""
    bus = FakeBus(send_failures=2)
    factory = Factory(bus)
    link = fake_link(clock, factory)
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    link.open()
    try:
        assert link.send(0x351, b"\x01") is False
        assert bus.send_failures == 1, "tried once, not again at once"
        assert link.is_open and not bus.shut_down
        bus.send_failures = 0  # the transmit queue has room again
        clock.advance(1.0)  # the frame's next due time
        assert link.send(0x351, b"\x01") is True
        assert [m.arbitration_id for m in bus.sent] == [0x351], "on the same bus"
        assert len(factory.calls) == 1, "the bus was never reopened"
        assert link.errors == 1
        assert warnings_of(caplog) == [SINGLE_FAILURE_WARNING]
        assert len(infos_of(caplog, "CAN: back on socketcan channel can0")) == 1
        assert "Traceback" not in caplog.text
    finally:
        link.close()


def test_sends_failing_in_a_row_reopen_the_bus(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    first, second, third = FakeBus(send_failures=5), FakeBus(send_failures=5), FakeBus()
    factory = Factory(first, second, third)
    link = fake_link(clock, factory, reopen_interval_s=5.0)
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    link.open()
    try:
        for _ in range(4):
            assert link.send(0x351, b"\x01") is False
            assert link.is_open, "fewer than 5 failures in a row keep the bus"
            clock.advance(1.0)
        assert link.send(0x351, b"\x01") is False  # the 5th in a row
        assert first.shut_down and not link.is_open
        assert len(factory.calls) == 1

        clock.advance(4.9)
        assert link.send(0x351, b"\x01") is False
        assert len(factory.calls) == 1, "no reopen before reopen_interval_s"
        clock.advance(0.1)
        for _ in range(5):  # the reopened bus fails 5 in a row as well
            assert link.send(0x351, b"\x01") is False
        assert len(factory.calls) == 2 and second.shut_down
        clock.advance(5.0)
        assert link.send(0x351, b"\x01") is True
        assert len(factory.calls) == 3
        assert [m.arbitration_id for m in third.sent] == [0x351]
        assert link.errors == 10
        assert warnings_of(caplog) == [SINGLE_FAILURE_WARNING], "one line starts the episode"
        assert infos_of(caplog, "sends in a row failed") == [
            "CAN: 5 sends in a row failed on socketcan channel can0; shutting the bus down, reopening it every 5 s"
        ]
        assert len(infos_of(caplog, "CAN: back on")) == 1, "recovery logged once"
    finally:
        link.close()


def test_failures_apart_do_not_add_up(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    bus = FakeBus(send_failures=4)
    factory = Factory(bus)
    link = fake_link(clock, factory)
    caplog.set_level(logging.INFO, logger=LOGGER)
    link.open()
    try:
        results = [link.send(0x351, b"") for _ in range(5)]
        bus.send_failures = 4
        results += [link.send(0x351, b"") for _ in range(5)]
        assert results == [False] * 4 + [True] + [False] * 4 + [True]
        assert len(factory.calls) == 1 and not bus.shut_down
        assert len(warnings_of(caplog)) == 2 and len(infos_of(caplog, "CAN: back on")) == 2
    finally:
        link.close()


def test_reopen_after_failures_must_be_positive(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="reopen_after_failures"):
        fake_link(clock, Factory(), reopen_after_failures=0)


@pytest.mark.parametrize(
    "error",
    [
        can.CanInterfaceNotImplementedError('Unknown interface type "nosuch"'),
        TypeError("unexpected keyword argument 'speed'"),
    ],
)
def test_open_raises_link_error_for_configuration_mistakes(clock: FakeClock, error: Exception) -> None:
    link = fake_link(clock, Factory(error))
    with pytest.raises(LinkError, match="CAN: cannot open socketcan channel can0"):
        link.open()
    link.close()


def test_unknown_interface_through_real_can_bus(clock: FakeClock) -> None:
    link = CanLink(CanSettings("no-such-interface", "x", None), clock)
    with pytest.raises(LinkError, match="no-such-interface"):
        link.open()
    link.close()


# --- close ------------------------------------------------------------------------------------------------


def test_close_stops_the_reader_and_is_idempotent(channel: str, clock: FakeClock, inverter: can.BusABC) -> None:
    name = f"can-reader-{channel}"
    link = virtual_link(channel, clock, listen_ids=[0x305])
    link.open()
    assert any(t.name == name for t in threading.enumerate())
    started = time.monotonic()
    link.close()
    assert time.monotonic() - started < 1.0, "close is prompt"
    assert not any(t.name == name for t in threading.enumerate())
    assert not link.is_open
    link.close()
    assert not link.is_open
    assert link.send(0x351, b"") is False, "a closed link does not reopen by itself"


def test_open_after_close_works_again(channel: str, clock: FakeClock, inverter: can.BusABC) -> None:
    link = virtual_link(channel, clock, listen_ids=[0x305])
    link.open()
    link.close()
    with link:
        assert link.send(0x351, b"\x07")
        msg = inverter.recv(timeout=1.0)
        assert msg is not None and bytes(msg.data) == b"\x07"
    assert not link.is_open


def test_close_without_open_is_harmless(clock: FakeClock) -> None:
    link = fake_link(clock, Factory())
    link.close()
    assert not link.is_open


# --- decoded values and the receive callback ------------------------------------------------------------------


def voltage_decoder(data: bytes) -> dict[str, float]:
    """A stand-in for a profile's inverter frame: u16 little-endian, 0.1 V per count, at least 2 bytes."""
    if len(data) < 2:
        raise FrameError("short frame", f"frame 0x305: {len(data)} bytes, fields need 2")
    return {"inverter_voltage_v": int.from_bytes(data[:2], "little") / 10}


def test_decoded_values_are_kept_with_their_arrival_time(
    channel: str, clock: FakeClock, inverter: can.BusABC, caplog: pytest.LogCaptureFixture
) -> None:
    heard: list[int] = []
    link = virtual_link(channel, clock, decoders={0x305: voltage_decoder}, listen_ids=[0x301], on_receive=heard.append)
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    link.open()
    try:
        assert link.received_values() == {}
        # 531 = 0x0213 -> 13 02 = 53.1 V
        inverter.send(can.Message(arbitration_id=0x305, data=bytes.fromhex("1302"), is_extended_id=False))
        assert wait_until(lambda: heard == [0x305])
        assert link.received_values() == {"inverter_voltage_v": (53.1, 500.0)}
        assert link.heartbeat_age_s(0x305) == 0.0, "a decoder's id is listened to as well"

        clock.advance(2.0)
        inverter.send(can.Message(arbitration_id=0x301, data=bytes(8), is_extended_id=False))  # no decoder
        assert wait_until(lambda: heard == [0x305, 0x301])
        assert link.received_values() == {"inverter_voltage_v": (53.1, 500.0)}

        # Frames the decoder rejects: counted, one warning for the run of them, the old values kept.
        for _ in range(3):
            inverter.send(can.Message(arbitration_id=0x305, data=b"\x01", is_extended_id=False))
        assert wait_until(lambda: link.decode_errors == 3)
        assert warnings_of(caplog) == [
            "CAN: frame 0x305 from the inverter not decoded: short frame: frame 0x305: 1 bytes, fields need 2"
        ]
        assert link.received_values() == {"inverter_voltage_v": (53.1, 500.0)}
        assert link.last_received(0x305) == (502.0, b"\x01")
        assert heard == [0x305, 0x301, 0x305, 0x305, 0x305], "a rejected frame still arrived"
    finally:
        link.close()


def test_a_failing_receive_callback_does_not_stop_the_reader(
    channel: str, clock: FakeClock, inverter: can.BusABC, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def broken(can_id: int) -> None:
        calls.append(can_id)
        raise RuntimeError("boom")

    link = virtual_link(channel, clock, listen_ids=[0x301], on_receive=broken)
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    link.open()
    try:
        for _ in range(2):
            inverter.send(can.Message(arbitration_id=0x301, data=b"\x11", is_extended_id=False))
        assert wait_until(lambda: len(calls) == 2)
        assert "CAN: handling frame 0x301 failed: boom" in warnings_of(caplog)
        assert "Traceback" not in caplog.text
    finally:
        link.close()
