"""Fuzzing the JK-PB codec: whatever registers or bytes arrive, the decoders return values or raise FrameError.

Register fuzz: arbitrary reads (any address, any "word"), reads of the poll plan with arbitrary 16-bit words,
and the real dump with words changed. Frame fuzz: arbitrary bytes, the real and simulated frames with bytes
changed and the checksum redone (so the fuzz gets past it), and whole reply streams for the trigger scanner.
Each decoded image goes on to the model mapping. Set ``JK_FUZZ_EXAMPLES`` to run more (or fewer) examples.
"""

from __future__ import annotations

import contextlib
import os
from typing import Final

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jk_pb_data import DUMP, FRAMES_UNIT, TRIGGER_FRAMES, with_frame_sum

from gateway.bms import jk_modbus, jk_modbus_switch
from gateway.bms.jk_modbus_frames import encode_frame, parse_frame, scan_trigger_reply
from gateway.bms.jk_modbus_image import BlockImage, decode, image_from_registers
from gateway.bms.jk_modbus_model import POLL_PLAN, to_device, to_settings, to_state, values_from_reading
from gateway.bms.jk_modbus_tables import BLOCKS, INFO, LIVE, SETTINGS, Block
from gateway.errors import FrameError
from gateway.sim.scenarios import SCENARIOS

EXAMPLES: Final = int(os.environ.get("JK_FUZZ_EXAMPLES", "300"))
FUZZ: Final = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

WORDS: Final = st.integers(0, 0xFFFF)
SIM_FRAMES: Final = [
    encode_frame(block, values_from_reading(SCENARIOS[name].step(t).reading)[block])
    for name in sorted(SCENARIOS)
    for t in (3.5, 55.0, 100.0)
    for block in BLOCKS
]
SEED_FRAMES: Final = [f.frame for f in TRIGGER_FRAMES] + SIM_FRAMES


def to_model(image: BlockImage) -> None:
    """Decode and map to the model; only FrameError may escape."""
    values = decode(image)
    if image.block is LIVE:
        state = to_state(values, 0.0)
        assert 1 <= state.cell_count <= jk_modbus.MAX_CELLS
    elif image.block is SETTINGS:
        to_settings(values, 0.0)
    else:
        to_device(values)


def decode_registers(block: Block, reads: list[tuple[int, list[int]]]) -> None:
    with contextlib.suppress(FrameError):
        to_model(image_from_registers(block, reads))


@FUZZ
@given(
    block=st.sampled_from(BLOCKS),
    reads=st.lists(
        st.tuples(st.integers(-10, 0x1FFFF), st.lists(st.integers(-3, 0x10003), max_size=130)),
        max_size=5,
    ),
)
def test_arbitrary_reads(block: Block, reads: list[tuple[int, list[int]]]) -> None:
    decode_registers(block, reads)


@FUZZ
@given(block=st.sampled_from(BLOCKS), data=st.data())
def test_poll_plan_with_arbitrary_words(block: Block, data: st.DataObject) -> None:
    reads = [(r.address, data.draw(st.lists(WORDS, min_size=r.count, max_size=r.count))) for r in POLL_PLAN[block]]
    decode_registers(block, reads)


@FUZZ
@given(data=st.data())
def test_real_dump_with_words_changed(data: st.DataObject) -> None:
    read = data.draw(st.sampled_from(DUMP))
    block = jk_modbus.block_at(read.address)
    assert block is not None
    words = list(read.words)
    for _ in range(data.draw(st.integers(1, 12))):
        words[data.draw(st.integers(0, len(words) - 1))] = data.draw(WORDS)
    decode_registers(block, [(read.address, words)])


@FUZZ
@given(frame=st.binary(max_size=400))
def test_arbitrary_bytes_as_a_frame(frame: bytes) -> None:
    with contextlib.suppress(FrameError):
        to_model(parse_frame(frame))


