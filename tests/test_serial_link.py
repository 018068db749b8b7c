"""SerialLink and the jk-uart driver: over real ptys (a NullModem with the simulated BMS on the other end) and
against a fake serial port for the exact hunting rules."""

from __future__ import annotations

import logging
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import serial
from jk_frames import REPLIES, with_current_raw, without_protocol_version, wrap

from gateway.bms import jk_nw
from gateway.bms.jk_uart import JkUartDriver
from gateway.clock import Clock, FakeClock
from gateway.errors import FrameError, LinkError, LinkTimeout
from gateway.model import PackReading
from gateway.sim.jk_uart import JkUartSimulator
from gateway.sim.nullmodem import A_TO_B, B_TO_A, NullModem
from gateway.sim.scenarios import SCENARIOS, Behaviour
from gateway.transport.serial_link import SerialLink

REPLY_TIMEOUT_S = 2.0
"""For exchanges that should succeed: generous, as waiting only costs time when something is wrong."""
TIMEOUT_S = 0.3
"""For exchanges that are meant to time out."""
LINK_LOGGER = "gateway.transport.serial_link"

# ---------------------------------------------------------------------------------------------------------
# Over real ptys: the simulator on the null-modem's "bms" end, the driver on its "gateway" end
# ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def modem(tmp_path: Path) -> Iterator[NullModem]:
    with NullModem(tmp_path) as nm:
        yield nm


@pytest.fixture
def start_simulator(modem: NullModem) -> Iterator[Callable[[str, Clock], JkUartSimulator]]:
    started: list[JkUartSimulator] = []

    def start(scenario: str, clock: Clock) -> JkUartSimulator:
        simulator = JkUartSimulator(SCENARIOS[scenario], clock, port=str(modem.a_path))
        simulator.start()
        started.append(simulator)
        return simulator

    yield start
    for simulator in started:
        simulator.stop()


@pytest.fixture
def make_driver(modem: NullModem) -> Iterator[Callable[..., JkUartDriver]]:
    made: list[JkUartDriver] = []

    def make(
        clock: Clock, *, retries: int = 0, port: str | None = None, timeout_s: float = REPLY_TIMEOUT_S
    ) -> JkUartDriver:
        driver = JkUartDriver(
            port=str(modem.b_path) if port is None else port, timeout_s=timeout_s, retries=retries, clock=clock
        )
        made.append(driver)
        return driver

    yield make
    for driver in made:
        driver.close()


def wait_until_serving(modem: NullModem, within_s: float = 10.0) -> None:
    """Poll with a throwaway driver until the simulator answers. It opens its end of the cable in its own
    thread, and a request sent before that is flushed away unanswered."""
    driver = JkUartDriver(port=str(modem.b_path), timeout_s=TIMEOUT_S, retries=0, clock=FakeClock())
    deadline = time.monotonic() + within_s
    try:
        while True:
            try:
                driver.read()
                return
            except LinkError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
    finally:
        driver.close()


