"""Log lines for a headless service on an SD card: journald-friendly, one per state change, floods capped.

* :func:`configure` sets up the root logger once: under systemd (stderr is the journal, ``$JOURNAL_STREAM``)
  each line carries its syslog priority as a ``<N>`` prefix and no timestamp (journald adds both as fields);
  elsewhere ``time level logger: message``. Every record is one line: a traceback becomes ``(Type: message)``.
* Logging never blocks the caller: records go through the standard library's ``QueueHandler`` into a bounded
  queue, and a ``QueueListener`` thread writes them out. When the output stalls (a hung journald stops reading
  stderr) the queue fills and further records are dropped and counted (:class:`DroppingQueueHandler`), so the
  control loop keeps its schedule; once there is room again one line says how many were lost.
  :func:`shutdown` (registered with ``atexit``) writes out what is queued and stops the thread.
* :class:`RateLimitFilter` (installed by :func:`configure`) passes a given line at most once per
  ``interval_s``; the next one that passes says how many were suppressed. A dead adapter logging the same error
  every poll thus costs one line a minute, not one a second.
* :class:`Throttle` is for code that watches a condition: one line when it starts, one reminder per
  ``interval_s`` while it lasts (with a count), one line when it ends.
"""

from __future__ import annotations

import atexit
import contextlib
import copy
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from logging.handlers import QueueHandler, QueueListener
from queue import Full, Queue
from typing import Final, TextIO

REPEAT_INTERVAL_S: Final = 60.0
"""A repeated line passes at most once per this, s."""
_MAX_KEYS: Final = 1000
"""Distinct lines remembered; beyond this the oldest are forgotten (so is their suppression count)."""
QUEUE_RECORDS: Final = 1000
"""Records the log queue holds while the output is slow; beyond this they are dropped and counted."""
STOP_TIMEOUT_S: Final = 5.0
"""Seconds :func:`shutdown` waits for a stalled output to take the last records before giving up on them."""
_PRIORITY: Final = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


def configure(
    level: int | str,
    *,
    stream: TextIO | None = None,
    environ: Mapping[str, str] = os.environ,
    interval_s: float = REPEAT_INTERVAL_S,
    queue_records: int = QUEUE_RECORDS,
) -> logging.Handler:
    """Replace the root logger's handlers with a queue to one rate-limited line handler on ``stream`` (stderr).

    The root logger gets a :class:`DroppingQueueHandler` (repeats are rate-limited before they take a place in
    the queue); a listener thread hands the records to the line handler, which is returned (it holds the
    formatter). A previous configuration is shut down first (:func:`shutdown`).
    """
    global _pipeline, _exit_hook_registered
    shutdown()
    stream = sys.stderr if stream is None else stream
    output = logging.StreamHandler(stream)
    output.setFormatter(JournalFormatter() if stderr_is_journal(stream, environ) else OneLineFormatter())
    handler = DroppingQueueHandler(Queue(queue_records))
    handler.addFilter(RateLimitFilter(interval_s))
    listener = _Listener(handler.queue, output)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    listener.start()
    _pipeline = _Pipeline(handler, listener, output)
    if not _exit_hook_registered:
        # Registered after the logging module's own exit hook, so it runs first: the queue is written out
        # before logging.shutdown() flushes and closes the line handler.
        atexit.register(shutdown)
        _exit_hook_registered = True
    return output


