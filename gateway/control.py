"""Opt-in BMS control: set the BMS's charge, discharge and balancer switches, and nothing else.

The gateway never writes to the BMS unless the config says ``control.enabled: true`` and gives
``control.password``; otherwise no :class:`Controller` can be made, and no write frame is ever built. With
control on, every request, whoever made it (``"cli"`` or ``"mqtt"``):

1. is refused within ``control.min_interval_s`` of the previous write, or when ``control.max_writes_per_day``
   writes were made in the last 24 h (:mod:`gateway.control_budget`: one record in the state store, shared by
   the service and the CLI, kept across restarts; an unusable record refuses every write);
2. reads the BMS and compares ``control.password`` with the settings password the BMS reports: firmware may
   not check the password itself, so the gateway does, and refuses on a mismatch (naming neither);
3. writes only when the switch is not already as asked, then reads the BMS back until it reports the new
   setting (:class:`~gateway.errors.ControlNotVerified` if it never does);
4. logs one line with who asked.

Refusals and failures are raised as typed one-line errors (:class:`~gateway.errors.ControlRefused`,
:class:`~gateway.errors.ControlNotVerified`, or the link's and codec's own); the caller reports them: the
CLI as its error line, :func:`handle_switch_command` (MQTT) as a log line. The protocol part is a
:class:`~gateway.bms.control.BmsControl` found by driver name in :data:`CONTROLS`.

Home Assistant: :func:`control_entities` gives the discovery configs of the three switches (none unless
control is on), :func:`switch_state_messages` their states from a reading, :func:`handle_switch_command`
runs a command payload.
"""

from __future__ import annotations

import hmac
import importlib
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final, Literal, Protocol

from gateway.bms.control import BmsControl, Switch, SwitchReadout, switch_states
from gateway.bms.driver import BmsDriver
from gateway.clock import Clock
from gateway.config import Config, ControlConfig
from gateway.control_budget import WriteBudget
from gateway.errors import ControlNotVerified, ControlRefused, GatewayError
from gateway.model import PackReading
from gateway.secret import Secret
from gateway.state_store import StateStore, state_directory

log = logging.getLogger(__name__)

Source = Literal["cli", "mqtt"]
"""Who asked for a write: logged with it."""

READBACK_ATTEMPTS: Final = 3
"""Reads after a write before it counts as not verified."""
READBACK_DELAY_S: Final = 0.5
"""Between those reads, s: some firmware applies a setting a moment after the frame."""

CONTROLS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "jk-uart": "gateway.bms.jk_uart_control:JkUartControl",
        "jk-modbus": "gateway.bms.jk_modbus_control:JkModbusControl",
    }
)
"""Driver name → ``module:class`` of its :class:`BmsControl`, built as ``cls(driver, password)``; the one place
to add a protocol. Imported lazily, like the drivers."""

_DISABLED: Final = (
    "refused: BMS control is off (set control.enabled: true and control.password in the config to allow writes)"
)


def control_enabled(config: Config) -> bool:
    """Whether the config allows writes to the BMS: enabled *and* a password given."""
    return config.control.enabled and config.control.password is not None


def require_control(config: Config) -> Secret:
    """The password, if the config allows writes. :raises ControlRefused: control is off."""
    password = config.control.password
    if not config.control.enabled or password is None:
        raise ControlRefused("disabled", _DISABLED)
    return password


def passwords_match(configured: Secret, reported: Secret) -> bool:
    """Constant-time comparison, so that response times tell nothing about the password."""
    return hmac.compare_digest(configured.reveal().encode("utf-8"), reported.reveal().encode("utf-8"))


def _on_off(on: bool | None) -> str:
    return "unknown" if on is None else "on" if on else "off"


@dataclass(frozen=True, slots=True)
class ControlResult:
    """A request that succeeded: the switch is now as asked, as ``reading`` (read after any write) shows."""

    switch: Switch
    on: bool
    changed: bool
    """False: the switch already was so, and nothing was written."""
    reading: PackReading
    source: Source

    def describe(self) -> str:
        """One line for the user."""
        state = _on_off(self.on)
        if not self.changed:
            return f"{self.switch} switch already {state}: nothing written"
        live = self.reading.state
        now = {Switch.CHARGE: live.charge_mos_on, Switch.DISCHARGE: live.discharge_mos_on}.get(self.switch)
        mos = "" if now is None else f"; {self.switch} MOS now {_on_off(now)}"
        return f"{self.switch} switch {state}: written and verified by reading the BMS back{mos}"


