"""The one small store for what must survive a restart (the engines' memory, the energy counters of
:mod:`gateway.energy`, the BMS write record): a JSON file per kind in the state directory, written atomically.

Where: ``$STATE_DIRECTORY`` (systemd's ``StateDirectory=``; the first of several), else the config's
``state_dir``, else ``~/.local/state/bms-gateway`` (:func:`state_directory`). How: write a temporary file in the
same directory, fsync it, rename it over the old one, fsync the directory, so that a power cut leaves the old
file or the new one, never half of one. A file that cannot be read, is not JSON, is another program's or of
another format version, is ignored with one log line: the gateway then starts as if it had none.

Each file: ``{"format": "bms-gateway-state", "version": 1, "kind": ..., "saved_wall_s": ..., "data": {...}}``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from gateway.errors import GatewayError

log = logging.getLogger(__name__)

FORMAT: Final = "bms-gateway-state"
VERSION: Final = 1
DEFAULT_DIRECTORY: Final = Path("~/.local/state/bms-gateway")


def state_directory(configured: str | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """Where state lives: ``$STATE_DIRECTORY`` (systemd), else ``configured`` (the config's ``state_dir``), else
    ``~/.local/state/bms-gateway``."""
    env = os.environ if environ is None else environ
    systemd = env.get("STATE_DIRECTORY", "")
    if systemd:
        return Path(systemd.split(":")[0])
    if configured:
        return Path(configured).expanduser()
    return DEFAULT_DIRECTORY.expanduser()


class StateUnreadable(GatewayError):
    """A state file exists but cannot be used: unreadable, not JSON, another program's or another version's."""

    def __init__(self, path: Path, why: str) -> None:
        self.path = path
        self.why = why
        super().__init__(f"{path}: {why}")


@dataclass(frozen=True, slots=True)
class Stored:
    """One kind's saved data and when it was saved (wall clock, s)."""

    data: dict[str, Any]
    saved_wall_s: float


class StateStore:
    """Save and load one JSON document per kind in ``directory`` (created on the first save)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, kind: str) -> Path:
        return self.directory / f"{kind}.json"

    def save(self, kind: str, data: Mapping[str, Any], wall_s: float) -> None:
        """Write ``data`` atomically. An OS error is logged (one line) and otherwise ignored: the gateway runs on
        without its state rather than stop."""
        try:
            self.write(kind, data, wall_s)
        except OSError as error:
            log.warning("state: cannot save %s in %s: %s", kind, self.directory, error.strerror or error)

    def write(self, kind: str, data: Mapping[str, Any], wall_s: float) -> None:
        """Write ``data`` atomically, for a caller that must know it was kept. :raises OSError: it was not."""
        document = {"format": FORMAT, "version": VERSION, "kind": kind, "saved_wall_s": wall_s, "data": dict(data)}
        self.directory.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{kind}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                json.dump(document, stream, separators=(",", ":"))
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, self.path(kind))
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        directory = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def load(self, kind: str) -> Stored | None:
        """The saved document of ``kind``; None when there is none, or it is unreadable, corrupt or foreign (one
        log line then)."""
        try:
            return self.read(kind)
        except StateUnreadable as error:
            log.warning("state: ignoring %s: %s", error.path, error.why)
            return None

    def read(self, kind: str) -> Stored | None:
        """The saved document of ``kind``; None when there is none (first use), for a caller that must not take
        a damaged file for a missing one. :raises StateUnreadable: it cannot be read, is corrupt or foreign."""
        path = self.path(kind)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as error:
            raise StateUnreadable(path, f"cannot read it ({error})") from None
        try:
            document = json.loads(text)
        except ValueError:
            raise StateUnreadable(path, "not JSON") from None
        if (
            not isinstance(document, dict)
            or document.get("format") != FORMAT
            or document.get("kind") != kind
            or not isinstance(document.get("data"), dict)
            or not isinstance(document.get("saved_wall_s"), int | float)
        ):
            raise StateUnreadable(path, f"not a bms-gateway {kind} file")
        if document.get("version") != VERSION:
            raise StateUnreadable(path, f"format version {document['version']!r}, this gateway reads {VERSION}")
        return Stored(document["data"], float(document["saved_wall_s"]))