def shutdown(timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Write out the queued records (and the count of dropped ones), stop the listener, log directly from now on.

    Idempotent. Waits at most about ``timeout_s`` for each of the queue's last place and the listener thread:
    an output that stays stalled must not hold the process at exit (the listener is a daemon thread).
    """
    pipeline = _pipeline
    if pipeline is None or pipeline.stopped:
        return
    pipeline.stopped = True
    handler = pipeline.handler
    handler.acquire()  # no record slips into the queue behind the listener's last one
    try:
        handler.report_dropped(timeout_s)
        pipeline.listener.stop(timeout_s)
        handler.write_directly_to(pipeline.output)
    finally:
        handler.release()
    root = logging.getLogger()
    if handler in root.handlers:
        root.removeHandler(handler)
        root.addHandler(pipeline.output)


def dropped_records() -> int:
    """Log records dropped because the output was stalled, since :func:`configure`; 0 if it was never called."""
    return 0 if _pipeline is None else _pipeline.handler.dropped


class DroppingQueueHandler(QueueHandler):
    """A ``QueueHandler`` whose caller never waits: a record that finds the queue full is dropped and counted.

    The standard ``enqueue`` would raise ``queue.Full`` into ``handleError``, which prints a traceback to
    stderr: the stalled stream itself. After a gap, the next record that finds room for two puts a line saying
    how many were dropped in front of itself, so the note stands where the records are missing.
    """

    queue: Queue[logging.LogRecord | None]

    def __init__(self, records: Queue[logging.LogRecord | None]) -> None:
        super().__init__(records)
        self.dropped = 0
        """Records dropped so far; never reset."""
        self._unreported = 0
        """Records dropped since the last note about them."""
        self._direct: logging.Handler | None = None
        """After :func:`shutdown`: the handler records go to synchronously."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """A copy with its message merged now (arguments may change once the call returns).

        Unlike the standard ``prepare`` this does not format the record: the line handler's formatter still
        sees the exception and turns it into its one-line ``(Type: message)``.
        """
        record = copy.copy(record)
        record.msg = _message_of(record)
        record.args = None
        return record

    def enqueue(self, record: logging.LogRecord) -> None:
        """Put ``record`` in the queue without waiting; drop and count it if the queue is full.

        Called with the handler's lock held (``Handler.handle``), so producers do not race each other here.
        """
        if self._direct is not None:
            self._direct.handle(record)
            return
        if self._unreported:
            if self.queue.maxsize - self.queue.qsize() < 2:  # the listener only takes: the room cannot shrink
                self._drop()
                return
            self.queue.put_nowait(self._dropped_note())
        try:
            self.queue.put_nowait(record)
        except Full:
            self._drop()

    def report_dropped(self, timeout_s: float) -> None:
        """Queue the note about dropped records, if one is owed, waiting at most ``timeout_s`` for room."""
        if not self._unreported:
            return
        with contextlib.suppress(Full):  # the output stays stalled: the count is in dropped_records() still
            self.queue.put(self._dropped_note(), timeout=timeout_s)

    def write_directly_to(self, output: logging.Handler) -> None:
        """From now on hand records straight to ``output`` (the listener has stopped)."""
        self._direct = output

    def _drop(self) -> None:
        self.dropped += 1
        self._unreported += 1

    def _dropped_note(self) -> logging.LogRecord:
        count, self._unreported = self._unreported, 0
        plural = "" if count == 1 else "s"
        return logging.LogRecord(
            __name__,
            logging.WARNING,
            __file__,
            0,
            f"logging: {count} record{plural} dropped while the log output was stalled",
            None,
            None,
        )


class _Listener(QueueListener):
    """The standard listener, but :meth:`stop` gives up on an output that stays stalled."""

    queue: Queue[logging.LogRecord | None]

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        # QueueListener.stop() would raise queue.Full on a full queue and then join its thread without a limit.
        thread = self._thread  # the standard listener's own thread handle
        if thread is None:
            return
        with contextlib.suppress(Full):
            self.queue.put(None, timeout=timeout_s)  # None: the standard listener's end-of-queue sentinel
        thread.join(timeout_s)
        self._thread = None


@dataclass
class _Pipeline:
    """The root logger's queue handler, the listener thread draining it, and the handler that writes lines."""

    handler: DroppingQueueHandler
    listener: _Listener
    output: logging.Handler
    stopped: bool = False


_pipeline: _Pipeline | None = None
"""The configuration :func:`configure` made last."""
_exit_hook_registered = False


def _message_of(record: logging.LogRecord) -> str:
    """The record's message; for a call whose arguments do not fit its format, one line that says so.

    The standard library would raise into the caller (from a filter) or print a traceback to stderr from the
    caller's thread (``handleError``): the very stream that may be stalled.
    """
    try:
        return record.getMessage()
    except Exception as exc:
        return f"{record.msg!r} % {record.args!r}: cannot format ({type(exc).__name__}: {exc})"


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
        key = (record.name, record.levelno, _message_of(record))
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
