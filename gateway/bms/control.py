"""What a BMS protocol offers for opt-in control: the three switches, read back from the BMS's settings.

Protocol-neutral. Each protocol implements :class:`BmsControl` next to its driver (the wired NW protocol in
:mod:`gateway.bms.jk_uart_control`, JK-PB Modbus in :mod:`gateway.bms.jk_modbus_control`); the policy
(opt-in, password check, rate limit, verification, logging) lives once, in :mod:`gateway.control`, and never
in an implementation.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol

from gateway.model import PackReading, ProtectionSettings
from gateway.secret import Secret


class Switch(enum.StrEnum):
    """A switch the user may set: the BMS's charge MOS, discharge MOS and balancer enables."""

    CHARGE = "charge"
    DISCHARGE = "discharge"
    BALANCER = "balancer"


def switch_states(settings: ProtectionSettings) -> Mapping[Switch, bool | None]:
    """Each switch's setting as the BMS reports it (``None``: this BMS does not report it).

    The settings, not the MOS state: a MOS may be open for a protection while its switch is on.
    """
    return MappingProxyType(
        {
            Switch.CHARGE: settings.charge_mos_switch,
            Switch.DISCHARGE: settings.discharge_mos_switch,
            Switch.BALANCER: settings.balancer_enabled,
        }
    )


@dataclass(frozen=True, slots=True)
class SwitchReadout:
    """One read of the BMS made for control: the reading, and the settings password it reports."""

    reading: PackReading
    password: Secret | None
    """The BMS's settings password; ``None``: this protocol does not report one (then nothing is written)."""

    @property
    def switches(self) -> Mapping[Switch, bool | None]:
        return switch_states(self.reading.settings)


class BmsControl(Protocol):
    """The writes one BMS protocol can make. Implementations do no policy: :mod:`gateway.control` does."""

    name: str
    """Driver name, e.g. ``"jk-uart"``."""

    write_forms: int
    """How many frame layouts :meth:`set_switch` knows (at least 1). Where the sources disagree on a protocol's
    write frames there are several: the controller tries the next only when a read back shows the BMS ignored
    the one before, so one request still makes one write on a BMS that takes the first."""

    def read_switches(self) -> SwitchReadout:
        """Read the BMS once. :raises GatewayError: (FrameError, LinkError) no good reading."""
        ...

    def set_switch(self, switch: Switch, on: bool, form: int = 0) -> None:
        """Send the frames that set ``switch``, in layout ``form`` (``0 <= form < write_forms``); no read back
        (the caller verifies).

        :raises GatewayError: the frames could not be sent.
        """
        ...

    def not_verified_note(self, switch: Switch) -> str:
        """What the user should know when a write of ``switch`` reads back unchanged ("" for nothing)."""
        ...
