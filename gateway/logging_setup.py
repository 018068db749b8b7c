"""Log lines for a headless service on an SD card: journald-friendly, one per state change, floods capped.

* :func:`configure` sets up the root logger once: under systemd (stderr is the journal, ``$JOURNAL_STREAM``)
  each line carries its syslog priority as a ``<N>`` prefix and no timestamp (journald adds both as fields);
  elsewhere ``time level logger: message``. Every record is one line: a traceback becomes ``(Type: message)``.
* :class:`RateLimitFilter` (installed by :func:`configure`) passes a given line at most once per
  ``interval_s``; the next one that passes says how many were suppressed. A dead adapter logging the same error
  every poll thus costs one line a minute, not one a second.
* :class:`Throttle` is for code that watches a condition: one line when it starts, one reminder per
  ``interval_s`` while it lasts (with a count), one line when it ends.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import Final, TextIO

REPEAT_INTERVAL_S: Final = 60.0
"""A repeated line passes at most once per this, s."""
_MAX_KEYS: Final = 1000
"""Distinct lines remembered; beyond this the oldest are forgotten (so is their suppression count)."""
_PRIORITY: Final = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


def configure(
    level: int | str,
    *,
    stream: TextIO | None = None,
    environ: Mapping[str, str] = os.environ,
    interval_s: float = REPEAT_INTERVAL_S,
) -> logging.Handler:
    """Replace the root logger's handlers with one rate-limited line handler on ``stream`` (stderr)."""
    stream = sys.stderr if stream is None else stream
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JournalFormatter() if stderr_is_journal(stream, environ) else OneLineFormatter())
    handler.addFilter(RateLimitFilter(interval_s))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    return handler


def stderr_is_journal(stream: TextIO, environ: Mapping[str, str] = os.environ) -> bool:
    """Whether ``stream`` is the journal stream systemd connected (``$JOURNAL_STREAM`` is its ``dev:inode``)."""
    expected = environ.get("JOURNAL_STREAM", "")
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{info.st_dev}:{info.st_ino}"


class OneLineFormatter(logging.Formatter):
    """``time level logger: message``, always one line."""

    def __init__(self, fmt: str = "%(asctime)s %(levelname)s %(name)s: %(message)s") -> None:
        super().__init__(fmt)

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text, record.stack_info
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        try:
            line = super().format(record)
        finally:
            record.exc_info, record.exc_text, record.stack_info = saved
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            line += f" ({type(error).__name__}: {error})"
        return " | ".join(part for part in line.splitlines() if part.strip()) or line


class JournalFormatter(OneLineFormatter):
    """``<priority>logger: message``: journald turns the prefix into PRIORITY= and stamps the time itself."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = _PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        return f"<{priority}>{super().format(record)}"


class RateLimitFilter(logging.Filter):
    """Passes each distinct line (logger, level, text) at most once per ``interval_s``; DEBUG is not limited."""

    def __init__(self, interval_s: float = REPEAT_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._interval_s = interval_s
        self._clock = clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}
        """Per line: when it last passed, and how many times it was suppressed since."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.INFO:
            return True
        key = (record.name, record.levelno, record.getMessage())
        now = self._clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self._interval_s:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        if last is not None and last[1]:
            record.msg = f"{record.getMessage()} (repeated {last[1]} more times in {now - last[0]:.0f} s)"
            record.args = None
        self._seen.pop(key, None)
        self._seen[key] = (now, 0)
        if len(self._seen) > _MAX_KEYS:
            del self._seen[next(iter(self._seen))]  # dicts keep insertion order: the oldest goes
        return True


class Throttle:
    """One line when a condition starts, a reminder per ``interval_s`` while it lasts, one line when it ends."""

    def __init__(
        self,
        logger: logging.Logger,
        interval_s: float = REPEAT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._interval_s = interval_s
        self._clock = clock
        self._problem: str | None = None
        self._since_s = 0.0
        self._reminded_s = 0.0
        self._count = 0

    @property
    def failing(self) -> bool:
        return self._problem is not None

    def problem(self, message: str, level: int = logging.WARNING) -> None:
        """The condition holds (again); ``message`` says how. Logs on a change of message or once per interval."""
        now = self._clock()
        if message != self._problem:
            self._problem, self._since_s, self._reminded_s, self._count = message, now, now, 0
            self._log.log(level, "%s", message)
            return
        self._count += 1
        if now - self._reminded_s >= self._interval_s:
            self._log.log(level, "%s (still, %d times in %.0f s)", message, self._count, now - self._since_s)
            self._reminded_s = now

    def resolved(self, message: str) -> None:
        """The condition ended: log ``message`` once, if it had been reported."""
        if self._problem is None:
            return
        self._problem = None
        self._log.info("%s", message)
