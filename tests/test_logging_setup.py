"""Log lines for journald and the SD card: one per state change, repeats capped, never a traceback, never a wait."""

from __future__ import annotations

import io
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Final

import pytest
from test_faults import LoopRig

from gateway.logging_setup import (
    DroppingQueueHandler,
    JournalFormatter,
    OneLineFormatter,
    RateLimitFilter,
    Throttle,
    configure,
    dropped_records,
    shutdown,
)
from gateway.runtime import FailsafeState

HANG_GUARD_S: Final = 20.0
"""Real seconds after which a worker that logs is taken to be blocked (unblocked it needs milliseconds)."""


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def record(message: str, level: int = logging.WARNING, name: str = "gateway.test") -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, message, None, None)


def test_repeated_lines_pass_once_per_interval_with_a_count() -> None:
    clock = Clock()
    limit = RateLimitFilter(60.0, clock)
    passed = []
    for second in range(180):  # a dead adapter logging the same error every second for 3 minutes
        clock.now = float(second)
        line = record("BMS: no reply from /dev/ttyUSB0 within 0.5 s")
        if limit.filter(line):
            passed.append(line.getMessage())
    assert passed == [
        "BMS: no reply from /dev/ttyUSB0 within 0.5 s",
        "BMS: no reply from /dev/ttyUSB0 within 0.5 s (repeated 59 more times in 60 s)",
        "BMS: no reply from /dev/ttyUSB0 within 0.5 s (repeated 59 more times in 60 s)",
    ]


def test_different_lines_and_debug_are_not_limited() -> None:
    limit = RateLimitFilter(60.0, Clock())
    assert limit.filter(record("fail-safe: stale"))
    assert limit.filter(record("fail-safe: normal", logging.INFO))
    assert all(limit.filter(record("frame", logging.DEBUG)) for _ in range(10))


def test_journal_lines_carry_the_priority_and_stay_one_line() -> None:
    formatter = JournalFormatter()
    assert formatter.format(record("fail-safe: stale")) == "<4>gateway.test: fail-safe: stale"
    assert formatter.format(record("ok", logging.INFO)) == "<6>gateway.test: ok"
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        import sys

        line = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    text = OneLineFormatter().format(line)
    assert "\n" not in text and "Traceback" not in text and text.endswith("failed (ValueError: bad | thing)")


def test_configure_detects_the_journal(tmp_path: Path) -> None:
    path = tmp_path / "stream"
    with path.open("w") as stream:
        info = os.fstat(stream.fileno())
        handler = configure("info", stream=stream, environ={"JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"})
        assert isinstance(handler.formatter, JournalFormatter)
        handler = configure("info", stream=stream, environ={})
        assert not isinstance(handler.formatter, JournalFormatter)
    buffer = io.StringIO()
    configure("warning", stream=buffer, environ={})
    logging.getLogger("gateway.x").warning("one")
    logging.getLogger("gateway.x").warning("one")
    shutdown()  # writes out the queue
    assert buffer.getvalue().count("gateway.x: one") == 1
    assert logging.getLogger().level == logging.WARNING


@pytest.fixture(autouse=True)
def _restore_root_logger() -> object:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield None
    shutdown()
    root.handlers[:] = handlers
    root.setLevel(level)