def first_reading(driver: JkUartDriver, within_s: float = 10.0, tolerate: type[LinkError] = LinkTimeout) -> PackReading:
    """The first reading of a new simulator: it opens its end of the cable in its own thread, and a request
    sent before that goes unanswered (``tolerate``: the errors expected until then)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            return driver.read()[0]
        except tolerate:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def wait_for(condition: Callable[[], bool], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def assert_matches_scenario(reading: PackReading, scenario: str, t_s: float) -> None:
    expected = SCENARIOS[scenario].step(t_s).reading
    assert reading.state.cell_voltages_v == pytest.approx(expected.state.cell_voltages_v, abs=0.0005)
    assert reading.state.current_a == pytest.approx(expected.state.current_a, abs=0.005)
    assert reading.state.soc_pct == expected.state.soc_pct
    assert reading.state.alarms == expected.state.alarms
    assert reading.state.charge_mos_on == expected.state.charge_mos_on
    assert reading.settings.cell_ovp_v == pytest.approx(expected.settings.cell_ovp_v)
    assert reading.settings.cell_count == expected.settings.cell_count


def test_read_returns_the_scenario_reading(
    modem: NullModem, start_simulator: Callable[..., JkUartSimulator], make_driver: Callable[..., JkUartDriver]
) -> None:
    clock = FakeClock()
    start_simulator("normal-charge", clock)
    clock.advance(100.0)
    driver = make_driver(clock)
    reading = first_reading(driver)
    assert_matches_scenario(reading, "normal-charge", 100.0)
    assert reading.pack_id == f"jk-uart:{modem.b_path}"
    assert reading.measured_at_s == clock.monotonic()  # stamped with the driver's clock at the reply
    assert len(reading.state.cell_voltages_v) == 16
    assert driver.link.garbage_bytes_skipped == 0


def test_noise_injected_before_the_reply_is_skipped(
    modem: NullModem, start_simulator: Callable[..., JkUartSimulator], make_driver: Callable[..., JkUartDriver]
) -> None:
    clock = FakeClock()
    start_simulator("normal-charge", clock)
    driver = make_driver(clock)
    first_reading(driver)
    skipped_before = driver.link.garbage_bytes_skipped
    noise = b"\x00\xff\x13\x37\xaa\x57\x4e"  # ends with half a start marker
    fired: list[bool] = []

    def on_request(chunk: bytes) -> bytes:
        # Runs as the request passes to the BMS, after the link flushed its input: the noise reaches the
        # gateway before the BMS's reply.
        if not fired:
            fired.append(True)
            modem.inject(A_TO_B, noise)
        return chunk

    modem.set_transform(B_TO_A, on_request)
    reading = driver.read()[0]
    assert fired
    assert_matches_scenario(reading, "normal-charge", 0.0)
    assert driver.link.garbage_bytes_skipped == skipped_before + len(noise)


def test_garbage_first_step_of_corrupt_scenario_is_skipped(
    start_simulator: Callable[..., JkUartSimulator], make_driver: Callable[..., JkUartDriver]
) -> None:
    clock = FakeClock()
    start_simulator("corrupt", clock)
    corrupt = SCENARIOS["corrupt"]
    good_t = next(t + 0.5 for t in range(8) if corrupt.step(t + 0.5).behaviour is Behaviour.ANSWER)
    garbage_t = next(t + 0.5 for t in range(8) if corrupt.step(t + 0.5).behaviour is Behaviour.GARBAGE_FIRST)
    clock.advance(good_t)
    driver = make_driver(clock)
    first_reading(driver)
    assert driver.link.garbage_bytes_skipped == 0
    clock.advance((garbage_t - good_t) % 4)  # forward to the next garbage-first second
    reading = driver.read()[0]  # no retries: the first reply must be usable
    assert_matches_scenario(reading, "corrupt", good_t + (garbage_t - good_t) % 4)
    assert driver.link.garbage_bytes_skipped > 0


def test_reply_cut_short_is_an_incomplete_reply_timeout(
    modem: NullModem, start_simulator: Callable[..., JkUartSimulator], make_driver: Callable[..., JkUartDriver]
) -> None:
    clock = FakeClock()
    start_simulator("normal-charge", clock)
    driver = make_driver(clock, timeout_s=TIMEOUT_S)
    first_reading(driver)
    keep = 40
    passed = 0

    def cut(chunk: bytes) -> bytes:
        nonlocal passed
        allowed = chunk[: max(0, keep - passed)]
        passed += len(allowed)
        return allowed

    modem.set_transform(A_TO_B, cut)
    with pytest.raises(LinkTimeout, match=rf"incomplete reply from {modem.b_path}: {keep} of \d+ bytes") as info:
        driver.read()
    assert f"within {TIMEOUT_S:g} s" in str(info.value)
    modem.set_transform(A_TO_B, None)
    assert_matches_scenario(first_reading(driver), "normal-charge", 0.0)  # the link recovers


def test_silent_bms_is_a_no_reply_timeout(
    modem: NullModem, start_simulator: Callable[..., JkUartSimulator], make_driver: Callable[..., JkUartDriver]
) -> None:
    clock = FakeClock()
    simulator = start_simulator("silent", clock)
    silent = SCENARIOS["silent"]
    driver = make_driver(clock, timeout_s=TIMEOUT_S)
    assert silent.step(0.0).behaviour is Behaviour.ANSWER
    first_reading(driver)
    clock.advance(30.0)
    assert silent.step(30.0).behaviour is Behaviour.SILENT
    seen = simulator.requests_seen
    with pytest.raises(LinkTimeout, match=rf"no reply from {modem.b_path} within {TIMEOUT_S:g} s"):
        driver.read()
    assert simulator.requests_seen == seen + 1  # the request arrived; the BMS chose not to answer
    clock.advance(20.0)
    assert silent.step(50.0).behaviour is Behaviour.ANSWER
    assert_matches_scenario(driver.read()[0], "silent", 50.0)


def test_bad_checksum_is_a_frame_error_after_every_retry(
    start_simulator: Callable[..., JkUartSimulator], make_driver: Callable[..., JkUartDriver]
) -> None:
    clock = FakeClock()
    simulator = start_simulator("corrupt", clock)
    corrupt = SCENARIOS["corrupt"]
    good_t = next(t + 0.5 for t in range(8) if corrupt.step(t + 0.5).behaviour is Behaviour.ANSWER)
    bad_t = next(t + 0.5 for t in range(8) if corrupt.step(t + 0.5).behaviour is Behaviour.BAD_CHECKSUM)
    clock.advance(good_t)
    driver = make_driver(clock, retries=1)
    first_reading(driver)
    clock.advance((bad_t - good_t) % 4)
    seen = simulator.requests_seen
    with pytest.raises(FrameError) as info:
        driver.read()
    assert info.value.fault == "bad checksum"
    assert simulator.requests_seen == seen + 2  # retries=1: asked twice


def serial_link_records(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LINK_LOGGER and r.levelno == level]


def lost_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The link's own "lost" / "cannot open" lines (INFO: the runtime warns about the LinkError itself)."""
    return [
        r
        for r in serial_link_records(caplog, logging.INFO)
        if "lost" in r.getMessage() or "cannot open" in r.getMessage()
    ]


