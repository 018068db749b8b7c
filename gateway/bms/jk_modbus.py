"""The JK-PB inverter BMS on RS485, as pure functions: Modbus RTU register blocks and 300-byte trigger frames.

Three register blocks, each described once by a table (:data:`LIVE`, :data:`SETTINGS`, :data:`INFO`): byte
offset, type, name (with its unit) and divisor of every field. The same table serves both ways in which a
JK-PB hands its data over:

* **Modbus RTU, FC 0x03.** The register address is the block base plus the **byte** offset of the official
  table, the quantity counts 16-bit words, and the reply carries ``2 × quantity`` bytes taken contiguously
  from that byte offset (so a read at 0x1278 starts with the byte at live offset 0x78). Big-endian: a u32 is
  high word first. :func:`image_from_registers` turns replies into a :class:`BlockImage` of the block's
  bytes; :func:`read_plan` says which reads (at most :data:`MAX_READ_WORDS` words each) fetch given fields.
* **Trigger frames.** An FC 0x10 write of the value 0 to one trigger register (:func:`trigger_request`)
  makes the BMS send a 300-byte frame ``55 AA EB 90 type 00 data… checksum``, then ``00``, the FC 0x10
  acknowledgement and ``00``. The data is the block's bytes from offset 0, **little-endian**; byte 299 is
  the sum of bytes 0–298 mod 256. The frame names no unit: the acknowledgement does
  (:func:`scan_trigger_reply`). These writes change nothing in the BMS: they are reads.

A field made of single bytes (``u8``, ``i8``) sits at the same byte offset in both byte orders; wider
numbers are read in the image's byte order. Passcode fields are :attr:`Kind.SECRET`: their bytes are zeroed
as soon as an image is made (:func:`image_from_registers`, :func:`parse_frame`) and never decoded, so no
passcode reaches the model or a log. The one exception is the settings passcode
(:data:`SETTINGS_PASSCODE_NAME`), which opt-in control compares: it is lifted out of the bytes, before they
are zeroed, into :attr:`BlockImage.settings_passcode`, a :class:`~gateway.secret.Secret`. Facts and sources:
``shared/protocols/jk_bms.md``, family 2.

Nothing here does I/O. Every malformed input from a wire raises :class:`~gateway.errors.FrameError`; a
value that does not fit its field when encoding (the simulator's side) raises :class:`ValueError`.

The protocol is split by job; this module is the one import for all of it, the name its users know:

* :mod:`gateway.bms.jk_modbus_tables`: the register tables of the three blocks, and where each block lives.
* :mod:`gateway.bms.jk_modbus_image`: a block's bytes as received, and the decoding and encoding of its fields.
* :mod:`gateway.bms.jk_modbus_frames`: the FC03 read plan, the trigger frames, the CRC, the permitted requests.
* :mod:`gateway.bms.jk_modbus_model`: the blocks to and from the domain model, and what a poll reads.
"""

from __future__ import annotations

from gateway.bms.jk_modbus_frames import (
    FRAME_DATA_AT,
    FRAME_DATA_LEN,
    FRAME_LEN,
    FRAME_START,
    MAX_GAP_WORDS,
    MAX_READ_WORDS,
    READ_HOLDING_REGISTERS,
    TRIGGER_ACK_LEN,
    WRITE_MULTIPLE_REGISTERS,
    Read,
    crc16,
    encode_frame,
    frame_checksum,
    is_permitted_request,
    parse_frame,
    read_plan,
    scan_trigger_reply,
    trigger_ack,
    trigger_request,
    with_crc,
)
from gateway.bms.jk_modbus_image import (
    BlockImage,
    ByteOrder,
    Value,
    decode,
    encode_image,
    image_from_registers,
    registers_from_image,
    scrub_passcodes,
)
from gateway.bms.jk_modbus_model import (
    INFO_POLLED,
    LIVE_POLLED,
    MOS_SENSOR_BIT,
    POLL_PLAN,
    SETTINGS_NOT_CARRIED,
    SETTINGS_PASSCODE_READ,
    SETTINGS_POLLED,
    SIMULATOR_DEVICE,
    SIMULATOR_EXTRAS,
    alarms_from_bitmap,
    bitmap_from_alarms,
    to_device,
    to_settings,
    to_state,
    values_from_reading,
)
from gateway.bms.jk_modbus_tables import (
    BLOCK_BY_FRAME_TYPE,
    BLOCK_BY_TRIGGER,
    BLOCK_SIZE,
    BLOCKS,
    COMMAND_BASE,
    INFO,
    LIVE,
    MAX_CELLS,
    SETTINGS,
    SETTINGS_PASSCODE,
    SETTINGS_PASSCODE_NAME,
    TEMPERATURE_SENSORS,
    TRIGGER_REGISTERS,
    Block,
    Field,
    Kind,
    block_at,
    check_settings_passcode,
)

__all__ = [
    "BLOCKS",
    "BLOCK_BY_FRAME_TYPE",
    "BLOCK_BY_TRIGGER",
    "BLOCK_SIZE",
    "COMMAND_BASE",
    "FRAME_DATA_AT",
    "FRAME_DATA_LEN",
    "FRAME_LEN",
    "FRAME_START",
    "INFO",
    "INFO_POLLED",
    "LIVE",
    "LIVE_POLLED",
    "MAX_CELLS",
    "MAX_GAP_WORDS",
    "MAX_READ_WORDS",
    "MOS_SENSOR_BIT",
    "POLL_PLAN",
    "READ_HOLDING_REGISTERS",
    "SETTINGS",
    "SETTINGS_NOT_CARRIED",
    "SETTINGS_PASSCODE",
    "SETTINGS_PASSCODE_NAME",
    "SETTINGS_PASSCODE_READ",
    "SETTINGS_POLLED",
    "SIMULATOR_DEVICE",
    "SIMULATOR_EXTRAS",
    "TEMPERATURE_SENSORS",
    "TRIGGER_ACK_LEN",
    "TRIGGER_REGISTERS",
    "WRITE_MULTIPLE_REGISTERS",
    "Block",
    "BlockImage",
    "ByteOrder",
    "Field",
    "Kind",
    "Read",
    "Value",
    "alarms_from_bitmap",
    "bitmap_from_alarms",
    "block_at",
    "check_settings_passcode",
    "crc16",
    "decode",
    "encode_frame",
    "encode_image",
    "frame_checksum",
    "image_from_registers",
    "is_permitted_request",
    "parse_frame",
    "read_plan",
    "registers_from_image",
    "scan_trigger_reply",
    "scrub_passcodes",
    "to_device",
    "to_settings",
    "to_state",
    "trigger_ack",
    "trigger_request",
    "values_from_reading",
    "with_crc",
]