class Controller:
    """The one way to write to the BMS. Thread-safe: requests run one at a time.

    :param settings: the ``control`` config section; it must allow writes.
    :param backend: the protocol's writes and reads.
    :param clock: for the write budget (its wall time) and the pauses between read-backs.
    :param store: where the write budget's record lives (shared with every other process on it); None: in
        this controller only.
    :raises ControlRefused: control is off in ``settings``.
    """

    def __init__(
        self,
        settings: ControlConfig,
        backend: BmsControl,
        clock: Clock,
        *,
        readback_attempts: int = READBACK_ATTEMPTS,
        readback_delay_s: float = READBACK_DELAY_S,
        store: StateStore | None = None,
    ) -> None:
        if not settings.enabled or settings.password is None:
            raise ControlRefused("disabled", _DISABLED)
        self._password = settings.password
        self._budget = WriteBudget(settings.min_interval_s, settings.max_writes_per_day, clock, store)
        self._backend = backend
        self._clock = clock
        self._readback_attempts = max(1, readback_attempts)
        self._readback_delay_s = readback_delay_s
        self._lock = threading.Lock()

    @property
    def backend(self) -> BmsControl:
        return self._backend

    def set_switch(self, switch: Switch, on: bool, *, source: Source) -> ControlResult:
        """Set ``switch`` and verify it.

        :raises ControlRefused: interval, daily budget, unusable write record, password mismatch, or the BMS does
            not report what is needed; nothing was written.
        :raises ControlNotVerified: written, but the BMS does not show it.
        :raises GatewayError: (LinkError, FrameError) the BMS could not be read or written.
        """
        with self._lock:
            return self._set(switch, on, source)

    def _set(self, switch: Switch, on: bool, source: Source) -> ControlResult:
        self._budget.check()  # before the BMS is touched
        before = self._backend.read_switches()
        self._check_password(before)
        current = before.switches[switch]
        if current is None:
            raise ControlRefused(
                "not reported",
                f"refused: the BMS does not report its {switch} switch, so a write could not be verified",
            )
        if current is on:
            log.info("control: %s switch already %s, nothing written (asked by %s)", switch, _on_off(on), source)
            return ControlResult(switch, on, changed=False, reading=before.reading, source=source)
        self._budget.take()  # counts from the attempt: a write that fails halfway still went out
        problem = ""
        for form in range(max(1, self._backend.write_forms)):
            if form:
                log.info("control: the BMS ignored the %s switch write; trying the next frame layout", switch)
            self._backend.set_switch(switch, on, form)
            after, problem, ignored = self._read_back(switch, on)
            if after is not None:
                log.info("control: %s switch set %s, verified (asked by %s)", switch, _on_off(on), source)
                return ControlResult(switch, on, changed=True, reading=after.reading, source=source)
            if not ignored:
                break  # no reading shows what the BMS did: another layout could act twice, so stop here
        note = self._backend.not_verified_note(switch)
        raise ControlNotVerified(
            f"{switch} switch {_on_off(on)} was written but not verified after {self._readback_attempts} reads "
            f"({problem}){'; ' + note if note else ''}"
        )

    def _check_password(self, readout: SwitchReadout) -> None:
        if readout.password is None:
            raise ControlRefused(
                "no password reported",
                "refused: the BMS does not report its settings password, so control.password cannot be checked",
            )
        if not passwords_match(self._password, readout.password):
            raise ControlRefused(
                "password mismatch", "refused: control.password does not match the settings password the BMS reports"
            )

    def _read_back(self, switch: Switch, on: bool) -> tuple[SwitchReadout | None, str, bool]:
        """Read until the BMS reports ``switch`` as ``on``: (that readout or None, the last problem, whether the
        last read was a good reading that still shows the old setting, i.e. the BMS ignored the write)."""
        problem = ""
        ignored = False
        for attempt in range(self._readback_attempts):
            if attempt:
                self._clock.sleep(self._readback_delay_s)
            try:
                readout = self._backend.read_switches()
            except GatewayError as exc:
                problem, ignored = f"no reading: {exc}", False
                continue
            reported = readout.switches[switch]
            if reported is on:
                return readout, "", False
            problem, ignored = f"the BMS still reports {_on_off(reported)}", True
        return None, problem, ignored


class _ControlFactory(Protocol):
    def __call__(self, driver: Any, password: Secret, /) -> BmsControl: ...


def open_controller(config: Config, driver: BmsDriver, clock: Clock) -> Controller:
    """The controller for ``driver``, if the config allows writes; its write budget is the record in the state
    directory (:func:`~gateway.state_store.state_directory`), the same for the service and the CLI.

    :raises ControlRefused: control is off, or this driver has no control.
    :raises ConfigError: ``control.password`` cannot be sent by this protocol.
    """
    password = require_control(config)
    spec = CONTROLS.get(driver.name)
    if spec is None:
        raise ControlRefused("unsupported", f"refused: BMS control is not available for driver {driver.name}")
    module_name, _, class_name = spec.partition(":")
    factory: _ControlFactory = getattr(importlib.import_module(module_name), class_name)
    store = StateStore(state_directory(config.state_dir))
    return Controller(config.control, factory(driver, password), clock, store=store)


# --- Home Assistant over MQTT ------------------------------------------------------------------------------