def test_vanished_port_is_a_link_error_logged_once_and_the_same_driver_reconnects(
    modem: NullModem,
    start_simulator: Callable[..., JkUartSimulator],
    make_driver: Callable[..., JkUartDriver],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LINK_LOGGER)
    clock = FakeClock()
    start_simulator("normal-charge", clock)
    driver = make_driver(clock)
    first_reading(driver)
    caplog.clear()

    modem.vanish()
    for _ in range(3):
        with pytest.raises(LinkError) as info:
            driver.read()
        assert not isinstance(info.value, LinkTimeout), info.value
        assert str(modem.b_path) in str(info.value)
    lost = lost_records(caplog)
    assert len(lost) == 1, [r.getMessage() for r in lost]
    assert str(modem.b_path) in lost[0].getMessage()
    assert serial_link_records(caplog, logging.WARNING) == []

    modem.reappear()
    clock.advance(200.0)
    # LinkError: the simulator reopens its end of the cable in its own time.
    reading = first_reading(driver, tolerate=LinkError)
    assert_matches_scenario(reading, "normal-charge", 200.0)
    infos = [r.getMessage() for r in serial_link_records(caplog, logging.INFO)]
    assert any("reopened" in message and str(modem.b_path) in message for message in infos), infos
    assert len(lost_records(caplog)) == 1
    assert serial_link_records(caplog, logging.WARNING) == []


def test_port_that_never_existed_is_a_link_error_naming_it(
    tmp_path: Path, make_driver: Callable[..., JkUartDriver], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LINK_LOGGER)
    missing = tmp_path / "no-such-tty"
    driver = make_driver(FakeClock(), port=str(missing))
    for _ in range(2):
        with pytest.raises(LinkError) as info:
            driver.read()
        assert not isinstance(info.value, LinkTimeout)
        assert str(missing) in str(info.value)
    (lost,) = lost_records(caplog)
    assert "cannot open" in lost.getMessage() and str(missing) in lost.getMessage()
    assert serial_link_records(caplog, logging.WARNING) == []


# ---------------------------------------------------------------------------------------------------------
# Against a fake serial port: exact hunting and buffer rules
# ---------------------------------------------------------------------------------------------------------


class FakePort:
    """Answers each write with the next scripted reply; hands out at most ``chunk`` bytes per read."""

    def __init__(self, replies: list[bytes], chunk: int | None = None) -> None:
        self.replies = list(replies)
        self.chunk = chunk
        self.rx = bytearray()
        self.timeout: float | None = None
        self.events: list[str] = []
        self.fail_on_reset: BaseException | None = None
        self.closed = False

    @property
    def in_waiting(self) -> int:
        available = len(self.rx)
        return available if self.chunk is None else min(available, self.chunk)

    def read(self, size: int = 1) -> bytes:
        if not self.rx:
            time.sleep(min(self.timeout or 0.0, 0.01))  # a real port waits for its timeout
            return b""
        size = size if self.chunk is None else min(size, self.chunk)
        data = bytes(self.rx[:size])
        del self.rx[:size]
        return data

    def write(self, data: bytes, /) -> int:
        self.events.append("write")
        if self.replies:
            self.rx += self.replies.pop(0)
        return len(data)

    def flush(self) -> None:
        pass

    def reset_input_buffer(self) -> None:
        self.events.append("reset")
        if self.fail_on_reset is not None:
            raise self.fail_on_reset
        self.rx.clear()

    def close(self) -> None:
        self.closed = True


def fake_link(*ports: FakePort) -> tuple[SerialLink, list[dict[str, Any]]]:
    """A link whose successive opens return ``ports`` in turn; also returns the open() arguments seen."""
    opened: list[dict[str, Any]] = []
    queue = list(ports)

    def factory(port: str, **settings: Any) -> FakePort:
        opened.append({"port": port, **settings})
        return queue.pop(0)

    return SerialLink("fake", serial_factory=factory), opened


REQUEST = jk_nw.read_all_request()
FRAME = REPLIES[0].frame


