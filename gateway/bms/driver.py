"""The interface every BMS driver offers, and the registry that finds a driver by its config name."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Final, Protocol, runtime_checkable

from gateway.clock import Clock
from gateway.errors import GatewayError
from gateway.model import PackReading


class BmsDriver(Protocol):
    """Reads one or more packs. A driver pairs a pure codec with a transport."""

    name: str
    """Config name of the driver, e.g. ``"jk-uart"``."""

    def read(self) -> tuple[PackReading, ...]:
        """Poll every pack once and return their readings, stamped with the monotonic reply time.

        A driver of several packs returns the readings it got: a pack that failed is left out, and a
        :class:`MultiPackDriver` says why in ``pack_errors``.

        :raises GatewayError: (FrameError or LinkError) when no good reading could be had.
        """
        ...

    def close(self) -> None:
        """Release the transport; a later :meth:`read` reopens it."""
        ...


@runtime_checkable
class MultiPackDriver(BmsDriver, Protocol):
    """A driver that polls several packs (e.g. addresses on one bus) and reports partial results."""

    @property
    def pack_ids(self) -> tuple[str, ...]:
        """Every pack the driver polls, in polling order."""
        ...

    @property
    def pack_errors(self) -> Mapping[str, GatewayError]:
        """Pack id → the error that kept it out of the last :meth:`read`; empty when all packs answered."""
        ...


DRIVERS: Final[Mapping[str, str]] = {
    "jk-uart": "gateway.bms.jk_uart:JkUartDriver",
    "jk-modbus": "gateway.bms.jk_modbus_driver:JkModbusDriver",
}
"""Config name → ``module:class``, imported lazily so a driver's dependencies load only when chosen."""


class DriverFactory(Protocol):
    """Builds a driver; ``options`` are driver-specific settings (``addresses`` for bus drivers)."""

    def __call__(
        self, *, port: str, baudrate: int, timeout_s: float, retries: int, clock: Clock, **options: object
    ) -> BmsDriver: ...


def driver_class(name: str) -> DriverFactory:
    """The driver class registered under ``name``. :raises KeyError: unknown name."""
    module_name, _, class_name = DRIVERS[name].partition(":")
    factory: DriverFactory = getattr(importlib.import_module(module_name), class_name)
    return factory
