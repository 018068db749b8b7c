"""JK-PB inverter BMSs on a simulated RS485 bus: ``bms-gateway simulate jk-modbus``.

A pymodbus RTU server answers for one or several unit addresses with the JK-PB register layout of
:mod:`gateway.bms.jk_modbus`: FC03 reads under the byte-offset address rule, and the FC16 trigger writes
with the 300-byte frame before the acknowledgement. Each address has its own :class:`SimPack`: a scenario of
:mod:`gateway.sim.scenarios` (see :func:`pack_variant` for packs that differ a little), or replayed images and
frames of a real capture. Requests for other addresses get no answer, as on a real bus.

The server runs on a serial port (one end of a :class:`~gateway.sim.nullmodem.NullModem`, say), or, without a
port, on a null-modem of its own whose other end is :attr:`JkModbusSimulator.path`. It survives the port
vanishing and reopens it when it returns. Every write request is recorded in :attr:`JkModbusSimulator.writes`.

Apart from the triggers it accepts one kind of write, the switch writes of opt-in control
(:mod:`gateway.bms.jk_modbus_switch`): 0 or 1 as a u32 to 0x1070 (charge), 0x1074 (discharge) or 0x1078
(balancer). A written switch holds over the scenario (:mod:`gateway.sim.switches`): the settings read back
as written, and an off switch holds that MOS (or the balancer) off. Like a JK-PB it asks for no password:
each pack reports its settings passcode (:attr:`SimPack.settings_passcode`) in its device info, for the
gateway to compare. Any other write is refused with an illegal-address exception.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import shutil
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final

import serial
from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusSerialServer
from pymodbus.simulator import DataType, SimData, SimDevice

from gateway.bms import jk_modbus
from gateway.bms.control import Switch
from gateway.bms.jk_modbus_switch import switch_of
from gateway.bms.jk_modbus_tables import BLOCK_BY_TRIGGER, Block
from gateway.clock import Clock
from gateway.errors import LinkError
from gateway.secret import Secret
from gateway.sim.nullmodem import NullModem
from gateway.sim.scenarios import Behaviour, Scenario, Step
from gateway.sim.switches import SwitchOverrides
from gateway.transport.serial_link import open_serial_port

log = logging.getLogger(__name__)

_FIRST_ADDRESS: Final = min(b.base for b in jk_modbus.BLOCKS)
_REGISTER_COUNT: Final = jk_modbus.COMMAND_BASE + jk_modbus.BLOCK_SIZE - _FIRST_ADDRESS
"""Registers from the settings block to the end of the command block (0x1000–0x17FF), so that a request at
any byte offset reaches :meth:`JkModbusSimulator._action`, which decides what it gets."""
_NOISE: Final = bytes.fromhex("00 FF 55 AA EB")
"""Line noise with half a frame start marker, for the garbage-first behaviour."""
_SUPERVISE_S: Final = 0.05

_EXTRAS_PASSCODE = jk_modbus.SIMULATOR_EXTRAS[jk_modbus.SETTINGS_PASSCODE_NAME]
assert isinstance(_EXTRAS_PASSCODE, Secret)
SIMULATOR_SETTINGS_PASSCODE: Final = _EXTRAS_PASSCODE
"""The settings passcode a simulated pack reports unless given another (:attr:`SimPack.settings_passcode`)."""


@dataclass(frozen=True, slots=True)
class SimPack:
    """One simulated JK-PB at one address."""

    scenario: Scenario
    answers_fc03: bool = True
    """False: FC03 reads go unanswered (firmware that needs the trigger frames)."""
    answers_trigger: bool = True
    """False: trigger writes go unanswered."""
    images: Mapping[Block, bytes] | None = None
    """Big-endian block images to serve over FC03 instead of the scenario's (a capture replayed word for word)."""
    frames: Mapping[Block, bytes] | None = None
    """300-byte frames to send for the trigger writes instead of the scenario's."""
    reported_address: int | None = None
    """The device address its settings block states (DIP switches read at power-up); None: the unit it serves."""
    settings_passcode: Secret = SIMULATOR_SETTINGS_PASSCODE
    """The settings password it reports in its device info (info 0x70); it checks none itself."""


def pack_variant(scenario: Scenario, index: int) -> Scenario:
    """``scenario`` as pack number ``index`` (0, 1, ...) of a parallel battery would report it: SOC 1 % lower
    per index, cells 1 mV lower, current 3 % lower, so that packs differ while telling the same story."""
    if index == 0:
        return scenario

    def step(t_s: float) -> Step:
        original = scenario.step(t_s)
        state = original.reading.state
        cells = tuple(round(max(0.0, v - 0.001 * index), 3) for v in state.cell_voltages_v)
        shifted = replace(
            state,
            cell_voltages_v=cells,
            pack_voltage_v=round(sum(cells), 2),
            soc_pct=max(0.0, state.soc_pct - index),
            current_a=round(state.current_a * (1 - 0.03 * index), 2),
        )
        device = replace(original.reading.device, serial_number=f"SIM{index:08d}")
        return replace(original, reading=replace(original.reading, state=shifted, device=device))

    return replace(scenario, name=f"{scenario.name}#{index}", step=step)