def test_throttle_one_line_per_state_change(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = Clock()
    throttle = Throttle(logging.getLogger("gateway.t"), 60.0, clock)
    for second in range(130):
        clock.now = float(second)
        throttle.problem("mqtt: cannot connect to broker:1883")
    throttle.resolved("mqtt: connected again")
    throttle.resolved("mqtt: connected again")
    assert [r.getMessage() for r in caplog.records] == [
        "mqtt: cannot connect to broker:1883",
        "mqtt: cannot connect to broker:1883 (still, 60 times in 60 s)",
        "mqtt: cannot connect to broker:1883 (still, 120 times in 120 s)",
        "mqtt: connected again",
    ]


# --- the queue: logging never waits for the output ----------------------------------------------------------


class StalledStream(io.StringIO):
    """A stderr nobody reads (a hung journald): every write blocks until the test sets ``release``."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        """Set when a write has started (and is now blocked)."""
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.entered.set()
        self.release.wait()
        return super().write(text)


def queue_handler() -> DroppingQueueHandler:
    handler = logging.getLogger().handlers[0]
    assert isinstance(handler, DroppingQueueHandler)
    return handler


class Worker:
    """Runs ``work()`` on a thread of its own (the loop's, say); :meth:`finished` tells whether it returned."""

    def __init__(self, work: Callable[[], None]) -> None:
        self._work = work
        self._done = threading.Event()
        self._error: BaseException | None = None
        threading.Thread(target=self._run, name="logging-caller", daemon=True).start()

    def _run(self) -> None:
        try:
            self._work()
        except BaseException as exc:  # handed to the test's thread by finished()
            self._error = exc
        finally:
            self._done.set()

    def finished(self) -> bool:
        """Whether the work returned within HANG_GUARD_S; re-raises what it raised."""
        done = self._done.wait(HANG_GUARD_S)
        if self._error is not None:
            raise self._error
        return done


def test_a_stalled_output_never_blocks_a_tick_of_the_control_loop() -> None:
    """The audit's L1: with stderr not read, the loop blocked inside log.warning and the inverter went silent."""
    stream = StalledStream()
    configure("info", stream=stream, environ={})
    rig = LoopRig()

    def run_the_loop() -> None:
        logging.getLogger("gateway.test").warning("the output stalls on this line")
        stream.entered.wait()  # the writer is stuck in the stream from now on
        rig.run_for(10.0)
        rig.driver.fault = "silent"  # the BMS goes quiet: the loop logs stale, then silent
        rig.run_for(20.0)
        rig.driver.fault = None  # and back: normal, logged again
        rig.run_for(5.0)

    worker = Worker(run_the_loop)
    try:
        assert worker.finished(), "the control loop blocked in a logging call"
        states = [state for _, state in rig.changes]
        assert states == [FailsafeState.NORMAL, FailsafeState.STALE, FailsafeState.SILENT, FailsafeState.NORMAL]
        assert stream.getvalue() == "", "nothing was written: the output was stalled all along"
    finally:
        stream.release.set()
    shutdown()
    text = stream.getvalue()
    assert "the output stalls on this line" in text
    assert "fail-safe" in text, "the loop's lines are written once the output moves again"


def test_records_beyond_the_queue_are_dropped_counted_and_reported_where_they_are_missing() -> None:
    stream = StalledStream()
    configure("info", stream=stream, environ={}, queue_records=4)
    log = logging.getLogger("gateway.test")

    def flood() -> None:
        log.warning("line 0")
        stream.entered.wait()  # line 0 is out of the queue, stuck in the stream
        for number in range(1, 8):  # 4 fit in the queue, 3 do not
            log.warning("line %d", number)

    worker = Worker(flood)
    try:
        assert worker.finished(), "a logging call waited for the stalled output"
        assert dropped_records() == 3
    finally:
        stream.release.set()
    queue_handler().queue.join()  # the listener has written out everything queued
    log.warning("after the stall")
    shutdown()
    assert [line.split(" ", 3)[-1] for line in stream.getvalue().splitlines()] == [
        "gateway.test: line 0",
        "gateway.test: line 1",
        "gateway.test: line 2",
        "gateway.test: line 3",
        "gateway.test: line 4",
        "gateway.logging_setup: logging: 3 records dropped while the log output was stalled",
        "gateway.test: after the stall",
    ]
    assert dropped_records() == 3
    assert "Traceback" not in stream.getvalue()


def test_shutdown_writes_out_the_queue_and_the_count_of_dropped_records() -> None:
    stream = StalledStream()
    configure("info", stream=stream, environ={}, queue_records=2)
    log = logging.getLogger("gateway.test")

    def flood() -> None:
        log.error("first")
        stream.entered.wait()
        for number in range(5):  # 2 queued, 3 dropped
            log.error("flood %d", number)

    worker = Worker(flood)
    assert worker.finished()
    stream.release.set()
    shutdown()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 4
    assert lines[-1].endswith("logging: 3 records dropped while the log output was stalled")
    log.error("after shutdown")  # written at once, by the caller: the listener is gone
    assert stream.getvalue().splitlines()[-1].endswith("gateway.test: after shutdown")


def test_queued_lines_keep_their_format_and_one_line_exceptions(tmp_path: Path) -> None:
    buffer = io.StringIO()
    configure("info", stream=buffer, environ={})
    log = logging.getLogger("gateway.q")
    values = [1]
    log.info("values %s", values)
    values.append(2)  # changed after the call returned: the line shows what was logged
    try:
        raise OSError(5, "Input/output error")
    except OSError:
        log.warning("port lost", exc_info=True)
    log.debug("not at info level")
    shutdown()
    lines = buffer.getvalue().splitlines()
    assert [line.split(" ", 2)[-1] for line in lines] == [
        "INFO gateway.q: values [1]",
        "WARNING gateway.q: port lost (OSError: [Errno 5] Input/output error)",
    ]
    assert dropped_records() == 0


def test_a_log_call_whose_arguments_do_not_fit_is_one_line_not_an_exception() -> None:
    buffer = io.StringIO()
    configure("info", stream=buffer, environ={})
    logging.getLogger("gateway.q").warning("cell %d at %.3f V", "seven")  # a caller's bug, not the loop's end
    shutdown()
    line = buffer.getvalue().splitlines()[-1]
    cause = "TypeError: %d format: a real number is required, not str"
    assert line.endswith(f"WARNING gateway.q: 'cell %d at %.3f V' % ('seven',): cannot format ({cause})")
