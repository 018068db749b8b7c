"""Modbus register maps of RS485 profiles: pure (battery values in, 16-bit words out).

A map serves one contiguous span of registers: a read inside it gets the words of the fields defined there
and 0 for registers nobody defined (inverters that read a wide block must not get an exception for a gap);
a read reaching outside gets ILLEGAL DATA ADDRESS. A read with a function the map does not list, and every
write except the ones the map accepts (the Growatt handshake), gets ILLEGAL FUNCTION.
"""

from __future__ import annotations

import enum
from typing import Final

from gateway.rs485.fields import encode_fields
from gateway.rs485.profile_spec import RegisterMapSpec, RegisterSpec
from gateway.rs485.values import BatteryView, Namespace

READ_HOLDING_REGISTERS: Final = 3
READ_INPUT_REGISTERS: Final = 4
WRITE_SINGLE_REGISTER: Final = 6
WRITE_MULTIPLE_REGISTERS: Final = 16
MAX_READ_WORDS: Final = 125


class ModbusException(enum.IntEnum):
    """Modbus exception codes a map answers with."""

    ILLEGAL_FUNCTION = 1
    ILLEGAL_ADDRESS = 2


def _words(register: RegisterSpec, values: Namespace, base: int) -> dict[int, int]:
    data = encode_fields((register.field,), values)
    start = base + register.address
    return {start + i // 2: int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)}


class RegisterMap:
    """The registers of one profile, computed from a :class:`~gateway.rs485.values.BatteryView`."""

    def __init__(self, spec: RegisterMapSpec) -> None:
        self.spec = spec

    def image(self, view: BatteryView) -> dict[int, int]:
        """Every defined register's word: address → value."""
        words: dict[int, int] = {}
        for register in self.spec.registers:
            words.update(_words(register, view.system, 0))
        block = self.spec.modules
        if block is not None:
            for index, module in enumerate(view.modules[: block.count]):
                for register in block.registers:
                    words.update(_words(register, module, block.base + index * block.stride))
        return words

    def read(self, view: BatteryView, function_code: int, address: int, count: int) -> list[int] | ModbusException:
        """The words of a read request, or the exception to answer with."""
        if function_code not in self.spec.read_functions:
            return ModbusException.ILLEGAL_FUNCTION
        first, last = self.spec.span
        if not 1 <= count <= MAX_READ_WORDS or address < first or address + count - 1 > last:
            return ModbusException.ILLEGAL_ADDRESS
        image = self.image(view)
        return [image.get(a, 0) for a in range(address, address + count)]

    def write(self, function_code: int, address: int, count: int) -> ModbusException | None:
        """None when the map accepts this write (its values are ignored), else the exception."""
        for allowed in self.spec.writes:
            if (allowed.function, allowed.address, allowed.count) == (function_code, address, count):
                return None
        return ModbusException.ILLEGAL_FUNCTION