@dataclass(frozen=True, slots=True)
class WriteSeen:
    """A write request the simulator received."""

    unit: int
    function_code: int
    address: int
    values: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _Pending:
    """How to send the reply to the request being answered."""

    behaviour: Behaviour
    frame: bytes | None = None
    """A trigger frame to send before the acknowledgement."""


class JkModbusSimulator:
    """Serve simulated JK-PBs, one per address in ``packs``.

    :param packs: unit address → pack.
    :param clock: time source; scenario time is ``clock.monotonic()`` minus the start time.
    :param port: serial port to serve on; None creates a null-modem (the gateway opens :attr:`path`).
    :param baudrate: bits per second on ``port``.
    :param reply_delay_s: wait this long before answering, s.
    """

    def __init__(
        self,
        packs: Mapping[int, SimPack],
        clock: Clock,
        *,
        port: str | None = None,
        baudrate: int = 115200,
        reply_delay_s: float = 0.0,
    ) -> None:
        if not packs or not all(1 <= unit <= 247 for unit in packs):
            raise ValueError(f"pack addresses must be Modbus units 1–247, got {sorted(packs)}")
        self.packs = dict(packs)
        self._clock = clock
        self._baudrate = baudrate
        self.reply_delay_s = reply_delay_s
        self._started_at = clock.monotonic()
        self._overrides: dict[int, Behaviour] = {}
        self._pending: dict[int, _Pending] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._modem: NullModem | None = None
        self._modem_dir: Path | None = None
        self.writes: list[WriteSeen] = []
        """Every write request received, in order (the gateway sends trigger writes, and switch writes only
        with control on)."""
        self._switches = {unit: SwitchOverrides() for unit in self.packs}
        self.switch_writes_applied = 0
        self.requests_seen = 0
        self.serving = threading.Event()
        """Set while the server holds the port open."""
        if port is None:
            self._modem_dir = Path(tempfile.mkdtemp(prefix="bms-gateway-jk-modbus-"))
            self._modem = NullModem(self._modem_dir, names=("bms", "gateway"))
            self._port = str(self._modem.a_path)
            self.path = str(self._modem.b_path)
        else:
            self._port = port
            self.path = port

    # --- what to answer (pure, given the clock) -------------------------------------------------------------

    def set_behaviour(self, unit: int, behaviour: Behaviour | None) -> None:
        """Make ``unit`` behave this way whatever its scenario says; None: back to the scenario."""
        if behaviour is None:
            self._overrides.pop(unit, None)
        else:
            self._overrides[unit] = behaviour

    def step(self, unit: int) -> Step:
        """What ``unit`` reports now: its scenario, with the switches written to it applied."""
        step = self.packs[unit].scenario.step(self._clock.monotonic() - self._started_at)
        step = replace(step, reading=self._switches[unit].apply(step.reading))
        override = self._overrides.get(unit)
        return step if override is None else replace(step, behaviour=override)

    def switch_overrides(self, unit: int) -> dict[Switch, bool]:
        """The switches written to ``unit`` so far (a copy)."""
        return self._switches[unit].snapshot()

    def apply_write(self, unit: int, address: int, words: tuple[int, ...]) -> bool:
        """Apply a write to ``unit`` if it is a switch write (True); anything else changes nothing (False)."""
        setting = switch_of(address, words)
        if setting is None:
            return False
        switch, on = setting
        self._switches[unit].set(switch, on)
        self.switch_writes_applied += 1
        log.info("simulator: unit %d %s switch set %s", unit, switch, "on" if on else "off")
        return True

    def fc03_words(self, unit: int, address: int, count: int) -> list[int] | None:
        """The words ``unit`` answers to an FC03 read, or None when the read leaves every block."""
        block = jk_modbus.block_at(address)
        if block is None or address + count > block.base + block.size:
            return None
        pack = self.packs[unit]
        image = (pack.images or {}).get(block)
        if image is None:
            image = jk_modbus.encode_image(block, self._values(unit)[block])
        offset = address - block.base
        if offset + 2 * count > len(image):
            return None
        return jk_modbus.registers_from_image(image, offset, count)

    def trigger_frame(self, unit: int, block: Block) -> bytes:
        """The 300-byte frame ``unit`` sends for ``block``'s trigger write."""
        frames = self.packs[unit].frames or {}
        frame = frames.get(block)
        return frame if frame is not None else jk_modbus.encode_frame(block, self._values(unit)[block])

    def _values(self, unit: int) -> Mapping[Block, Mapping[str, jk_modbus.Value]]:
        pack = self.packs[unit]
        extras = {
            **jk_modbus.SIMULATOR_EXTRAS,
            "device_address": unit if pack.reported_address is None else pack.reported_address,
            jk_modbus.SETTINGS_PASSCODE_NAME: pack.settings_passcode,
        }
        return jk_modbus.values_from_reading(self.step(unit).reading, extras)

    # --- serving --------------------------------------------------------------------------------------------

    def open(self) -> None:
        """Check now that the port can be opened; with an own null-modem, create it (:attr:`path` then exists).

        :raises LinkError: naming the port and the cause.
        """
        if self._modem is not None:
            if not self._modem.running:
                self._modem.start()
            return
        try:
            open_serial_port(self._port, baudrate=self._baudrate, timeout=0.1).close()
        except (serial.SerialException, OSError, ValueError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise LinkError(f"cannot open serial port {self._port}: {reason}") from None

    def start(self) -> None:
        """Serve in a daemon thread until :meth:`stop`."""
        if self._modem is not None and not self._modem.running:
            self._modem.start()
        self._stop.clear()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), name="jk-modbus-sim", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._modem is not None:
            self._modem.stop()
        if self._modem_dir is not None:
            shutil.rmtree(self._modem_dir, ignore_errors=True)

    def wait_serving(self, timeout_s: float = 10.0) -> bool:
        """Block until the server holds its port (True), or ``timeout_s`` passed (False)."""
        return self.serving.wait(timeout_s)

    async def _serve(self) -> None:
        devices = [
            SimDevice(
                unit,
                simdata=[SimData(_FIRST_ADDRESS, count=_REGISTER_COUNT, datatype=DataType.REGISTERS)],
                action=functools.partial(self._action, unit),
            )
            for unit in self.packs
        ]
        # Unit 0 stands for every other address; its answers are dropped in _on_packet.
        devices.append(SimDevice(0, simdata=[SimData(0, datatype=DataType.INVALID)]))
        while not self._stop.is_set():
            server = ModbusSerialServer(
                devices,
                port=self._port,
                baudrate=self._baudrate,
                trace_packet=self._on_packet,
                reconnect_delay=0,
            )
            if await server.listen():
                self.serving.set()
                # The server does not reopen a serial port it lost; watch it and start a new one.
                while not self._stop.is_set() and server.active_connections:
                    await asyncio.sleep(_SUPERVISE_S)
                self.serving.clear()
                if not self._stop.is_set():
                    log.info("simulator: port %s lost; waiting for it to return", self._port)
            with contextlib.suppress(Exception):
                server.close()
            self._pending.clear()
            if not self._stop.is_set():
                await asyncio.sleep(4 * _SUPERVISE_S)

    async def _action(
        self,
        unit: int,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this for every request to ``unit``: fill in the answer or refuse it."""
        self.requests_seen += 1
        pack = self.packs[unit]
        if values is not None:
            written = tuple(int(v) for v in values)
            self.writes.append(WriteSeen(unit, function_code, address, written))
            if function_code != jk_modbus.WRITE_MULTIPLE_REGISTERS:
                return ExcCodes.ILLEGAL_ADDRESS
            block = BLOCK_BY_TRIGGER.get(address)
            if block is not None and count == 1 and written == (0,):
                step = self.step(unit)
                behaviour = step.behaviour if pack.answers_trigger else Behaviour.SILENT
                self._pending[unit] = _Pending(behaviour, self.trigger_frame(unit, block))
            elif self.apply_write(unit, address, written):
                self._pending[unit] = _Pending(self.step(unit).behaviour)  # the echo, shaped like any reply
            else:
                return ExcCodes.ILLEGAL_ADDRESS  # read-only, apart from the triggers and the switches
        else:
            if function_code != jk_modbus.READ_HOLDING_REGISTERS:
                return ExcCodes.ILLEGAL_FUNCTION
            words = self.fc03_words(unit, address, count)
            if words is None:
                return ExcCodes.ILLEGAL_ADDRESS
            registers[address - start_address : address - start_address + count] = words
            behaviour = self.step(unit).behaviour if pack.answers_fc03 else Behaviour.SILENT
            self._pending[unit] = _Pending(behaviour)
        if self.reply_delay_s > 0:
            await asyncio.sleep(self.reply_delay_s)
        return None

    def _on_packet(self, sending: bool, data: bytes) -> bytes:
        """pymodbus's hook on every packet: shape outgoing replies by the pack's behaviour."""
        if not sending or not data:
            return data
        unit = data[0]
        if unit not in self.packs:
            return b""  # no pack has that address: nobody answers
        pending = self._pending.pop(unit, _Pending(Behaviour.ANSWER))
        return _shape(data, pending)


def _shape(reply: bytes, pending: _Pending) -> bytes:
    """The bytes a pack with ``pending.behaviour`` puts on the wire for ``reply``."""
    behaviour, frame = pending.behaviour, pending.frame
    if behaviour is Behaviour.SILENT:
        return b""
    if frame is not None:
        if behaviour is Behaviour.BAD_CHECKSUM:
            frame = frame[:-1] + bytes(((frame[-1] + 1) & 0xFF,))
        elif behaviour is Behaviour.TRUNCATED:
            return frame[: math.ceil(len(frame) / 2)]
        wire = frame + b"\x00" + reply + b"\x00"
    elif behaviour is Behaviour.BAD_CHECKSUM:
        wire = reply[:-1] + bytes(((reply[-1] + 1) & 0xFF,))
    elif behaviour is Behaviour.TRUNCATED:
        wire = reply[: len(reply) // 2]
    else:
        wire = reply
    return _NOISE + wire if behaviour is Behaviour.GARBAGE_FIRST else wire
