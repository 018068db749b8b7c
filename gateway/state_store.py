"""The one small store for what must survive a restart (engine memory now; energy counters and control writes
later): a JSON file per kind in the state directory, written atomically.

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
        document = {"format": FORMAT, "version": VERSION, "kind": kind, "saved_wall_s": wall_s, "data": dict(data)}
        try:
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
        except OSError as error:
            log.warning("state: cannot save %s in %s: %s", kind, self.directory, error.strerror or error)

    def load(self, kind: str) -> Stored | None:
        """The saved document of ``kind``; None when there is none, or it is unreadable, corrupt or foreign (one
        log line then)."""
        path = self.path(kind)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as error:
            log.warning("state: ignoring %s: cannot read it (%s)", path, error)
            return None
        try:
            document = json.loads(text)
        except ValueError:
            log.warning("state: ignoring %s: not JSON", path)
            return None
        if (
            not isinstance(document, dict)
            or document.get("format") != FORMAT
            or document.get("kind") != kind
            or not isinstance(document.get("data"), dict)
            or not isinstance(document.get("saved_wall_s"), int | float)
        ):
            log.warning("state: ignoring %s: not a bms-gateway %s file", path, kind)
            return None
        if document.get("version") != VERSION:
            log.warning(
                "state: ignoring %s: format version %r, this gateway reads %d", path, document["version"], VERSION
            )
            return None
        return Stored(document["data"], float(document["saved_wall_s"]))
