"""The optional fail-safe relay: a GPIO line that is energized (relay closed, battery connected to the
inverter) only while the gateway has fresh BMS data, for inverters that ignore a 0 A limit.

:class:`FailsafeRelay` decides; a :class:`RelayLine` drives. It drops (de-energizes) as soon as the fail-safe
engages (stale or silent data), when the gateway stops, and before the first good reading; it closes only once
the control loop is back in normal service, which the runtime allows only on a fresh reading. The real line
is libgpiod's (:class:`GpiodLine`, the ``relay`` extra, imported only when the relay is enabled); tests use a
fake. Wire it fail-safe: de-energized must mean "disconnected", so that a dead Pi also disconnects.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any, Protocol

from gateway.config import RelayConfig
from gateway.errors import ConfigError, GatewayError
from gateway.runtime import FailsafeState

log = logging.getLogger(__name__)

CONSUMER = "bms-gateway"
"""Name shown by ``gpioinfo`` for the line we hold."""


class RelayLine(Protocol):
    """One output line. ``set(True)`` energizes the relay (closes it)."""

    def set(self, energized: bool) -> None: ...

    def release(self) -> None: ...


class FailsafeRelay:
    """Closes the relay in normal service only; call :meth:`update` after each tick, :meth:`shutdown` at the end."""

    def __init__(self, line: RelayLine) -> None:
        self._line = line
        self._closed: bool | None = None
        self._failing = False
        self._drive(False, "gateway starting, no fresh BMS data yet")

    @property
    def closed(self) -> bool:
        return bool(self._closed)

    def update(self, state: FailsafeState) -> None:
        """Follow the fail-safe state: closed in ``normal``, dropped in every other state."""
        closed = state is FailsafeState.NORMAL
        if closed != self._closed or self._failing:
            self._drive(closed, "fresh BMS data" if closed else f"fail-safe {state.value}")

    def shutdown(self) -> None:
        """Drop the relay and release the line (the gateway is stopping)."""
        self._drive(False, "gateway stopping")
        try:
            self._line.release()
        except (OSError, GatewayError) as error:
            log.warning("relay: cannot release the GPIO line: %s", error)

    def _drive(self, closed: bool, why: str) -> None:
        try:
            self._line.set(closed)
        except (OSError, GatewayError) as error:
            if not self._failing:
                log.error("relay: cannot drive the GPIO line (%s): %s", why, error)
            self._failing = True
            return
        if closed != self._closed:
            log.info("relay: %s (%s)", "closed" if closed else "dropped", why)
        self._closed = closed
        self._failing = False


class GpiodLine:
    """A libgpiod v2 output line (python ``gpiod`` ≥ 2), requested for as long as the gateway runs."""

    def __init__(self, config: RelayConfig) -> None:
        """Request the line, driven inactive (relay open) from the first instant.

        :raises ConfigError: gpiod is not installed, or the chip or line cannot be requested.
        """
        assert config.line is not None  # RelayConfig insists when enabled
        try:
            gpiod: Any = importlib.import_module("gpiod")
            line_mod: Any = importlib.import_module("gpiod.line")
        except ImportError:
            raise ConfigError("relay.enabled", "needs gpiod: pip install 'bms-gateway[relay]'") from None
        self._offset = config.line
        self._active = line_mod.Value.ACTIVE
        self._inactive = line_mod.Value.INACTIVE
        settings = gpiod.LineSettings(
            direction=line_mod.Direction.OUTPUT, output_value=self._inactive, active_low=config.active_low
        )
        try:
            self._request = gpiod.request_lines(config.chip, consumer=CONSUMER, config={config.line: settings})
        except (OSError, ValueError) as error:
            raise ConfigError(
                "relay.line",
                f"cannot request line {config.line} on {config.chip}: {getattr(error, 'strerror', None) or error}",
            ) from None

    def set(self, energized: bool) -> None:
        self._request.set_value(self._offset, self._active if energized else self._inactive)

    def release(self) -> None:
        self._request.release()


def open_relay(config: RelayConfig) -> FailsafeRelay | None:
    """The relay the config asks for, already dropped; None when it is off. :raises ConfigError: see GpiodLine."""
    if not config.enabled:
        return None
    return FailsafeRelay(GpiodLine(config))