@FUZZ
@given(data=st.data())
def test_frames_with_bytes_changed_and_checksum_redone(data: st.DataObject) -> None:
    frame = bytearray(data.draw(st.sampled_from(SEED_FRAMES)))
    for _ in range(data.draw(st.integers(1, 20))):
        frame[data.draw(st.integers(4, 298))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(FrameError):
        to_model(parse_frame(with_frame_sum(frame)))


@FUZZ
@given(
    data=st.data(),
    prefix=st.binary(max_size=40),
    suffix=st.binary(max_size=20),
    unit=st.integers(1, 247),
    final=st.booleans(),
)
def test_trigger_scanner_on_reply_streams(
    data: st.DataObject, prefix: bytes, suffix: bytes, unit: int, final: bool
) -> None:
    frame = bytearray(data.draw(st.sampled_from(SEED_FRAMES)))
    block = jk_modbus.BLOCK_BY_FRAME_TYPE[frame[4]]
    if data.draw(st.booleans()):
        frame[data.draw(st.integers(0, 299))] = data.draw(st.integers(0, 255))
    ack_unit = data.draw(st.sampled_from([unit, FRAMES_UNIT, 1 + unit % 247]))
    stream = prefix + bytes(frame) + b"\x00" + jk_modbus.trigger_ack(ack_unit, block) + suffix
    cut = data.draw(st.integers(0, len(stream)))
    asked = data.draw(st.sampled_from(BLOCKS))
    try:
        image = scan_trigger_reply(stream[:cut], unit, asked, final=final)
    except FrameError:
        return
    if image is not None:
        assert image.block is asked
        with contextlib.suppress(FrameError):
            to_model(image)


@FUZZ
@given(stream=st.binary(max_size=700), unit=st.integers(1, 247), block=st.sampled_from([LIVE, SETTINGS, INFO]))
def test_trigger_scanner_on_arbitrary_bytes(stream: bytes, unit: int, block: Block) -> None:
    for final in (False, True):
        with contextlib.suppress(FrameError):
            scan_trigger_reply(stream, unit, block, final=final)


@FUZZ
@given(frame=st.binary(min_size=4, max_size=16))
def test_request_guard_with_valid_crc(frame: bytes) -> None:
    request = jk_modbus.with_crc(frame[:-2])
    permitted = jk_modbus.is_permitted_request(request)
    if permitted:
        assert (request[1] == 0x03 and len(request) == 8) or (
            request[1] == 0x10
            and int.from_bytes(request[2:4], "big") in jk_modbus.TRIGGER_REGISTERS
            and request[4:9] == b"\x00\x01\x02\x00\x00"
        )


_NEAR_SWITCHES: Final = st.sampled_from([0x1070, 0x1074, 0x1078] * 2 + [0x106C, 0x1072, 0x107C, 0x1620, 0x0070])


@FUZZ
@given(
    unit=st.sampled_from([1, 7, 247] * 2 + [0, 248, 255]),
    function=st.sampled_from([0x10] * 5 + [0x06, 0x03, 0x90]),
    address=_NEAR_SWITCHES,
    count=st.sampled_from([2] * 5 + [1, 3, 0]),
    data=st.sampled_from([[0, 0, 0, 0], [0, 0, 0, 1]] * 3 + [[0, 0, 0, 2], [0, 1, 0, 0], [1, 0, 0, 0], [0, 1], [0, 0]])
    | st.lists(st.integers(0, 255), max_size=6),
)
def test_switch_guard_approves_only_canonical_switch_writes(
    unit: int, function: int, address: int, count: int, data: list[int]
) -> None:
    """Near misses of a switch write (units, functions, registers, counts, values): whatever the guard lets
    through is exactly the request the codec builds for that switch setting."""
    body = bytes((unit, function)) + address.to_bytes(2, "big") + count.to_bytes(2, "big") + bytes((len(data), *data))
    request = jk_modbus.with_crc(body)
    if jk_modbus_switch.is_permitted_switch_request(request):
        write = jk_modbus_switch.decode_switch_request(request)
        assert request == jk_modbus_switch.switch_request(write)
        assert address in jk_modbus_switch.SWITCH_REGISTERS.values() and 1 <= unit <= 247
        assert not jk_modbus.is_permitted_request(request)  # the polling guard never lets a switch write out
