"""A JK-PB block's bytes as far as they were received (:class:`BlockImage`), and the decoding and encoding of
its fields.

FC03 replies make a big-endian image (:func:`image_from_registers`), trigger frames a little-endian one
(:func:`gateway.bms.jk_modbus_frames.parse_frame`); :func:`decode` turns either into values by name,
:func:`encode_image` is the simulator's inverse. Every passcode is zeroed as soon as an image is made
(:func:`scrub_passcodes`) and never decoded; only the settings passcode is lifted out first, as a
:class:`~gateway.secret.Secret`. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final, Literal

from gateway.bms.jk_modbus_tables import SETTINGS_PASSCODE, Block, Field, Kind
from gateway.errors import FrameError
from gateway.secret import Secret

ByteOrder = Literal["big", "little"]
Value = int | float | str | Secret | tuple[int | float, ...]
"""A decoded field: a number (int when the divisor is 1), a tuple for an array field, text."""

_SIGNED: Final = frozenset({Kind.I8, Kind.I16, Kind.I32})


@dataclass(frozen=True, slots=True)
class BlockImage:
    """A block's bytes (``block.size`` of them) and which of them came from the BMS; secrets are zeroed."""

    block: Block
    data: bytes
    known: bytes
    """One byte per data byte: 1 if it was received."""
    byteorder: ByteOrder
    """``big`` from FC03 replies, ``little`` from trigger frames."""
    settings_passcode: Secret | None = None
    """The settings passcode (info block, :data:`SETTINGS_PASSCODE_NAME`) when all its bytes were received and
    it is not empty; its bytes in :attr:`data` are zeroed like every other passcode's."""

    def has(self, spec: Field) -> bool:
        return all(self.known[spec.offset : spec.end])


def scrub_passcodes(block: Block, data: bytearray, known: bytearray) -> Secret | None:
    """Zero every passcode in ``data``; return the settings passcode, if the bytes held it, as a Secret."""
    passcode: Secret | None = None
    for spec in block.fields:
        if spec.kind is not Kind.SECRET:
            continue
        if spec is SETTINGS_PASSCODE and all(known[spec.offset : spec.end]):
            text = bytes(data[spec.offset : spec.end]).split(b"\x00", 1)[0].decode("latin-1")
            passcode = Secret(text) if text else None  # all NUL: firmware without one
        data[spec.offset : spec.end] = bytes(spec.size)
        known[spec.offset : spec.end] = bytes(spec.size)
    return passcode


def image_from_registers(block: Block, reads: Iterable[tuple[int, Sequence[int]]]) -> BlockImage:
    """The image that FC03 replies make: each ``(address, words)`` puts ``2 × len(words)`` bytes at byte
    offset ``address − block.base``, big-endian. Later reads overwrite earlier ones where they overlap.

    :raises FrameError: a read outside the block, an empty read, or a value that is no 16-bit word.
    """
    data = bytearray(block.size)
    known = bytearray(block.size)
    for address, words in reads:
        offset = address - block.base
        if not words:
            raise FrameError("empty reply", f"no registers from 0x{address & 0xFFFF:04X}")
        end = offset + 2 * len(words)
        if offset < 0 or end > block.size:
            raise FrameError(
                "bad address",
                f"{len(words)} registers from 0x{address & 0xFFFF:04X} leave the {block.name} block"
                f" 0x{block.base:04X}–0x{block.base + block.size - 1:04X}",
            )
        for index, word in enumerate(words):
            if not isinstance(word, int) or not 0 <= word <= 0xFFFF:
                raise FrameError("bad register", f"word {index} of the read at 0x{address:04X} is not 16 bits")
            at = offset + 2 * index
            data[at : at + 2] = word.to_bytes(2, "big")
            known[at : at + 2] = b"\x01\x01"
    passcode = scrub_passcodes(block, data, known)
    return BlockImage(block, bytes(data), bytes(known), "big", passcode)


def registers_from_image(data: bytes, offset: int, count: int) -> list[int]:
    """The words an FC03 read of ``count`` words at byte ``offset`` returns from a big-endian block image.

    :raises ValueError: the read leaves the image.
    """
    if offset < 0 or count < 1 or offset + 2 * count > len(data):
        raise ValueError(f"{count} words at byte offset {offset} leave a {len(data)}-byte image")
    return [int.from_bytes(data[offset + 2 * i : offset + 2 * i + 2], "big") for i in range(count)]


def _decode_text(raw: bytes) -> str:
    text = raw.split(b"\x00", 1)[0].decode("latin-1")
    return "".join(c if c.isprintable() else "?" for c in text).strip()


def _decode_field(spec: Field, data: bytes, byteorder: ByteOrder) -> Value:
    if spec.kind is Kind.TEXT:
        return _decode_text(data[spec.offset : spec.end])
    signed = spec.kind in _SIGNED
    items: list[int | float] = []
    for index in range(spec.count):
        at = spec.offset + index * spec.width
        raw = int.from_bytes(data[at : at + spec.width], byteorder, signed=signed)
        items.append(raw if spec.divisor == 1 else raw / spec.divisor)
    return tuple(items) if spec.count > 1 else items[0]


def decode(image: BlockImage) -> Mapping[str, Value]:
    """Every field of the image's block whose bytes were all received, by name; never a secret."""
    return MappingProxyType(
        {
            spec.name: _decode_field(spec, image.data, image.byteorder)
            for spec in image.block.fields
            if spec.kind is not Kind.SECRET and image.has(spec)
        }
    )


def _encode_field(spec: Field, value: Value, out: bytearray, byteorder: ByteOrder) -> None:
    if spec.kind in (Kind.TEXT, Kind.SECRET):
        text = value.reveal() if isinstance(value, Secret) else value
        if not isinstance(text, str):
            raise ValueError(f"{spec.name}: expected text")
        raw = text.encode("latin-1")
        if len(raw) > spec.length:
            raise ValueError(f"{spec.name}: {len(raw)} bytes do not fit {spec.length}")
        out[spec.offset : spec.end] = raw.ljust(spec.length, b"\x00")
        return
    items = value if isinstance(value, tuple) else (value,)
    if len(items) != spec.count or not all(isinstance(i, int | float) for i in items):
        raise ValueError(f"{spec.name}: expected {spec.count} number(s)")
    bits = 8 * spec.width
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if spec.kind in _SIGNED else (0, (1 << bits) - 1)
    for index, item in enumerate(items):
        assert isinstance(item, int | float)
        raw_value = round(item * spec.divisor)
        if not low <= raw_value <= high:
            raise ValueError(f"{spec.name}: {item} out of range for {spec.kind.value}")
        at = spec.offset + index * spec.width
        out[at : at + spec.width] = raw_value.to_bytes(spec.width, byteorder, signed=spec.kind in _SIGNED)


def encode_image(block: Block, values: Mapping[str, Value], byteorder: ByteOrder = "big") -> bytes:
    """The block's bytes holding ``values`` (fields not given are 0): what the simulator serves.

    :raises ValueError: an unknown name, or a value that does not fit its field.
    """
    out = bytearray(block.size)
    for name, value in values.items():
        spec = block.by_name.get(name)
        if spec is None:
            raise ValueError(f"{block.name} block has no field {name}")
        _encode_field(spec, value, out, byteorder)
    return bytes(out)