PAYLOAD_ON: Final = "ON"
PAYLOAD_OFF: Final = "OFF"
_ENTITY_NAMES: Final[Mapping[Switch, tuple[str, str]]] = MappingProxyType(
    {
        Switch.CHARGE: ("Charge switch", "mdi:battery-charging"),
        Switch.DISCHARGE: ("Discharge switch", "mdi:battery-arrow-down"),
        Switch.BALANCER: ("Balancer switch", "mdi:scale-balance"),
    }
)


def state_topic(config: Config, node_id: str, switch: Switch) -> str:
    """Where the switch's setting is published (retained), ``ON`` or ``OFF``."""
    return f"{config.mqtt.topic_prefix}/{node_id}/control/{switch}"


def command_topic(config: Config, node_id: str, switch: Switch) -> str:
    """Where Home Assistant sends ``ON`` / ``OFF`` for the switch."""
    return f"{state_topic(config, node_id, switch)}/set"


def discovery_topic(config: Config, node_id: str, switch: Switch) -> str:
    return f"{config.mqtt.discovery_prefix}/switch/{node_id}/{switch}_switch/config"


def control_entities(
    config: Config, node_id: str, device: Mapping[str, Any] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """(discovery topic, config payload) of each switch; empty unless control is on.

    ``device`` is the Home Assistant device block the gateway's other entities use, so that the switches
    join them. When this is empty, publish an empty retained payload to each :func:`discovery_topic` to
    remove switches left from a time control was on.
    """
    if not control_enabled(config):
        return []
    prefix = f"{config.mqtt.topic_prefix}/{node_id}"
    entities: list[tuple[str, dict[str, Any]]] = []
    for switch, (name, icon) in _ENTITY_NAMES.items():
        payload: dict[str, Any] = {
            "name": name,
            "unique_id": f"{node_id}_control_{switch}",
            "icon": icon,
            "entity_category": "config",
            "command_topic": command_topic(config, node_id, switch),
            "state_topic": state_topic(config, node_id, switch),
            "payload_on": PAYLOAD_ON,
            "payload_off": PAYLOAD_OFF,
            "optimistic": False,  # the state comes from the BMS's read back, never from the command
            "availability_topic": f"{prefix}/availability",
            "device": dict(device) if device is not None else {"identifiers": [f"bms-gateway_{node_id}"]},
        }
        entities.append((discovery_topic(config, node_id, switch), payload))
    return entities


def switch_state_messages(config: Config, node_id: str, reading: PackReading) -> list[tuple[str, str]]:
    """(topic, ``ON``/``OFF``) of each switch the BMS reports, to publish retained after each reading."""
    if not control_enabled(config):
        return []
    return [
        (state_topic(config, node_id, switch), PAYLOAD_ON if on else PAYLOAD_OFF)
        for switch, on in switch_states(reading.settings).items()
        if on is not None
    ]


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """What became of one command: ``ok`` with the result, or the one-line reason it was not done."""

    ok: bool
    message: str
    result: ControlResult | None = None


def parse_switch_payload(payload: bytes | str) -> bool:
    """``ON`` → True, ``OFF`` → False (any case, surrounding blanks ignored). :raises ValueError: anything else."""
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
    word = text.strip().upper()
    if word in (PAYLOAD_ON, PAYLOAD_OFF):
        return word == PAYLOAD_ON
    shown = text if len(text) <= 20 else text[:20] + "..."
    raise ValueError(f"expected {PAYLOAD_ON} or {PAYLOAD_OFF}, got {shown!r}")


def handle_switch_command(
    controller: Controller | None, switch: Switch | str, payload: bytes | str, source: Source = "mqtt"
) -> CommandOutcome:
    """Run one command from ``source``; never raises. A refusal or failure is logged (WARNING) with who asked.

    ``controller`` is None when control is off: the command is refused. The caller should then publish
    :func:`switch_state_messages` of the outcome's (or the latest) reading, so Home Assistant shows the truth.
    """
    try:
        target = Switch(switch)
    except ValueError:
        message = f"refused: no switch {str(switch)[:20]!r} (known: {', '.join(s.value for s in Switch)})"
        log.warning("control: %s asked: %s", source, message)
        return CommandOutcome(False, message)
    try:
        on = parse_switch_payload(payload)
    except ValueError as exc:
        message = f"refused: {target} switch: {exc}"
        log.warning("control: %s asked: %s", source, message)
        return CommandOutcome(False, message)
    if controller is None:
        log.warning("control: %s asked for %s switch %s: %s", source, target, _on_off(on), _DISABLED)
        return CommandOutcome(False, _DISABLED)
    try:
        result = controller.set_switch(target, on, source=source)
    except GatewayError as exc:
        log.warning("control: %s asked for %s switch %s: %s", source, target, _on_off(on), exc)
        return CommandOutcome(False, str(exc))
    return CommandOutcome(True, result.describe(), result)
