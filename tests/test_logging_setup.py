"""Log lines for journald and the SD card: one per state change, repeats capped, never a traceback."""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import pytest

from gateway.logging_setup import JournalFormatter, OneLineFormatter, RateLimitFilter, Throttle, configure


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
    assert buffer.getvalue().count("gateway.x: one") == 1
    assert logging.getLogger().level == logging.WARNING


@pytest.fixture(autouse=True)
def _restore_root_logger() -> object:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield None
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
