"""What python-can accepts in ``inverter.can``: interface names, and the options of the common interfaces.

python-can hands every key it does not know to the interface's constructor, which mostly swallows it in
``**kwargs``: a misspelt option (``bitrat: 250000``) is silently ignored and the bus runs on a default. A misspelt
interface name (``socketcn``) only fails when the bus is opened. This module holds what is needed to say so
before: the interface names python-can knows (its built-in backends plus any installed plugin), and, for the
interfaces a gateway is commonly built with, the options their constructors take (read from python-can 4.x:
``can/interfaces/<name>``). Pure: it imports no driver and touches no device.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from can.interfaces import VALID_INTERFACES

SETTINGS_KEYS: Final = ("interface", "channel", "bitrate")
"""The keys of ``inverter.can`` the gateway itself reads; every other key is an option for python-can."""

_TIMING: Final = frozenset({"f_clock", "brp", "tseg1", "tseg2", "sjw", "nof_samples"})
"""python-can builds a ``BitTiming`` from these keys (``can.util._dict2timing``), for interfaces taking ``timing``."""
_TIMING_FD: Final = frozenset(
    {"f_clock", "nom_brp", "nom_tseg1", "nom_tseg2", "nom_sjw", "data_brp", "data_tseg1", "data_tseg2", "data_sjw"}
)
"""... and a ``BitTimingFd`` from these."""

INTERFACE_OPTIONS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "socketcan": frozenset(
            {"receive_own_messages", "local_loopback", "fd", "can_filters", "ignore_rx_error_frames"}
        ),
        "slcan": frozenset(
            {"tty_baudrate", "sleep_after_open", "rtscts", "listen_only", "timeout", "btr", "can_filters"}
        )
        | _TIMING
        | _TIMING_FD,
        "gs_usb": frozenset({"index", "bus", "address", "can_filters"}),
        "pcan": frozenset(
            {"device_id", "state", "receive_own_messages", "fd", "f_clock_mhz", "auto_reset", "can_filters"}
        )
        | _TIMING
        | _TIMING_FD,
        "kvaser": frozenset(
            {
                "accept_virtual",
                "no_samp",
                "driver_mode",
                "single_handle",
                "receive_own_messages",
                "fd",
                "fd_non_iso",
                "exclusive",
                "override_exclusive",
                "data_bitrate",
                "no_init_access",
                "can_filters",
            }
        )
        | _TIMING
        | _TIMING_FD,
        "virtual": frozenset(
            {"receive_own_messages", "rx_queue_size", "preserve_timestamps", "protocol", "can_filters"}
        ),
    }
)
"""The options (besides :data:`SETTINGS_KEYS`) each common interface's constructor takes. Interfaces not listed
are not checked: python-can has too many to keep a list of each."""


@dataclass(frozen=True, slots=True)
class Mistake:
    """Something wrong in ``inverter.can``: the key, one line naming the problem, one line saying what to do."""

    key: str
    problem: str
    hint: str


def _closest(word: str, candidates: frozenset[str] | tuple[str, ...]) -> str | None:
    """The candidate ``word`` was most likely meant to be (case ignored), or None."""
    lowered = {candidate.lower(): candidate for candidate in candidates}
    if word.lower() in lowered:
        return lowered[word.lower()]
    close = difflib.get_close_matches(word.lower(), sorted(lowered), n=1)
    return lowered[close[0]] if close else None


def interface_mistake(interface: str, known: frozenset[str] = VALID_INTERFACES) -> Mistake | None:
    """None when python-can knows ``interface``; else what is wrong with it (python-can would refuse to open it).

    :param known: the interface names python-can accepts (its backends and installed plugins).
    """
    if interface in known:
        return None
    guess = _closest(interface, frozenset(known))
    problem = f"python-can has no interface {interface!r}" + (f" (did you mean {guess}?)" if guess else "")
    hint = (
        "a CAN HAT (MCP2515) or a CANable with candleLight firmware is socketcan (channel can0), a CANable with "
        f"slcan firmware is slcan (channel /dev/ttyACM0); python-can knows: {', '.join(sorted(known))}"
    )
    return Mistake("interface", problem, hint)


def option_mistakes(interface: str, options: Mapping[str, object]) -> list[Mistake]:
    """The keys of ``options`` (the pass-through keys of ``inverter.can``) that ``interface`` does not take.

    Only for the interfaces of :data:`INTERFACE_OPTIONS`; python-can itself would pass such a key on, and the
    driver would ignore it. Each gets a suggestion when a known key (``bitrate`` among them) is close.
    """
    taken = INTERFACE_OPTIONS.get(interface)
    if taken is None:
        return []
    mistakes = []
    for key in sorted(set(options) - taken):
        guess = _closest(key, taken | frozenset(SETTINGS_KEYS))
        problem = f"{interface} takes no option {key!r}" + (f" (did you mean {guess}?)" if guess else "")
        hint = (
            f"python-can would hand it to the driver, which ignores it; {interface}'s options: "
            f"{', '.join([*SETTINGS_KEYS, *sorted(taken)])}"
        )
        mistakes.append(Mistake(key, problem, hint))
    return mistakes
