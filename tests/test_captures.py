"""The corpus of real captures (``tests/data/captures/``, format in its README): every capture decodes, through
the project's own codecs, to the values its author states, and where a battery sent it, our profile sends the same
state as the same bytes, except the fields the capture names as the vendor's own.

The expected values come from the capture files, which take them from the capture's author (``stated_values``) or
work them out by hand from a specification the file names (``decoded_values``), never from this project's notes
or code. Where the author's number and the bytes disagree, the file keeps both: ``value`` is what the author
wrote, ``codec_value`` what the bytes carry by the specification, and ``why`` says which and why.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlparse

import can
import pytest
from rs485_fixtures import limits, reading
from test_cli_tools import restore_logging

from gateway.bms import jk_modbus, jk_nw
from gateway.cli import main
from gateway.cli.monitor import FrameMonitor
from gateway.profiles import CanFrameCodec, load_profile
from gateway.rs485.profile import load_rs485_profile
from gateway.rs485.pylontech_ascii import PylontechResponder, build_request, decode_frame, parse_frame
from gateway.rs485.values import battery_view
from gateway.values import FLAG_VALUES, NUMERIC_VALUES, TEXT_VALUES, Value

CAPTURE_DIR: Final = Path(__file__).parent / "data" / "captures"
CAPTURES: Final[dict[str, dict[str, Any]]] = {
    path.stem: json.loads(path.read_text(encoding="utf-8")) for path in sorted(CAPTURE_DIR.glob("*.json"))
}
PROTOCOLS: Final = ("can", "pylontech-rs485", "jk-nw", "jk-pb-modbus")
FLOAT_TOLERANCE: Final = 1e-9

__all__ = ["restore_logging"]  # test_cli_tools' autouse fixture: undoes main()'s logging set-up


def _of(protocol: str) -> list[str]:
    return [name for name, capture in CAPTURES.items() if capture["protocol"] == protocol]


def _source_key(source: Mapping[str, str]) -> str:
    """One name per source: a repository, or a URL's host and first path segments (one blog, one project)."""
    if "repository" in source:
        return source["repository"].lower()
    url = urlparse(source["url"])
    parts = [part for part in url.path.split("/") if part]
    return url.netloc + ("/" + "/".join(parts[:2]) if url.netloc == "github.com" else "")


