"""What a profile's inverter does when told 0 A and when it hears nothing: one key both profile kinds share.

The fail-safe (``failsafe.stale``: zeros or silence) only protects the battery if the inverter reacts to it, and
inverters differ: Deye is reported to keep charging at CCL = DCL = 0, an SMA Sunny Island goes to standby 60 s
after the stream stops. So each profile says, in its own words, how its inverter reacts, with the source, and
says ``unverified:`` where no source confirms it. ``bms-gateway profiles`` shows it beside each profile::

    inverter_behaviour:
      at_zero_amps: "..."   what the inverter does with CCL = DCL = 0 and both enables cleared
      on_silence: "..."     what it does when the battery stops sending (CAN) or answering (RS485)
      source: "..."         where that comes from (issues, documents, the profile's own notes)

Optional in the schema (a user's own profile need not know); every built-in profile has it (a test says so).
Never inherited through ``extends``: a variant serves another inverter, whose behaviour is its own to state.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from gateway.errors import ProfileError

KEY: Final = "inverter_behaviour"
"""The top-level key in both profile kinds."""
UNVERIFIED: Final = "unverified:"
"""How a statement no source confirms begins."""
_FIELDS: Final = ("at_zero_amps", "on_silence", "source")


@dataclass(frozen=True, slots=True)
class InverterBehaviour:
    """How the profile's inverter reacts to the gateway's two fail-safe levers."""

    at_zero_amps: str
    """What it does with CCL = DCL = 0 and both enables cleared (the ``zeros`` set)."""
    on_silence: str
    """What it does when the battery stops sending or answering (``silence``)."""
    source: str
    """Where the two statements come from."""

    @property
    def zero_amps_verified(self) -> bool:
        """A source confirms the reaction to 0 A."""
        return not self.at_zero_amps.startswith(UNVERIFIED)

    @property
    def silence_verified(self) -> bool:
        """A source confirms the reaction to silence."""
        return not self.on_silence.startswith(UNVERIFIED)

    def to_json(self) -> dict[str, str]:
        return {"at_zero_amps": self.at_zero_amps, "on_silence": self.on_silence, "source": self.source}


def parse_inverter_behaviour(data: Mapping[object, object], source: str) -> InverterBehaviour | None:
    """The ``inverter_behaviour`` section of the profile ``data`` (None when it has none).

    :raises ProfileError: not a mapping, an unknown or missing key, or a value that is not a non-empty string;
        named ``<source>: inverter_behaviour: ...``.
    """
    if KEY not in data:
        return None
    where = f"{source}: {KEY}"
    section = data[KEY]
    if not isinstance(section, Mapping):
        raise ProfileError(f"{where}: must be a mapping of {', '.join(_FIELDS)}, got {section!r}")
    for key in section:
        if key not in _FIELDS:
            close = difflib.get_close_matches(str(key), _FIELDS, n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"valid: {', '.join(_FIELDS)}"
            raise ProfileError(f"{where}: unknown key '{key}' ({hint})")
    values: list[str] = []
    for key in _FIELDS:
        value = section.get(key)
        if not isinstance(value, str) or not value.strip():
            raise ProfileError(f"{where}: {key} must be a non-empty string (say '{UNVERIFIED} ...' when unknown)")
        values.append(" ".join(value.split()))
    return InverterBehaviour(*values)
