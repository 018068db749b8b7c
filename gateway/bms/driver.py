"""The interface every BMS driver offers, and the registry that finds a driver by its config name."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Final, Protocol

from gateway.clock import Clock
from gateway.model import PackReading


class BmsDriver(Protocol):
    """Reads one or more packs. A driver pairs a pure codec with a transport."""

    name: str
    """Config name of the driver, e.g. ``"jk-uart"``."""

    def read(self) -> tuple[PackReading, ...]:
        """Poll every pack once and return their readings, stamped with the monotonic reply time.

        :raises GatewayError: (FrameError or LinkError) when no good reading could be had.
        """
        ...

    def close(self) -> None:
        """Release the transport; a later :meth:`read` reopens it."""
        ...


DRIVERS: Final[Mapping[str, str]] = {
    "jk-uart": "gateway.bms.jk_uart:JkUartDriver",
}
"""Config name → ``module:class``, imported lazily so a driver's dependencies load only when chosen."""


class DriverFactory(Protocol):
    def __call__(self, *, port: str, baudrate: int, timeout_s: float, retries: int, clock: Clock) -> BmsDriver: ...


def driver_class(name: str) -> DriverFactory:
    """The driver class registered under ``name``. :raises KeyError: unknown name."""
    module_name, _, class_name = DRIVERS[name].partition(":")
    factory: DriverFactory = getattr(importlib.import_module(module_name), class_name)
    return factory
