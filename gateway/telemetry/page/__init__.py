"""The local page: ``GET /`` on the status server, read-only, live through ``/events``.

The page (``index.html``, ``app.js``, ``app.css`` beside this module) and the chart library (uPlot, vendored
unchanged in ``vendor/`` with its licence) are package data served from memory: no build step, and no request
leaves the origin (every asset answer carries a Content-Security-Policy that says so to the browser too).

:class:`Page` is fed each snapshot the control loop hands over (:meth:`Page.offer`: history, event log, a
version bump for the streams) and answers, from the status server's threads:

* ``/page.json``: everything once, for a page that (re)connects: the live part below, 24 h of history
  (:mod:`~gateway.telemetry.history`), the last 200 events, the settings audit, the effective configuration
  (secrets redacted by the config's own ``to_json``), versions;
* ``/events``: server-sent events (:mod:`~gateway.telemetry.sse`), each the live part: the status document,
  the thresholds the cells are drawn against (knee, cut-off, OVP, UVP), the newest events and history sample,
  and the frames last sent to the inverter decoded with the profile.
"""

from __future__ import annotations

import importlib.metadata
import platform
import threading
from dataclasses import dataclass
from importlib import resources
from typing import Any, Final

from gateway import __version__
from gateway.cli.frames import format_frame
from gateway.clock import Clock
from gateway.config import Config, limits_tuning
from gateway.limits.thresholds import Thresholds, derive_thresholds
from gateway.model import PackReading
from gateway.profiles import Profile
from gateway.runtime import Snapshot
from gateway.telemetry.history import SERIES, EventLog, History
from gateway.telemetry.sse import Hub

LIVE_EVENTS: Final = 20
"""Events carried by each live update (the page merges them by number into the 200 it loaded)."""
CSP: Final = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
"""Nothing from anywhere but this server (uPlot sets element styles, hence the inline styles)."""


@dataclass(frozen=True, slots=True)
class Asset:
    content_type: str
    body: bytes


_ASSETS: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
    "/vendor/uPlot.iife.min.js": ("vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8"),
    "/vendor/uPlot.min.css": ("vendor/uPlot.min.css", "text/css; charset=utf-8"),
    "/vendor/uPlot.LICENSE": ("vendor/uPlot.LICENSE", "text/plain; charset=utf-8"),
}


def asset(path: str) -> Asset | None:
    """The page file served at ``path`` (read from the package on each request: a few kB, rarely asked)."""
    entry = _ASSETS.get(path)
    if entry is None:
        return None
    name, content_type = entry
    return Asset(content_type, resources.files(__package__).joinpath(name).read_bytes())


def versions(config: Config) -> dict[str, str]:
    """The gateway's, Python's and its libraries' versions (the BMS's are in the status document)."""
    out = {"bms-gateway": __version__, "python": platform.python_version(), "platform": platform.platform()}
    for package in ("python-can", "pymodbus", "pyserial", "PyYAML"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "not installed"
    out["profile"] = config.inverter.profile
    return out


class Page:
    """The page's own state beside the status document; see the module docs. Thread-safe."""

    def __init__(self, config: Config, profile: Profile, clock: Clock) -> None:
        self._clock = clock
        self.history = History()
        self.events = EventLog()
        self.hub = Hub()
        self._config_json = config.to_json()
        self._versions = versions(config)
        self._tuning = limits_tuning(config.limits, config.charging)
        self._codecs = {codec.can_id: codec for codec in profile.frames}
        self._thresholds_lock = threading.Lock()
        self._thresholds_for: tuple[Any, int] | None = None
        self._thresholds: Thresholds | None = None

    def offer(self, snapshot: Snapshot) -> None:
        """The control loop's thread: keep the reading and what changed, wake the streams. Never blocks on I/O."""
        wall_s = self._clock.wall()
        self.history.record(snapshot, wall_s)
        self.events.observe(snapshot, wall_s)
        self.hub.publish()

    def thresholds(self, reading: PackReading | None) -> Thresholds | None:
        """The limits engine's thresholds for ``reading``'s BMS settings (cached while they do not change)."""
        if reading is None:
            return None
        cells = reading.settings.cell_count or reading.state.cell_count
        key = (reading.settings, cells)
        with self._thresholds_lock:
            if self._thresholds_for != key:
                self._thresholds = derive_thresholds(reading.settings, cells, self._tuning)
                self._thresholds_for = key
            return self._thresholds

    def live(self, status: dict[str, Any] | None, snapshot: Snapshot | None) -> dict[str, Any]:
        """One update: the status document and what the page draws beside it."""
        thresholds = self.thresholds(None if snapshot is None else snapshot.reading)
        return {
            "status": status,
            "server_wall_s": self._clock.wall(),
            "lines": None if thresholds is None else _lines(thresholds),
            "events": [e.to_json() for e in self.events.last()[-LIVE_EVENTS:]],
            "sample": self.history.newest(),
            "frames": [] if snapshot is None else self.frames(snapshot),
        }

    def full(self, status: dict[str, Any] | None, snapshot: Snapshot | None) -> dict[str, Any]:
        """Everything, for a page that (re)connects."""
        out = self.live(status, snapshot)
        thresholds = self.thresholds(None if snapshot is None else snapshot.reading)
        out.update(
            history=self.history.to_json(self._clock.wall()),
            events=[e.to_json() for e in self.events.last()],
            audit=[] if thresholds is None else [f.to_json() for f in thresholds.findings],
            thresholds=None if thresholds is None else thresholds.to_json(),
            config=self._config_json,
            versions=self._versions,
            series=list(SERIES),
        )
        return out

    def frames(self, snapshot: Snapshot) -> list[str]:
        """The frames last sent to the inverter, one decoded line each (as ``run --dry-run`` prints them)."""
        width = max((len(c.name) for c in self._codecs.values()), default=0)
        return [
            format_frame(self._codecs.get(can_id), can_id, data, name_width=width)
            for can_id, data in sorted(snapshot.sent.items())
        ]


def _lines(t: Thresholds) -> dict[str, float]:
    """Per-cell voltages the cell bars are drawn against, V."""
    return {
        "ovp": t.cell_ovp_v,
        "charge_cutoff": t.charge_cutoff_v,
        "charge_knee": t.charge_knee_v,
        "discharge_knee": t.discharge_knee_v,
        "discharge_cutoff": t.discharge_cutoff_v,
        "uvp": t.cell_uvp_v,
    }
