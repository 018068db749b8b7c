"""RS485 outputs: answer an inverter's (or an EMS's) polls from the freshest readings and limits.

An :class:`Rs485Output` serves one RS485 profile on a serial port (Pylontech ASCII or Modbus RTU) or on TCP
(Modbus TCP, 127.0.0.1 by default), on its own thread. Each request is answered from what its *source* says
at that moment: a callable returning ``(readings, limits, failsafe_state)``. The fail-safe rules hold here
too, and the output also checks the readings' age itself (a source that stopped updating must not keep
an inverter on old limits):

* ``normal``: the limits as given;
* ``stale`` (BMS data older than ``bms_timeout_s``): both current limits 0, both enables cleared, the
  communication alarm set; a profile with ``failsafe: {stale: silence}`` goes silent instead;
* ``silent`` (older than ``silence_after_s``), ``waiting`` (no reading yet) and ``stopped``: no answer at all,
  so that the inverter's own BMS-loss protection trips. Read-only profiles (``answer_when_silent``) keep
  answering with zero limits once they have a reading, so that an EMS sees why.

Assembly for :mod:`gateway.app`: :func:`build_rs485_output` (the ``inverter:`` output when its profile is an
RS485 one), :func:`build_extra_outputs` (``extra_outputs:``), and a source: :func:`snapshot_source` for a
:class:`~gateway.runtime.ControlLoop` (CAN steers the inverter, RS485 outputs read beside it) or
:class:`LimitsFeed` when no CAN loop runs (it takes the poller's readings and runs the limits engine).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from gateway.clock import Clock
from gateway.config import Config, ExtraOutputConfig, SerialPortConfig, TcpConfig
from gateway.errors import ConfigError, GatewayError, ProfileNotFoundError, error_line
from gateway.limits import LimitsSettings, failsafe_limits
from gateway.model import Limits, PackReading
from gateway.packs import PackSet, battery_at
from gateway.plausibility import implausibility
from gateway.profiles import StaleAction
from gateway.rs485.modbus_map import ModbusException, RegisterMap
from gateway.rs485.profile import load_rs485_profile
from gateway.rs485.profile_spec import Framing, Rs485Profile
from gateway.rs485.pylontech_ascii import EOI, MAX_FRAME_BYTES, SOI, PylontechResponder
from gateway.rs485.values import BatteryView, FailsafeCode, battery_view
from gateway.runtime import FailsafeState
from gateway.transport.serial_server import (
    SILENT,
    DelimitedFramer,
    ModbusAnswer,
    ModbusRequest,
    ModbusServer,
    SerialEndpoint,
    SerialServer,
    TcpEndpoint,
)

log = logging.getLogger(__name__)

SourceState = tuple[tuple[PackReading, ...], Limits | None, FailsafeState]
Source = Callable[[], SourceState]
"""The freshest readings (one per pack), the limits computed from them, and the fail-safe state."""

MAX_PACKS: Final = 16
_RANK: Final = {FailsafeState.NORMAL: 0, FailsafeState.STALE: 1, FailsafeState.SILENT: 2}
_CODES: Final = {
    FailsafeState.NORMAL: FailsafeCode.NORMAL,
    FailsafeState.STALE: FailsafeCode.STALE,
    FailsafeState.SILENT: FailsafeCode.SILENT,
}


@dataclass(frozen=True, slots=True)
class OutputSettings:
    bms_timeout_s: float
    """BMS data older than this is stale: zero limits, s."""
    silence_after_s: float
    """BMS data older than this silences the output, s."""


class Server(Protocol):
    def start(self) -> None: ...

    def stop(self, timeout_s: float = 5.0) -> None: ...

    def wait_serving(self, timeout_s: float = 5.0) -> bool: ...


class Rs485Output:
    """One profile served on one endpoint; see the module docs.

    :param address: Pylontech: the first pack's address (pack ``i`` answers on ``address + i``);
        Modbus: the unit address.
    """

    def __init__(
        self,
        profile: Rs485Profile,
        endpoint: SerialEndpoint | TcpEndpoint,
        address: int,
        source: Source,
        clock: Clock,
        settings: OutputSettings,
        *,
        name: str = "rs485",
    ) -> None:
        self.profile = profile
        self.endpoint = endpoint
        self.address = address
        self._source = source
        self._clock = clock
        self.settings = settings
        self.name = name
        self.writes_accepted = 0
        """Writes the map accepted (the Growatt handshake)."""
        self._state: FailsafeState | None = None
        self._server: SerialServer | ModbusServer
        if profile.pylontech is not None:
            assert isinstance(endpoint, SerialEndpoint)  # the builders only pair Pylontech with a port
            self.responder: PylontechResponder | None = PylontechResponder(profile.pylontech, address)
            self.register_map: RegisterMap | None = None
            self._server = SerialServer(
                endpoint.port,
                endpoint.baudrate,
                DelimitedFramer(SOI, EOI, MAX_FRAME_BYTES),
                self._answer_line,
                name=name,
            )
        else:
            assert profile.registers is not None
            self.responder = None
            self.register_map = RegisterMap(profile.registers)
            self._server = ModbusServer(endpoint, frozenset({address}), self._answer_modbus, name=name, clock=clock)

    # --- life --------------------------------------------------------------------------------------------------

    def start(self) -> None:
        log.info("%s: serving profile %s on %s", self.name, self.profile.name, self.describe())
        self._server.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._server.stop(timeout_s)

    def wait_serving(self, timeout_s: float = 5.0) -> bool:
        return self._server.wait_serving(timeout_s)

    def describe(self) -> str:
        if isinstance(self.endpoint, SerialEndpoint) and self.profile.pylontech is not None:
            return (
                f"{self.endpoint.port} at {self.endpoint.baudrate} bit/s (Pylontech ASCII, address {self.address:#04x})"
            )
        return f"{self.endpoint.describe()}, unit {self.address}"

    @property
    def server(self) -> SerialServer | ModbusServer:
        return self._server

    # --- what to answer from ---------------------------------------------------------------------------------

    def view(self) -> BatteryView | None:
        """The values to answer with now, or None: answer nothing (see the module docs)."""
        readings, limits, state = self._source()
        if not readings or limits is None or state not in _RANK:
            return self._decided(None, state)
        now = self._clock.monotonic()
        age_s = now - min(r.measured_at_s for r in readings)
        by_age = FailsafeState.NORMAL
        if not math.isfinite(age_s) or age_s > self.settings.silence_after_s:
            by_age = FailsafeState.SILENT
        elif age_s > self.settings.bms_timeout_s:
            by_age = FailsafeState.STALE
        state = max(state, by_age, key=_RANK.__getitem__)
        if state is FailsafeState.STALE and self.profile.stale is StaleAction.SILENCE:
            state = FailsafeState.SILENT
        if state is FailsafeState.SILENT and not self.profile.answer_when_silent:
            return self._decided(None, state)
        answered = limits
        if state is not FailsafeState.NORMAL:
            answered = failsafe_limits(limits, now, f"BMS data {age_s:.0f} s old")
        view = battery_view(
            readings[:MAX_PACKS], answered, comm_alarm=state is not FailsafeState.NORMAL, base_address=self.address
        )
        system = {**view.system, "failsafe_state_code": int(_CODES[state])}
        return self._decided(BatteryView(view.modules, system), state)

    def _decided(self, view: BatteryView | None, state: FailsafeState) -> BatteryView | None:
        if state is not self._state:
            if view is None:
                log.info("%s: %s: not answering", self.name, state.value)
            else:
                log.info("%s: %s: answering", self.name, state.value)
            self._state = state
        return view

    # --- answering -------------------------------------------------------------------------------------------

    def _answer_line(self, request: bytes) -> bytes | None:
        assert self.responder is not None
        return self.responder.respond(request, self.view())

    def _answer_modbus(self, request: ModbusRequest) -> ModbusAnswer:
        assert self.register_map is not None
        view = self.view()
        if view is None:
            return SILENT
        if request.values is not None:
            refused = self.register_map.write(request.function_code, request.address, request.count)
            if refused is None:
                self.writes_accepted += 1
                return ModbusAnswer()
            return ModbusAnswer(exception=int(refused))
        result = self.register_map.read(view, request.function_code, request.address, request.count)
        if isinstance(result, ModbusException):
            return ModbusAnswer(exception=int(result))
        return ModbusAnswer(registers=tuple(result))


# --- sources ---------------------------------------------------------------------------------------------------


class _SnapshotLoop(Protocol):
    def snapshot(self) -> _Snapshot: ...


class _Snapshot(Protocol):
    @property
    def state(self) -> FailsafeState: ...

    @property
    def reading(self) -> PackReading | None: ...

    @property
    def limits(self) -> Limits | None: ...


def snapshot_source(loop: _SnapshotLoop) -> Source:
    """A source reading a :class:`~gateway.runtime.ControlLoop`'s snapshots (the limits it last sent)."""

    def source() -> SourceState:
        snapshot = loop.snapshot()
        # Several packs: one module each (the limits are the battery's, battery_view shares them out).
        battery = getattr(snapshot, "battery", None)
        readings: tuple[PackReading, ...] = (
            battery.packs if battery is not None else () if snapshot.reading is None else (snapshot.reading,)
        )
        return readings, snapshot.limits, snapshot.state

    return source


