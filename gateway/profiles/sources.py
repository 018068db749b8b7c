"""Where each frame and register block of a profile comes from: one mechanism both profile kinds share.

A CAN frame, an RS485 (Pylontech) command or the first register of a register block may carry::

    sources:
      - "PYLON CANBUS Protocol v1.2 p.4"                       a document and its page (p.N, pp.N-M, §N)
      - "Sleeper85/esphome-jk-bms-can ESP32_LFP_Wire_jk-bms-can.yaml"   a repository and a path in it
      - "syssi/esphome-virtual-can-bms#3"                     a repository's issue or pull request
      - "https://..."                                         a web page
      - "capture:setfirelabs-pylontech.json"                  a capture of tests/data/captures/

or, where nothing confirms it, a single ``"unverified: <why we chose this>"``. Text may follow a reference
("... p.4 (0x356 in 0.01 V)"). Optional for a user's profile; every built-in one names a source (a test says so).

A profile may also say, at its top level, which public reports show its protocol running a real inverter::

    confirmed_by:
      - "Deye SUN-12K-SG04LP3-EU: stuartpittaway/diyBMSv4ESP32#216"

each ``<inverter>: <report>``, the report a repository issue, a repository and path, or a web page. That is a
battery sending this protocol on that inverter, not a test of this gateway's bytes. Never inherited through
``extends`` (a variant serves another inverter), and a frame a variant changes keeps its base's sources only
if it names them again (:mod:`.merge`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from gateway.errors import ProfileError

KEY: Final = "sources"
"""The key of a frame, a command or a register that names its sources."""
CONFIRMED_KEY: Final = "confirmed_by"
"""The top-level key listing public reports of the protocol on real inverters."""
UNVERIFIED: Final = "unverified:"
"""How the one entry of a part that nothing confirms begins."""
CAPTURE: Final = "capture:"
"""How a reference to a capture of the corpus (``tests/data/captures/``) begins."""

_REPOSITORY: Final = r"[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+"
_REPOSITORY_ISSUE: Final = re.compile(rf"(?<![\w/.-]){_REPOSITORY}#\d+\b")
"""``owner/name#12``: an issue or pull request."""
_REPOSITORY_PATH: Final = re.compile(rf"^{_REPOSITORY}(@[0-9a-f]{{7,40}})?[ :]+`?[\w./ -]*[\w-]\.[A-Za-z0-9]+\b")
"""``owner/name[@commit] path/to/file.ext`` (or ``owner/name:path``): a file of a repository."""
_DOCUMENT_PAGE: Final = re.compile(r"\S.*?(\bpp?\.\s?\d+|\bpages?\s\d+|§\s?\d+)")
"""``<document> p.4`` (or ``pp.3-4``, ``page 4``, ``§3.5``)."""
_URL: Final = re.compile(r"^https?://\S+\.\S+")
_CAPTURE_FILE: Final = re.compile(r"^capture:[\w.-]+\.json\b")

FORMS_HINT: Final = (
    "each source is '<document> p.<page>', '<owner>/<repo> <path>', '<owner>/<repo>#<issue>', an https:// URL"
    " or 'capture:<file>.json'; what nothing confirms is one entry 'unverified: <why>'"
)


def is_source(entry: str) -> bool:
    """``entry`` is one of the accepted reference forms (not ``unverified:``)."""
    return bool(
        _CAPTURE_FILE.match(entry)
        or _URL.match(entry)
        or _REPOSITORY_ISSUE.search(entry)
        or _REPOSITORY_PATH.match(entry)
        or _DOCUMENT_PAGE.match(entry)
    )


def capture_files(sources: Iterable[str]) -> tuple[str, ...]:
    """The capture file names the ``capture:`` entries of ``sources`` refer to."""
    found = (_CAPTURE_FILE.match(entry) for entry in sources)
    return tuple(match.group(0).removeprefix(CAPTURE) for match in found if match)


