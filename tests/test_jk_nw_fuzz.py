"""Fuzzing the JK NW decoder: whatever arrives, it returns a reply or raises FrameError, nothing else.

The mutation fuzz starts from real frames and from frames the simulator sends for every scenario. Mutated
frames get a fresh length field and checksum, so the fuzz reaches the tag walker and the model
mapping instead of stopping at the envelope. Set ``JK_FUZZ_EXAMPLES`` to run more (or fewer) examples.
"""

from __future__ import annotations

import os
from typing import Final

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jk_frames import REPLIES, REQUESTS, payload_of, sum16, wrap

from gateway.bms import jk_nw
from gateway.bms.jk_nw_codec import JkNwReply, decode_reply, encode_reply
from gateway.bms.jk_nw_model import to_reading
from gateway.clock import FakeClock
from gateway.errors import FrameError
from gateway.model import PackReading
from gateway.sim.jk_uart import JkUartSimulator
from gateway.sim.scenarios import SCENARIOS

EXAMPLES: Final = int(os.environ.get("JK_FUZZ_EXAMPLES", "300"))
FUZZ: Final = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

REAL_FRAMES: Final = [reply.frame for reply in REPLIES]
SIM_TIMES_S: Final = (3.5, 15.5, 55.5, 100.5, 159.5)
"""Scenario times to take simulated frames at: spread over every scenario's cycle."""


def _simulated_frames() -> dict[str, list[bytes]]:
    """Per scenario, the good replies the simulator sends to a real read-all request at :data:`SIM_TIMES_S`
    (times when it stays silent or corrupts its reply give none)."""
    frames: dict[str, list[bytes]] = {}
    for name, scenario in SCENARIOS.items():
        clock = FakeClock()
        simulator = JkUartSimulator(scenario, clock, port="unused")  # never started: respond() only
        elapsed_s = 0.0
        for at_s in SIM_TIMES_S:
            clock.advance(at_s - elapsed_s)
            elapsed_s = at_s
            answer = simulator.respond(REQUESTS[0].frame)
            if answer is not None and decode_or_none(answer) is not None:
                frames.setdefault(name, []).append(answer)
    return frames


def decode_or_none(frame: bytes) -> JkNwReply | None:
    try:
        return decode_reply(frame)
    except FrameError:
        return None


SIM_FRAMES_BY_SCENARIO: Final = _simulated_frames()
# Scenarios built on another (silent, corrupt) repeat its frames: keep each once.
SIM_FRAMES: Final = list(dict.fromkeys(frame for frames in SIM_FRAMES_BY_SCENARIO.values() for frame in frames))
SEED_FRAMES: Final = REAL_FRAMES + SIM_FRAMES
KNOWN_TAGS: Final = sorted(jk_nw.TAGS)
UNKNOWN_TAGS: Final = [t for t in range(256) if t not in jk_nw.TAGS and t != jk_nw.CELLS_TAG]


def _decode_or_frame_error(frame: bytes) -> JkNwReply | None:
    """Decode ``frame`` and, if that works, map it to the model. Only FrameError may escape."""
    try:
        reply = decode_reply(frame)
    except FrameError:
        return None
    try:
        reading = to_reading(reply, 0.0, "fuzz")
    except FrameError:
        return reply
    assert isinstance(reading, PackReading)
    reading.to_json()
    return reply


# --- mutated real frames ------------------------------------------------------------------------------------