class LimitsFeed:
    """A source for outputs without a CAN control loop: keeps the newest good readings and their limits.

    The poller calls :meth:`on_readings` / :meth:`on_poll_failed` (as it does on a ControlLoop). The limits
    are the battery's: each pack's own limits engine, combined by the system rule (gateway/limits/system.py)
    over the packs online, exactly as the CAN control loop does. Thread-safe.
    """

    def __init__(self, clock: Clock, limits: LimitsSettings, settings: OutputSettings) -> None:
        self._clock = clock
        self._settings = settings
        self._packs = PackSet(limits, max_age_s=settings.bms_timeout_s)
        self._lock = threading.Lock()
        self._latest: dict[str, PackReading] = {}
        self._readings: tuple[PackReading, ...] = ()
        self._limits: Limits | None = None
        self._last_error: str | None = None
        self._was_failsafe = False

    def on_readings(self, readings: tuple[PackReading, ...]) -> None:
        """A poll succeeded (for the packs it returns); an implausible reading counts as a failed poll."""
        for reading in readings:
            problem = implausibility(reading)
            if problem is not None:
                self.on_poll_failed(GatewayError(f"implausible reading from {reading.pack_id}: {problem}"))
                return
        if not readings:
            self.on_poll_failed(GatewayError("BMS returned no pack"))
            return
        now = self._clock.monotonic()
        with self._lock:
            if self._was_failsafe:
                self._packs.resume()
                self._was_failsafe = False
            self._latest.update({r.pack_id: r for r in readings})
            battery = battery_at(self._latest, [r.pack_id for r in readings], now, self._settings.bms_timeout_s)
            if battery is None:
                return
            answered = {r.pack_id for r in readings}
            missed = frozenset(p for p in self._latest if p not in answered)
            self._packs.announce(battery, {})
            limits = self._packs.limits(battery, missed, now)
            self._readings, self._limits, self._last_error = battery.packs, limits, None

    def on_poll_failed(self, error: GatewayError) -> None:
        message = str(error)
        with self._lock:
            changed, self._last_error = message != self._last_error, message
        if changed:  # once per cause, with its fix
            log.warning("BMS: %s", error_line(error))

    def __call__(self) -> SourceState:
        now = self._clock.monotonic()
        with self._lock:
            readings, limits = self._readings, self._limits
            if not readings:
                return (), None, FailsafeState.WAITING
            age_s = now - min(r.measured_at_s for r in readings)
            if age_s <= self._settings.bms_timeout_s:
                state = FailsafeState.NORMAL
            else:
                state = FailsafeState.STALE if age_s <= self._settings.silence_after_s else FailsafeState.SILENT
                self._was_failsafe = True
        return readings, limits, state