def _expectations(capture: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    yield from capture["stated_values"]
    decoded = capture.get("decoded_values")
    if decoded is not None:
        yield from decoded["values"]


def _want(expectation: Mapping[str, Any]) -> Any:
    return expectation.get("codec_value", expectation["value"])


def _assert_same(got: Any, want: Any, what: str, tolerance: float = FLOAT_TOLERANCE) -> None:
    if isinstance(want, list):
        assert isinstance(got, list | tuple), f"{what}: {got!r}, want a list"
        assert len(got) == len(want), f"{what}: {len(got)} items, want {len(want)}"
        for index, (item, wanted) in enumerate(zip(got, want, strict=True)):
            _assert_same(item, wanted, f"{what}[{index}]", tolerance)
    elif isinstance(want, bool | str):
        assert got == want, f"{what}: {got!r}, want {want!r}"
    else:
        assert isinstance(got, int | float) and not isinstance(got, bool), f"{what}: {got!r}, want a number"
        assert math.isclose(got, want, rel_tol=0, abs_tol=tolerance), f"{what}: {got!r}, want {want!r}"


def _resolve(fields: Mapping[str, Any], path: str) -> Any:
    """A dotted path into decoded fields: ``modules.0.current``; ``#`` is the length of what it follows."""
    node: Any = fields
    for part in path.split("."):
        if part == "#":
            node = len(node)
        elif isinstance(node, Mapping):
            node = node[part]
        else:
            node = node[int(part)]
    return node


# --- the corpus itself ------------------------------------------------------------------------------------------


def test_corpus_has_at_least_8_captures_from_4_sources() -> None:
    assert len(CAPTURES) >= 8
    sources = {_source_key(capture["source"]) for capture in CAPTURES.values()}
    assert len(sources) >= 4, sorted(sources)


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_capture_names_its_device_source_frames_and_values(name: str) -> None:
    capture = CAPTURES[name]
    assert capture["protocol"] in PROTOCOLS
    assert capture["device"] and capture["title"] and capture["sender"] in ("battery", "bms")
    source = capture["source"]
    assert ("url" in source) != ("repository" in source), "a source is a URL or a repository (+ path)"
    assert "repository" not in source or source["path"]
    assert source["where"], "which comment, test or section of the source holds the bytes"
    assert capture["frames"]
    expectations = list(_expectations(capture))
    assert expectations, "a capture without values decodes to nothing checkable"
    for expectation in expectations:
        assert "value" in expectation and "field" in expectation
        if "codec_value" in expectation:  # author and bytes disagree: say why, never silently
            assert expectation["why"]
    assert capture["stated_values"] or "per" in capture["decoded_values"]
    if capture["sender"] == "battery":
        assert capture["encode"] is not None or capture["encode_note"]


# --- CAN: the profile's codec, as monitor decodes -----------------------------------------------------------------


def _can_frames(capture: Mapping[str, Any]) -> dict[int, bytes]:
    return {int(frame["id"], 16): bytes.fromhex(frame["data"]) for frame in capture["frames"]}


@pytest.mark.parametrize("name", _of("can"))
def test_can_capture_decodes_to_its_values(name: str) -> None:
    capture = CAPTURES[name]
    profile = load_profile(capture["profile"])
    frames = _can_frames(capture)
    for expectation in _expectations(capture):
        can_id = int(expectation["frame"], 16)
        decoded = profile.frame(can_id).decode(frames[can_id])
        _assert_same(decoded[expectation["field"]], _want(expectation), f"{name} {expectation['frame']}")


@pytest.mark.parametrize("name", _of("can"))
def test_can_capture_through_the_monitor_names_every_frame_of_the_profile(name: str) -> None:
    capture = CAPTURES[name]
    profile = load_profile(capture["profile"])
    lines: list[str] = []

    class Out:
        def write(self, text: str) -> None:
            lines.extend(line for line in text.splitlines() if line)

        def flush(self) -> None:
            pass

    monitor = FrameMonitor(profile, Out())  # type: ignore[arg-type]
    frames = _can_frames(capture)
    for can_id, data in frames.items():
        monitor.show(can.Message(arbitration_id=can_id, data=data, is_extended_id=False), 0.0)
    assert monitor.frames == len(frames) == len(lines)
    sent = {codec.can_id: codec for codec in profile.frames}
    not_sent = {int(can_id, 16) for can_id in capture["encode"].get("not_sent", {})}
    for can_id, line in zip(frames, lines, strict=True):
        if can_id in sent:
            assert f" bat 0x{can_id:03X} {sent[can_id].name} " in line, line
        else:  # the inverter's own frames and what the profile does not send are shown raw
            assert f" --- 0x{can_id:03X} ? " in line, line
            assert can_id in not_sent, f"0x{can_id:03X} is neither decoded nor listed as not sent"


def _published_values(capture_values: Mapping[str, Value]) -> dict[str, Value]:
    """Every published value: numbers 0, flags false, texts empty, then the capture's state."""
    values: dict[str, Value] = dict.fromkeys(NUMERIC_VALUES, 0.0)
    values.update(dict.fromkeys(FLAG_VALUES, False))
    values.update(dict.fromkeys(TEXT_VALUES, ""))
    values.update(capture_values)
    return values


def _excepted_mask(codec: CanFrameCodec, excepted: Mapping[str, str]) -> set[int]:
    """The byte positions of the fields a vendor fills with its own values."""
    fields = {field.name: field for field in codec.spec.fields}
    unknown = set(excepted) - set(fields)
    assert not unknown, f"{codec.label}: excepted fields the profile does not have: {sorted(unknown)}"
    return {byte for name in excepted for byte in range(fields[name].offset, fields[name].offset + fields[name].size)}


@pytest.mark.parametrize("name", [name for name in _of("can") if CAPTURES[name]["sender"] == "battery"])
def test_can_profile_encodes_the_captured_state_to_the_captured_bytes(name: str) -> None:
    capture = CAPTURES[name]
    encode = capture["encode"]
    profile = load_profile(capture["profile"])
    values = _published_values(encode["values"])
    captured = _can_frames(capture)
    sent = {codec.can_id: codec for codec in profile.frames}
    assert set(captured) - set(sent) == {int(can_id, 16) for can_id in encode.get("not_sent", {})}
    dlc_differs = {int(can_id, 16) for can_id in encode["dlc_differs"]}
    for can_id, codec in sent.items():
        assert can_id in captured, f"{name}: the profile sends 0x{can_id:03X}, the capture has none"
        ours, theirs = codec.encode(values), captured[can_id]
        assert (len(ours) != len(theirs)) == (can_id in dlc_differs), f"0x{can_id:03X}: DLC {len(ours)}/{len(theirs)}"
        excepted = _excepted_mask(codec, encode["excepted_fields"].get(f"0x{can_id:03X}", {}))
        for byte in range(min(len(ours), len(theirs))):
            if byte not in excepted:
                assert ours[byte] == theirs[byte], (
                    f"{name} 0x{can_id:03X} byte {byte}: ours {ours.hex(' ')}, captured {theirs.hex(' ')}"
                )
        for byte in excepted:  # an excepted field must really differ, or the exception hides nothing
            assert byte < len(theirs)
        if excepted:
            assert any(ours[byte] != theirs[byte] for byte in excepted), f"0x{can_id:03X}: excepted but equal"


# --- Pylontech RS485 ----------------------------------------------------------------------------------------------


PYLONTECH: Final = load_rs485_profile("pylontech-rs485").pylontech
assert PYLONTECH is not None


@pytest.mark.parametrize("name", _of("pylontech-rs485"))
def test_pylontech_capture_decodes_to_its_values(name: str) -> None:
    capture = CAPTURES[name]
    (frame,) = capture["frames"]
    decoded = decode_frame(frame["response"].encode("ascii"), PYLONTECH, request_cid2=int(frame["request_cid2"], 16))
    assert decoded["return_name"] == "ok"
    for expectation in _expectations(capture):
        got = _resolve(decoded["fields"], expectation["field"])
        _assert_same(got, _want(expectation), f"{name} {expectation['field']}")
    if frame["request"] is not None:
        request = decode_frame(frame["request"].encode("ascii"), PYLONTECH)
        assert request["kind"] == "request" and request["cid2"] == int(frame["request_cid2"], 16)


@pytest.mark.parametrize("name", [name for name in _of("pylontech-rs485") if CAPTURES[name]["encode"] is not None])
def test_pylontech_responder_answers_the_captured_state_with_the_captured_bytes(name: str) -> None:
    capture = CAPTURES[name]
    encode = capture["encode"]
    (frame,) = capture["frames"]
    cid2 = int(encode["command"], 16)
    address = parse_frame(frame["response"].encode("ascii")).address
    view = battery_view((reading(),), limits(**encode["limits"]), comm_alarm=False, base_address=address)
    answer = PylontechResponder(PYLONTECH, address).respond(
        build_request(address, cid2, bytes.fromhex(encode["request_info"])), view
    )
    assert not encode["excepted"]  # every byte compared (none of these answers carries vendor-own fields yet)
    assert answer == frame["response"].encode("ascii")


# --- JK (the BMS side: decoded only) ------------------------------------------------------------------------------


def _jk_fields(capture: Mapping[str, Any]) -> Mapping[str, Any]:
    (frame,) = capture["frames"]
    raw = bytes.fromhex(frame["hex"])
    if capture["protocol"] == "jk-nw":
        return jk_nw.decode_reply(raw).fields
    return jk_modbus.decode(jk_modbus.parse_frame(raw))


@pytest.mark.parametrize("name", _of("jk-nw") + _of("jk-pb-modbus"))
def test_jk_capture_decodes_to_its_values(name: str) -> None:
    capture = CAPTURES[name]
    fields = _jk_fields(capture)
    for expectation in _expectations(capture):
        got = fields[expectation["field"]]
        want = _want(expectation)
        if isinstance(want, list):
            got = got[: len(want)]  # JK-PB frames carry 32 cell slots, the pack uses the first ones
        _assert_same(got, want, f"{name} {expectation['field']}", expectation.get("tolerance", FLOAT_TOLERANCE))


# --- offline: the captures through ``monitor --log`` / ``--hex`` ----------------------------------------------------


def _count_line(err: str) -> str:
    """The count line ``monitor`` ends a recorded file with."""
    (line,) = [line for line in err.splitlines() if re.search(r": \d+ frames, ", line)]
    return line


@pytest.mark.parametrize("name", _of("can"))
def test_can_capture_through_monitor_log(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The capture as a candump log written by python-can (its own writer; the captures carry no timestamps, so
    they are 0.1 s apart), decoded by ``monitor --log`` with the capture's profile."""
    capture = CAPTURES[name]
    frames = _can_frames(capture)
    log = tmp_path / f"{name}.log"
    with can.Logger(log) as logger:
        for index, (can_id, data) in enumerate(frames.items()):
            logger.on_message_received(
                can.Message(timestamp=1000 + index / 10, arbitration_id=can_id, data=data, is_extended_id=False)
            )
    assert main(["monitor", "--profile", capture["profile"], "--log", str(log)]) == 0
    out, err = capsys.readouterr()
    unknown = len(capture["encode"].get("not_sent", {}))
    assert len(out.splitlines()) == len(frames), out
    assert f": {len(frames)} frames, {unknown} with an id the profile does not know, 0 not decodable" in (
        _count_line(err)
    )
    text = " ".join(out.split())
    for expectation in _expectations(capture):
        want = _want(expectation)
        if isinstance(want, float) and not isinstance(want, bool):
            assert re.search(rf"\b{expectation['field']}={want:g}\d*\b", text), (expectation, text)


@pytest.mark.parametrize(
    "name", [name for name in _of("pylontech-rs485") if CAPTURES[name]["frames"][0]["request"] is not None]
)
def test_pylontech_capture_through_monitor_hex(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Request and answer as the text they are on the wire (only captures whose request was published)."""
    capture = CAPTURES[name]
    (frame,) = capture["frames"]
    path = tmp_path / f"{name}.hex"
    path.write_text(f"# {capture['title']}\n{frame['request'].rstrip()}\n{frame['response'].rstrip()}\n")
    assert main(["monitor", "--profile", capture["profile"], "--hex", str(path)]) == 0
    out, err = capsys.readouterr()
    request, answer = out.splitlines()
    assert " inv " in request and " bat " in answer, out
    assert ": 2 frames, 0 not decoded" in _count_line(err)
    text = " ".join(answer.split())
    for expectation in _expectations(capture):
        want = _want(expectation)
        if isinstance(want, float) and "." not in expectation["field"]:
            assert re.search(rf"\b{expectation['field']}={want:g}\d*\b", text), (expectation, text)