@st.composite
def mutated_payloads(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A real or simulated frame and its payload after 1 to 6 random flips, replacements, insertions and
    deletions."""
    frame = draw(st.sampled_from(SEED_FRAMES))
    payload = bytearray(payload_of(frame))
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(("flip", "replace", "insert", "delete")))
        if op == "insert" or not payload:
            at = draw(st.integers(0, len(payload)))
            payload[at:at] = draw(st.binary(min_size=1, max_size=4))
            continue
        at = draw(st.integers(0, len(payload) - 1))
        if op == "flip":
            payload[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "replace":
            payload[at] = draw(st.integers(0, 255))
        else:
            del payload[at : at + draw(st.integers(1, 4))]
    return frame, bytes(payload)


def test_every_scenario_gives_simulated_seed_frames() -> None:
    assert set(SIM_FRAMES_BY_SCENARIO) == set(SCENARIOS)
    for frames in SIM_FRAMES_BY_SCENARIO.values():
        assert len(set(frames)) == len(frames) > 1  # different moments, different frames
    for frame in SIM_FRAMES:
        assert to_reading(decode_reply(frame), 0.0, "sim").settings.cell_count == 16


@FUZZ
@given(mutated_payloads())
def test_mutated_seed_frames(case: tuple[bytes, bytes]) -> None:
    original, payload = case
    _decode_or_frame_error(wrap(payload, header_from=original))


def _layout(payload: bytes) -> tuple[list[int], dict[int, int]]:
    """Where the values of a well-formed ``payload`` sit, and where each tag sits.

    Value offsets exclude the tag bytes and the cell block's own structure (its length and cell numbers).
    """
    positions: list[int] = []
    tags: dict[int, int] = {}
    at = 0
    while at < len(payload):
        tag = payload[at]
        tags[tag] = at
        if tag == jk_nw.CELLS_TAG:
            size = payload[at + 1]
            for cell in range(size // 3):
                first = at + 2 + 3 * cell
                positions += [first + 1, first + 2]  # the millivolts, not the cell number
            at += 2 + size
        else:
            length = jk_nw.TAGS[tag].length
            if tag != jk_nw.PROTOCOL_VERSION_TAG:  # it decides what the current means: tested on its own
                positions += range(at + 1, at + 1 + length)
            at += 1 + length
    return positions, tags


LAYOUTS: Final = [_layout(payload_of(frame)) for frame in SEED_FRAMES]


@st.composite
def value_mutations(draw: st.DrawFn) -> tuple[int, bytes]:
    """A real or simulated frame with random values in place of some of its value bytes (its tag structure
    kept)."""
    index = draw(st.integers(0, len(SEED_FRAMES) - 1))
    frame = SEED_FRAMES[index]
    payload = bytearray(payload_of(frame))
    for at in draw(st.lists(st.sampled_from(LAYOUTS[index][0]), min_size=1, max_size=12)):
        payload[at] = draw(st.integers(0, 255))
    return index, wrap(bytes(payload), header_from=frame)


@FUZZ
@given(value_mutations())
def test_any_values_in_a_seed_layout_decode_and_reencode(case: tuple[int, bytes]) -> None:
    index, frame = case
    reply = decode_reply(frame)
    reading = to_reading(reply, 0.0, "fuzz")
    cells = reply[jk_nw.CELLS_NAME]
    assert isinstance(cells, tuple)
    assert reading.state.cell_voltages_v == cells
    again = encode_reply(reply)
    # 0 °C has two codes, raw 0 and raw 100 (the one real BMSs send, so the encoder's): raw 0 goes back out
    # as 100.
    expected = bytearray(payload_of(frame))
    for tag in (0x80, 0x81, 0x82):
        at = LAYOUTS[index][1][tag]
        if expected[at + 1 : at + 3] == b"\x00\x00":
            expected[at + 1 : at + 3] = (100).to_bytes(2, "big")
    frame = wrap(bytes(expected), header_from=frame)
    # A charging current of magnitude 0 (raw 0x8000) reads as 0.0 A and goes back out as 0x0000.
    current_at = jk_nw.HEADER_LEN + LAYOUTS[index][1][0x84]
    if frame[current_at + 1 : current_at + 3] == b"\x80\x00" and reply["protocol_version"] != 0:
        assert again[current_at + 1 : current_at + 3] == b"\x00\x00"
        return
    assert again == frame


# --- frames built from random tag sequences -----------------------------------------------------------------


@st.composite
def cell_blocks(draw: st.DrawFn) -> bytes:
    """Tag 0x79 with its length byte: usually well formed, sometimes with random numbering or length."""
    count = draw(st.integers(0, 32))
    numbers = draw(st.permutations(range(1, count + 1)))
    body = b"".join(bytes((n, *draw(st.binary(min_size=2, max_size=2)))) for n in numbers)
    if draw(st.integers(0, 9)) == 0:
        body = draw(st.binary(max_size=100))
    size = len(body) if draw(st.integers(0, 9)) else draw(st.integers(0, 255))
    return bytes((jk_nw.CELLS_TAG, size)) + body


@st.composite
def tag_sequences(draw: st.DrawFn) -> tuple[bytes, bool]:
    """A reply payload made of tagged fields; the flag says it is well formed (decoding must then work).

    Half the time every known tag is present (in random order), so the model mapping gets a full reply;
    otherwise a random subset. Now and then a field is replaced by an unknown tag, gets a wrong length or
    is repeated.
    """
    if draw(st.booleans()):
        tags = draw(st.permutations(KNOWN_TAGS))
    else:
        tags = draw(st.lists(st.sampled_from(KNOWN_TAGS), unique=True, max_size=len(KNOWN_TAGS)))
    # One sequence in two has no injected fault; the others get one in every 8 or 40 fields.
    fault_odds = draw(st.sampled_from((0, 0, 8, 40)))
    parts: list[bytes] = []
    clean = True
    if draw(st.integers(0, 4)):
        block = draw(cell_blocks())
        size = block[1]
        numbers = sorted(block[2 + 3 * i] for i in range(len(block[2:]) // 3))
        clean = size == len(block) - 2 and size % 3 == 0 and numbers == list(range(1, size // 3 + 1))
        parts.append(block)
    for tag in tags:
        length = jk_nw.TAGS[tag].length
        fault = draw(st.integers(0, fault_odds - 1)) if fault_odds else None
        if fault == 0:
            unknown = draw(st.sampled_from(UNKNOWN_TAGS))
            parts.append(bytes((unknown,)) + draw(st.binary(max_size=4)))
            clean = False
            continue
        if fault == 1:
            length = draw(st.integers(0, length + 2))  # a wrong length shifts the rest of the walk
            clean = clean and length == jk_nw.TAGS[tag].length
        field = bytes((tag,)) + draw(st.binary(min_size=length, max_size=length))
        if tag == jk_nw.PROTOCOL_VERSION_TAG and length == 1:
            clean = clean and field[1] in jk_nw.KNOWN_PROTOCOL_VERSIONS
        parts.append(field)
        if fault == 2:
            parts.append(field)
            clean = False
    return b"".join(parts), clean


@FUZZ
@given(tag_sequences(), st.sampled_from([0x00, 0x01, 0x01, 0x01, 0x02]))
def test_random_tag_sequences(case: tuple[bytes, bool], frame_type: int) -> None:
    payload, clean = case
    frame = wrap(payload, frame_type=frame_type)
    if len(frame) > jk_nw.MAX_FRAME_LEN:
        clean = False
    reply = _decode_or_frame_error(frame)
    if clean and frame_type == 0x01:
        assert reply is not None, "a well-formed payload must decode"


# --- plain random bytes -------------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    _decode_or_frame_error(data)


@FUZZ
@given(st.binary(max_size=400), st.sampled_from(("as is", "length", "sealed")))
def test_random_bytes_after_the_start_marker(rest: bytes, fix: str) -> None:
    """Random bytes behind ``4E 57``: as they come, with a matching length field, or with a whole valid
    envelope (length, end marker and checksum) around random header and payload bytes."""
    data = bytearray(b"\x4e\x57" + rest)
    if fix != "as is" and len(data) >= 4:
        data[2:4] = (len(data) - 2).to_bytes(2, "big")
    if fix == "sealed" and len(data) >= 20:
        data[-5] = 0x68
        data[-4:] = b"\x00\x00" + sum16(bytes(data[:-4])).to_bytes(2, "big")
    _decode_or_frame_error(bytes(data))