# --- assembly --------------------------------------------------------------------------------------------------


def load_output_profile(name_or_path: str, key: str) -> Rs485Profile:
    """The RS485 profile ``key`` names. :raises ConfigError: on ``key`` when there is none of that name."""
    try:
        return load_rs485_profile(name_or_path)
    except ProfileNotFoundError as error:
        raise ConfigError(key, str(error)) from None


def output_settings(config: Config, profile: Rs485Profile) -> OutputSettings:
    """Fail-safe timing: the config's, with the profile's ``silence_after_s`` unless the config sets one."""
    timeout_s = config.failsafe.bms_timeout_s
    silence_s = config.failsafe.silence_after_s or profile.silence_after_s
    if silence_s <= timeout_s:
        raise ConfigError(
            "failsafe.silence_after_s",
            f"{silence_s:g} s (profile {profile.name}) must be greater than failsafe.bms_timeout_s ({timeout_s:g})",
        )
    return OutputSettings(timeout_s, silence_s)


def _address(profile: Rs485Profile, configured: int | None, key: str) -> int:
    address = profile.address if configured is None else configured
    low, high = profile.address_range
    if profile.pylontech is not None:
        high -= MAX_PACKS - 1  # room for every pack's own address
    if not low <= address <= high:
        raise ConfigError(key, f"{address} is outside {low}-{high} for profile {profile.name}")
    return address


