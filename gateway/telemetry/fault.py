"""A fault hook for the control loop: hang it on purpose, to show that the watchdog and the frames stop.

The runtime calls the hook once per iteration, before :meth:`~gateway.runtime.ControlLoop.tick`. Normally it
returns at once. After :meth:`LoopFault.hang` it blocks the calling thread (the control loop) until
:meth:`LoopFault.release`; ``BMS_GATEWAY_FAULT=hang-after:S`` in the environment makes a running gateway hang
itself S seconds after start (for an end-to-end watchdog test under systemd). Never set it in production.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping

from gateway.clock import Clock
from gateway.errors import ConfigError

log = logging.getLogger(__name__)

ENV_VAR = "BMS_GATEWAY_FAULT"


class LoopFault:
    """Callable once per loop iteration; blocks while a hang is engaged."""

    def __init__(self, clock: Clock, *, hang_at_s: float | None = None) -> None:
        """:param hang_at_s: monotonic time at which to engage a hang by itself (None: only on :meth:`hang`)."""
        self._clock = clock
        self._hang_at_s = hang_at_s
        self._released = threading.Event()
        self._released.set()
        self.hung = threading.Event()
        """Set while a thread is blocked inside the hook."""

    @classmethod
    def from_env(cls, clock: Clock, environ: Mapping[str, str] = os.environ) -> LoopFault:
        """:raises ConfigError: ``BMS_GATEWAY_FAULT`` is set but not ``hang-after:<seconds>``."""
        spec = environ.get(ENV_VAR, "")
        if not spec:
            return cls(clock)
        kind, _, seconds = spec.partition(":")
        try:
            delay_s = float(seconds)
        except ValueError:
            delay_s = -1.0
        if kind != "hang-after" or not delay_s >= 0:
            raise ConfigError("", f"{ENV_VAR}: expected hang-after:<seconds>, got {spec!r}")
        log.warning("%s is set: the control loop will hang %g s after start (a test of the watchdog)", ENV_VAR, delay_s)
        return cls(clock, hang_at_s=clock.monotonic() + delay_s)

    def hang(self) -> None:
        self._released.clear()

    def release(self) -> None:
        self._hang_at_s = None
        self._released.set()

    def __call__(self) -> None:
        if self._hang_at_s is not None and self._clock.monotonic() >= self._hang_at_s:
            self._hang_at_s = None
            log.warning("%s: hanging the control loop now", ENV_VAR)
            self._released.clear()
        if self._released.is_set():
            return
        self.hung.set()
        self._released.wait()
        self.hung.clear()
