"""One mapping of a YAML profile with the label its error messages start with (:class:`Section`): typed
getters that fail with a one-line :class:`~gateway.errors.ProfileError` naming file, frame and field, and
the "did you mean" suggestion for unknown keys and names.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import NoReturn

from gateway.errors import ProfileError
from gateway.profiles.spec import MAX_STANDARD_ID, ByteOrder


def type_name(obj: object) -> str:
    return "null" if obj is None else type(obj).__name__


def suggest(word: str, choices: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


class Section:
    """A mapping from the YAML file with the label that error messages put in front of its problems."""

    def __init__(self, data: object, where: str, allowed: Sequence[str], required: Sequence[str]) -> None:
        self.where = where
        if not isinstance(data, Mapping):
            self.fail(f"must be a mapping, got {type_name(data)}")
        self.data: Mapping[object, object] = data
        for key in data:
            if key not in allowed:
                hint = suggest(str(key), allowed)
                more = f"did you mean '{hint}'?" if hint else "valid: " + ", ".join(sorted(allowed))
                self.fail(f"unknown key '{key}' ({more})")
        for key in required:
            if key not in data:
                self.fail(f"missing key '{key}'")

    def fail(self, problem: str) -> NoReturn:
        raise ProfileError(f"{self.where}: {problem}")

    def has(self, key: str) -> bool:
        return key in self.data

    def integer(self, key: str, default: int | None = None) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{key} must be an integer, got {value!r}")
        return value

    def can_id(self, key: str = "id") -> int:
        value = self.integer(key)
        if not 0 <= value <= MAX_STANDARD_ID:
            self.fail(f"{key} {value:#x} is not an 11-bit standard id (0x000-0x7ff)")
        return value

    def number(self, key: str, default: float | None = None) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.fail(f"{key} must be a number, got {value!r}")
        return value

    def positive(self, key: str, default: float | None = None) -> float:
        value = self.number(key, default)
        if value <= 0:
            self.fail(f"{key} must be > 0, got {value!r}")
        return value

    def non_negative(self, key: str, default: float | None = None) -> float:
        value = self.number(key, default)
        if value < 0:
            self.fail(f"{key} must be >= 0, got {value!r}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            self.fail(f"{key} must be true or false, got {value!r}")
        return value

    def string(self, key: str, default: str | None = None) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str) or not value:
            self.fail(f"{key} must be a non-empty string, got {value!r}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.fail(f"{key} must be a list of non-empty strings, got {value!r}")
        return tuple(value)

    def choice(self, key: str, choices: Sequence[str], default: str) -> str:
        value = self.data.get(key, default)
        if value not in choices:
            self.fail(f"{key} must be {' or '.join(choices)}, got {value!r}")
        assert isinstance(value, str)
        return value

    def byte_order(self, default: ByteOrder) -> ByteOrder:
        return "big" if self.choice("byte_order", ("little", "big"), default) == "big" else "little"

    def items(self, key: str) -> list[object]:
        value = self.data.get(key, [])
        if not isinstance(value, list):
            self.fail(f"{key} must be a list, got {type_name(value)}")
        return value