def _endpoint(
    profile: Rs485Profile, serial: SerialPortConfig | None, tcp: TcpConfig | None, key: str
) -> SerialEndpoint | TcpEndpoint:
    if tcp is not None:
        if Framing.MODBUS_TCP not in profile.framings:
            raise ConfigError(f"{key}.tcp", f"profile {profile.name} is not served over TCP; give serial instead")
        return TcpEndpoint(tcp.host, tcp.port, tcp.max_connections, tcp.idle_timeout_s, setting=f"{key}.tcp")
    if serial is None:
        raise ConfigError(f"{key}.serial", f"missing: profile {profile.name} talks RS485, so say which port")
    if profile.framings == (Framing.MODBUS_TCP,):
        raise ConfigError(f"{key}.serial", f"profile {profile.name} is served over TCP only; give tcp instead")
    return SerialEndpoint(serial.port, serial.baudrate or profile.baudrate)


def build_rs485_output(
    config: Config, source: Source, clock: Clock, *, profile: Rs485Profile | None = None
) -> Rs485Output:
    """The ``inverter:`` output for an RS485 ``inverter.profile``, on ``inverter.serial``.

    :raises ConfigError: a missing port, an address out of range, or timing that contradicts the profile.
    :raises ProfileError: the profile file is invalid.
    """
    profile = profile or load_output_profile(config.inverter.profile, "inverter.profile")
    endpoint = _endpoint(profile, config.inverter.serial, None, "inverter")
    address = _address(profile, config.inverter.address, "inverter.address")
    return Rs485Output(profile, endpoint, address, source, clock, output_settings(config, profile), name="inverter")


def build_extra_output(config: Config, index: int, source: Source, clock: Clock) -> Rs485Output:
    """``extra_outputs[index]``: a read-only output. :raises ConfigError: naming the item's key."""
    extra: ExtraOutputConfig = config.extra_outputs[index]
    key = f"extra_outputs[{index}]"
    profile = load_output_profile(extra.profile, f"{key}.profile")
    if profile.steers:
        raise ConfigError(
            f"{key}.profile",
            f"{profile.name} steers an inverter; only inverter: may (extra outputs are read-only, e.g. modbus-battery)",
        )
    endpoint = _endpoint(profile, extra.serial, extra.tcp, key)
    address = _address(profile, extra.address, f"{key}.address")
    name = f"extra-{index}-{profile.name}"
    return Rs485Output(profile, endpoint, address, source, clock, output_settings(config, profile), name=name)


def build_extra_outputs(config: Config, source: Source, clock: Clock) -> list[Rs485Output]:
    """Every ``extra_outputs`` item, built (not started). :raises ConfigError: naming the item's key."""
    return [build_extra_output(config, index, source, clock) for index in range(len(config.extra_outputs))]


def start_all(outputs: Sequence[Rs485Output]) -> None:
    """Start each output; one that cannot open its port retries on its own thread and disturbs no other."""
    for output in outputs:
        output.start()


def stop_all(outputs: Sequence[Rs485Output], timeout_s: float = 5.0) -> None:
    for output in outputs:
        output.stop(timeout_s)