@pytest.mark.parametrize("chunk", [None, 1, 3], ids=["all-at-once", "byte-by-byte", "3-byte-chunks"])
def test_false_start_marker_inside_garbage_is_skipped(chunk: int | None) -> None:
    garbage = b"\x11\x4e\x57\xff\xff\x22\x4e"  # 4E 57 FF FF: a start marker with an impossible length
    link, _ = fake_link(FakePort([garbage + FRAME + b"\x99"], chunk=chunk))
    assert link.transact(REQUEST, jk_nw.FRAMER, 1.0) == FRAME
    assert link.garbage_bytes_skipped == len(garbage)


def test_plausible_false_start_costs_only_the_one_exchange() -> None:
    # A start marker with a possible length inside garbage cannot be told from a frame by the link: it returns
    # those bytes and the codec rejects them. The next exchange starts clean.
    false_frame = b"\x4e\x57\x00\x20" + bytes(range(30))
    link, _ = fake_link(FakePort([false_frame + FRAME, FRAME]))
    with pytest.raises(FrameError):
        jk_nw.decode_reply(link.transact(REQUEST, jk_nw.FRAMER, 1.0))
    assert link.transact(REQUEST, jk_nw.FRAMER, 1.0) == FRAME


def test_bytes_left_after_a_frame_are_discarded_by_the_next_transact() -> None:
    stale, fresh = REPLIES[1].frame, REPLIES[2].frame
    port = FakePort([FRAME + stale, fresh])
    link, _ = fake_link(port)
    assert link.transact(REQUEST, jk_nw.FRAMER, 1.0) == FRAME
    assert link.transact(REQUEST, jk_nw.FRAMER, 1.0) == fresh  # not the stale frame left in the buffer
    assert port.events == ["reset", "write", "reset", "write"]
    assert link.garbage_bytes_skipped == 0


def test_fake_port_timeouts_name_the_port_and_the_progress() -> None:
    link, _ = fake_link(FakePort([b"", FRAME[:30]]))
    with pytest.raises(LinkTimeout, match=r"^no reply from fake within 0.1 s$"):
        link.transact(REQUEST, jk_nw.FRAMER, 0.1)
    with pytest.raises(LinkTimeout, match=rf"^incomplete reply from fake: 30 of {len(FRAME)} bytes within 0.1 s$"):
        link.transact(REQUEST, jk_nw.FRAMER, 0.1)


def test_long_run_of_garbage_before_a_frame_is_counted() -> None:
    # A frame built by the independent test helper (not our codec), after more noise than one hunting read.
    other = wrap(b"\x85\x2a", header_from=FRAME)
    link, _ = fake_link(FakePort([b"\x00" * 600 + other], chunk=64))
    assert link.transact(REQUEST, jk_nw.FRAMER, 1.0) == other
    assert link.garbage_bytes_skipped == 600


@pytest.mark.parametrize(
    "failure",
    [
        serial.SerialException("device reports readiness to read but returned no data"),
        OSError(5, "Input/output error"),
        termios.error(5, "Input/output error"),  # what pyserial's reset_input_buffer raises on a hung-up tty
    ],
    ids=["SerialException", "OSError", "termios.error"],
)
def test_port_failure_is_a_link_error_and_the_next_transact_reopens(failure: BaseException) -> None:
    broken = FakePort([])
    broken.fail_on_reset = failure
    healthy = FakePort([FRAME])
    link, opened = fake_link(broken, healthy)
    with pytest.raises(LinkError, match="serial port fake lost") as info:
        link.transact(REQUEST, jk_nw.FRAMER, 1.0)
    assert not isinstance(info.value, LinkTimeout)
    assert broken.closed
    assert not link.is_open
    assert link.transact(REQUEST, jk_nw.FRAMER, 1.0) == FRAME
    assert [o["port"] for o in opened] == ["fake", "fake"]
    assert opened[0]["baudrate"] == 115200


def test_driver_says_once_that_a_reply_without_tag_c0_is_read_as_version_0(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The vendor default for a missing 0xC0 is 0 (syssi docs/protocol-design-uart-ttl-gps-port.md, row 0xC0).
    frame = without_protocol_version(with_current_raw(REPLIES[1].frame, 9500))  # +5 A in version 0
    port = FakePort([frame] * 3)

    def factory(name: str, **settings: Any) -> FakePort:
        return port

    driver = JkUartDriver(port="fake", retries=0, clock=FakeClock(), serial_factory=factory)
    with caplog.at_level(logging.WARNING, logger="gateway.bms.jk_uart"):
        currents = [driver.read()[0].state.current_a for _ in range(3)]
    assert currents == [5.0, 5.0, 5.0]
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.bms.jk_uart"]
    assert len(lines) == 1, lines
    assert "0xC0" in lines[0] and "version 0" in lines[0]
