"""What the running service keeps for the support bundle, and the document ``GET /support`` hands over.

Three bounded rings, filled while the service runs and read by ``bms-gateway report``
(:mod:`gateway.cli.report`) through the status endpoint, from this machine only:

* the CAN frames sent and received (:mod:`gateway.telemetry.frame_ring`: 30 000 frames, 600 000 bytes);
* the BMS's last replies, the password already masked by the driver (:mod:`gateway.bms.reply_ring`: 16 replies);
* the service's last :data:`MAX_LOG_LINES` log lines, each cut at :data:`MAX_LOG_LINE_CHARS` characters (at most
  200 kB): its event log. The gateway never logs a password (:class:`~gateway.secret.Secret`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

from gateway.bms.reply_ring import ReplyRing
from gateway.telemetry.frame_ring import RECORD_BYTES, FrameRing

MAX_LOG_LINES: Final = 500
MAX_LOG_LINE_CHARS: Final = 400
SCHEMA: Final = 1
"""Version of the ``/support`` document's layout."""


class LogRing(logging.Handler):
    """A logging handler that keeps the last :data:`MAX_LOG_LINES` lines, each with its wall time."""

    def __init__(self, max_lines: int = MAX_LOG_LINES) -> None:
        super().__init__(logging.INFO)
        self._lines: deque[tuple[float, str]] = deque(maxlen=max_lines)
        self._lines_lock = threading.Lock()
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record).replace("\n", " | ")[:MAX_LOG_LINE_CHARS]
        except Exception:  # a log call with bad arguments must not break the service
            self.handleError(record)
            return
        with self._lines_lock:
            self._lines.append((record.created, line))

    def since(self, at_s: float) -> list[tuple[float, str]]:
        with self._lines_lock:
            return [(stamp, line) for stamp, line in self._lines if stamp >= at_s]


@dataclass
class SupportRings:
    """The service's rings for the support bundle (see the module docs)."""

    can: FrameRing = field(default_factory=FrameRing)
    bms: ReplyRing = field(default_factory=ReplyRing)
    log: LogRing = field(default_factory=LogRing)

    def document(self, minutes: float, now_s: float | None = None) -> dict[str, Any]:
        """The last ``minutes`` of every ring, for ``GET /support?minutes=N``; ``now_s``: wall time (default now).

        Log lines carry the time ``logging`` stamped (the system clock); frames and replies the service clock's.
        """
        now = time.time() if now_s is None else now_s
        since = now - minutes * 60
        return {
            "schema": SCHEMA,
            "now_s": round(now, 3),
            "minutes": minutes,
            "bounds": {
                "can_frames": self.can.max_frames,
                "can_bytes": self.can.capacity_bytes,
                "can_record_bytes": RECORD_BYTES,
                "bms_replies": self.bms.max_replies,
                "log_lines": MAX_LOG_LINES,
                "log_line_chars": MAX_LOG_LINE_CHARS,
            },
            "can_frames": [record.to_json() for record in self.can.since(since)],
            "bms_replies": [reply.to_json() for reply in self.bms.since(since)],
            "log": [[round(stamp, 3), line] for stamp, line in self.log.since(since)],
        }
