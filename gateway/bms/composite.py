"""Several BMS links as one driver: each bus of a list-form ``bms`` config, polled in turn within one cycle.

:class:`CompositeDriver` is a :class:`~gateway.bms.driver.MultiPackDriver` over its drivers (mixed drivers
allowed): ``read`` returns the readings of every pack that answered, in bus order; a bus that failed as a whole
puts each of its packs in :attr:`CompositeDriver.pack_errors`; only when no pack on any bus answered does
``read`` raise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

from gateway.bms.driver import BmsDriver, MultiPackDriver
from gateway.errors import FrameError, GatewayError, LinkError
from gateway.model import PackReading
from gateway.transport.port_lock import PortInUse


def _declared_ids(driver: BmsDriver) -> tuple[str, ...]:
    """The packs a driver polls, when it says so before its first read."""
    if isinstance(driver, MultiPackDriver):
        return driver.pack_ids
    pack_id = getattr(driver, "pack_id", None)  # single-pack drivers name their one pack (JkUartDriver)
    return (pack_id,) if isinstance(pack_id, str) else ()


class CompositeDriver:
    """Polls ``drivers`` one after the other; see the module docs."""

    name = "composite"

    def __init__(self, drivers: Sequence[BmsDriver]) -> None:
        if not drivers:
            raise ValueError("a composite driver needs at least one driver")
        self._drivers = tuple(drivers)
        self._seen: list[tuple[str, ...]] = [_declared_ids(d) for d in self._drivers]
        self._errors: Mapping[str, GatewayError] = MappingProxyType({})

    @property
    def drivers(self) -> tuple[BmsDriver, ...]:
        return self._drivers

    @property
    def pack_ids(self) -> tuple[str, ...]:
        """Every pack of every bus known so far, in polling order."""
        return tuple(pack_id for ids in self._seen for pack_id in ids)

    @property
    def pack_errors(self) -> Mapping[str, GatewayError]:
        return self._errors

    def read(self) -> tuple[PackReading, ...]:
        """One reading per pack that answered, bus after bus.

        :raises GatewayError: no pack on any bus answered (the first bus's error names the cause, the others
            are counted).
        """
        readings: list[PackReading] = []
        errors: dict[str, GatewayError] = {}
        failures: list[GatewayError] = []
        for index, driver in enumerate(self._drivers):
            try:
                got = driver.read()
            except GatewayError as exc:
                failures.append(exc)
                errors.update(dict.fromkeys(self._seen[index], exc))
                continue
            ids = tuple(r.pack_id for r in got)
            known = self._seen[index]
            self._seen[index] = (*known, *(i for i in ids if i not in known))
            readings.extend(got)
            if isinstance(driver, MultiPackDriver):
                errors.update(driver.pack_errors)
        self._errors = MappingProxyType(errors)
        if not readings:
            raise self._none_answered(failures)
        return tuple(readings)

    def close(self) -> None:
        for driver in self._drivers:
            driver.close()

    def _none_answered(self, failures: Sequence[GatewayError]) -> GatewayError:
        first = failures[0]
        if len(failures) == 1 or isinstance(first, PortInUse):  # its holder (the service) has the others too
            return first
        others = f" (and {len(failures) - 1} more bus{'es' if len(failures) > 2 else ''} failed)"
        if isinstance(first, FrameError):
            return FrameError(first.fault, f"{first.detail}{others}", hint=first.hint)
        if isinstance(first, LinkError):
            return type(first)(f"{first}{others}", hint=first.hint)
        return GatewayError(f"{first}{others}", hint=first.hint)