def parse_sources(data: Mapping[object, object], where: str) -> tuple[str, ...]:
    """The ``sources`` of one frame, command or register (``data``); ``()`` when it has none.

    :raises ProfileError: not a list of non-empty strings, an entry of no accepted form, or ``unverified:``
        beside other entries or without a reason; named ``<where>: sources: ...``.
    """
    if KEY not in data:
        return ()
    value = data[KEY]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ProfileError(f"{where}: {KEY} must be a non-empty list of strings, got {value!r}", hint=FORMS_HINT)
    entries = tuple(" ".join(entry.split()) for entry in value)
    unverified = [entry for entry in entries if entry.lower().startswith(UNVERIFIED)]
    if unverified:
        if len(entries) > 1:
            raise ProfileError(
                f"{where}: {KEY}: 'unverified: ...' must be the only entry (a part is sourced or it is not)",
                hint="drop the unverified entry, or the sources, and say in the reason what they show",
            )
        if not entries[0][len(UNVERIFIED) :].strip():
            raise ProfileError(f"{where}: {KEY}: 'unverified:' needs the reason (why we chose this)")
        return entries
    for entry in entries:
        if not is_source(entry):
            raise ProfileError(
                f"{where}: {KEY}: {entry!r} names no document page, repository or capture", hint=FORMS_HINT
            )
    return entries


def parse_confirmed_by(data: Mapping[object, object], source: str) -> tuple[str, ...]:
    """The top-level ``confirmed_by`` of a profile: ``<inverter>: <report>`` entries; ``()`` when absent.

    :raises ProfileError: not a list of strings, or an entry without an inverter or a report reference.
    """
    if CONFIRMED_KEY not in data:
        return ()
    where = f"{source}: {CONFIRMED_KEY}"
    value = data[CONFIRMED_KEY]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ProfileError(f"{where}: must be a list of '<inverter>: <report>' strings, got {value!r}")
    entries = tuple(" ".join(entry.split()) for entry in value)
    for entry in entries:
        inverter, _, report = entry.partition(": ")
        if not inverter.strip() or not report.strip() or not is_source(report) or report.startswith(CAPTURE):
            raise ProfileError(
                f"{where}: {entry!r} is not '<inverter>: <report>'",
                hint="the report is an issue ('owner/repo#12'), a repository and path, or an https:// URL",
            )
    return entries


@dataclass(frozen=True, slots=True)
class SourcedPart:
    """One frame, command or register block and the sources it names."""

    label: str
    """How messages name it: ``frame 0x351``, ``command 0x42 (analog_values)``, ``registers 0x0010-0x0029``."""
    sources: tuple[str, ...]

    @property
    def unverified(self) -> bool:
        """It says that nothing confirms it."""
        return len(self.sources) == 1 and self.sources[0].lower().startswith(UNVERIFIED)

    @property
    def sourced(self) -> bool:
        """It names at least one source."""
        return bool(self.sources) and not self.unverified


@dataclass(frozen=True, slots=True)
class SourceCounts:
    """How many parts of a profile are sourced, marked unverified, or say nothing."""

    unit: str
    """What a part is: ``frames``, ``commands`` or ``register blocks``."""
    sourced: int
    unverified: int
    missing: int

    @classmethod
    def of(cls, unit: str, parts: Iterable[SourcedPart]) -> SourceCounts:
        listed = list(parts)
        sourced = sum(part.sourced for part in listed)
        unverified = sum(part.unverified for part in listed)
        return cls(unit, sourced, unverified, len(listed) - sourced - unverified)

    def to_json(self) -> dict[str, object]:
        return {"unit": self.unit, "sourced": self.sourced, "unverified": self.unverified, "missing": self.missing}

    def describe(self) -> str:
        """``6 frames sourced, 1 unverified`` (and ``, 2 without a source`` when some say nothing)."""
        text = f"{self.sourced} {self.unit} sourced, {self.unverified} unverified"
        return text + (f", {self.missing} without a source" if self.missing else "")
