"""The profile schema: parsed YAML data in, validated frozen specs out.

A profile is data, never code. This module turns the plain Python objects that ``yaml.safe_load`` returns
into :class:`ProfileSpec`, :class:`FrameSpec` and :class:`FieldSpec`, and rejects anything wrong with a
:class:`~gateway.errors.ProfileError` whose one-line message names the file, the frame and the field, e.g.::

    profiles/x.yaml: frame 0x351 field 'charge_current_limit': overlaps field 'charge_voltage_limit' (bytes 0-1)

It does no I/O and builds no encoders: :mod:`gateway.profiles.codec` compiles the specs,
:mod:`gateway.profiles.merge` applies ``extends:`` and :mod:`gateway.profiles.loader` reads files.
``profiles/README.md`` is the same reference as one table of keys.

Top level (one YAML file per inverter protocol variant; ``*`` = required unless inherited with ``extends``)::

    name: sma-sunny-island    * the profile's name; built-in files are named <name>.yaml
    description: ...          * one line
    aliases: [sunsynk]          further names ``load_profile`` accepts; never inherited
    extends: pylontech-can      base profile: a built-in name or alias, or a path relative to this file
    remove_frames: [0x35C]      (only with extends) base frames (sent or inverter) to drop
    inverters: [..]             inverters this profile serves (shown by ``bms-gateway profiles``)
    sources: [..]               specifications followed
    confirmed_by: [..]          public reports of the protocol on real inverters (:mod:`.sources`; not inherited)
    inverter_behaviour: {..}    how the inverter reacts to 0 A and to silence (:mod:`.behaviour`; not inherited)
    transport: can            * the only transport so far
    bitrate: 500000           * CAN bit rate, bit/s
    byte_order: little          default of every multi-byte field: little | big
    mode: broadcast             broadcast: send every frame each period_s | request: send the whole set
                                once per request frame received, nothing otherwise
    request: {id: 0x301}        (mode request only, then required) the inverter's request frame id
    period_s: 1.0               default period_s of sent frames, s (not in mode request)
    min_gap_s: 0.2              default min_gap_s of sent frames, s (default 0)
    heartbeat:                  the inverter's alive frame (optional; one of inverter_frames)
      id: 0x305               *
      timeout_s: 10             no heartbeat for this long = inverter lost, s (default 10; at least twice
                                the heartbeat frame's period_s, so one late frame is never a loss)
      on_lost: keep_sending     keep_sending (log and show it) | stop (send nothing while lost, except one
                                whole set every retry_after_s); stop is not allowed in mode request
      retry_after_s: 120        (on_lost stop only, then required) s between retry sets
    failsafe:                 *
      silence_after_s: 60     * with stale BMS data, stop sending after this long, s
      stale: zeros              zeros (stale data: currents 0, enables cleared, comm alarm, until
                                silence_after_s) | silence (stale data: send nothing at once)
    frames: [frame, ..]       * what the battery (we) sends, in this order
    inverter_frames: [..]       what the inverter sends; its values are decoded and kept (see below)

    frame: id *, name (default the hex id), dlc * (0-8, every payload is exactly this long),
           period_s * (s; not allowed in mode request, where it is 0), min_gap_s (s, at most period_s: no two
           sends of this id closer than this, even when a falling limit goes out at once),
           fields * [field, ..], remove_fields: [names] (only with extends, for a frame of the base),
           sources: [..] where its layout comes from, or ["unverified: <why>"] (:mod:`.sources`)
           (an inverter frame has id, name, dlc, period_s = its expected period, fields; no min_gap_s)

    field: name *, offset * (first byte), then exactly one kind key:
      value: <name>          a number; size 1|2|4, signed, scale (units per count), value_offset (value at
                             raw 0), byte_order, min/max (clamp, in the value's unit), invalid_when_missing
                             raw = round((value - value_offset) / scale), saturated at the field's range; a
                             limit rounds its magnitude towards safety instead (SAFE_ROUNDING of values.py);
                             rounding: nearest (default) | floor (for protocols whose sources truncate);
                             negate: true for a protocol whose sign is the opposite of ours (the wire
                             carries -value: raw = round((-value - value_offset) / scale))
      flags: [<flag>, ..]    one bit: bit 0-7, set when ANY named flag is true
      pair: [<flag>, ..]     an SMA-style 2-bit alarm: bit 0|2|4|6 = the pair's low bit; any flag true
                             (raised) -> 0b01, all false (cleared) -> 0b10
      text: "PYLON"          ASCII; size (bytes), pad: nul | space
      text_value: <name>     ASCII text of a text value (:data:`~gateway.values.TEXT_VALUES`), cut to size
                             (bytes), pad: nul | space
      constant: <int>        size 1|2|4 (signed, byte_order), or bit 0-7 (constant 0 or 1)
      invalid: true          an unused number that always carries the invalid marker; size 1|2|4, signed,
                             byte_order

Invalid marker (:func:`invalid_marker`): all ones unsigned (0xFF, 0xFFFF, 0xFFFFFFFF), the most negative
number signed (0x80, 0x8000, 0x80000000), in the field's byte order. A value field with
``invalid_when_missing: true`` sends the marker when its value is missing, None or NaN, and never sends the
marker for a real value: its saturation range stops one count short of the marker. Decoding gives NaN for a
marker in such a field or an ``invalid`` field.

Names: value fields of sent frames name :data:`~gateway.values.NUMERIC_VALUES`, flags and pairs
:data:`~gateway.values.FLAG_VALUES`; value fields of inverter frames name :data:`INVERTER_VALUE_NAMES`
(inverter frames carry no flags). The merge rule of ``extends`` is in :mod:`gateway.profiles.merge`.
"""

from __future__ import annotations

import difflib
import enum
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, NoReturn

from gateway.errors import ProfileError
from gateway.profiles.behaviour import InverterBehaviour, parse_inverter_behaviour
from gateway.profiles.sources import parse_confirmed_by, parse_sources
from gateway.values import FLAG_VALUES, NUMERIC_VALUES, TEXT_VALUES, VALUE_NAMES

ByteOrder = Literal["little", "big"]

INTEGER_SIZES: Final = (1, 2, 4)
"""Byte sizes an integer (value, constant or invalid) field may have."""
PAIR_BITS: Final = (0, 2, 4, 6)
"""Bits a 2-bit alarm pair may start at (its low bit)."""
PAIR_RAISED: Final = 0b01
"""A pair's state when raised: SMA "lower bit = raised"."""
PAIR_CLEARED: Final = 0b10
"""A pair's state when cleared: SMA "upper bit = cleared"."""
MAX_CLASSIC_DLC: Final = 8
"""Largest data length of a classic CAN frame, bytes."""
MAX_STANDARD_ID: Final = 0x7FF
"""Largest 11-bit standard CAN identifier."""
TRANSPORTS: Final = ("can",)
"""Transports a profile may name."""
DEFAULT_HEARTBEAT_TIMEOUT_S: Final = 10.0
"""Heartbeat timeout when a profile gives none, s: Deye answers late now and then (every ~2 h)."""
HEARTBEAT_TOLERANCE: Final = 2
"""timeout_s must be at least this many heartbeat periods: one late frame must not count as lost."""

INVERTER_VALUE_NAMES: Final[Mapping[str, str]] = {
    "inverter_voltage_v": "battery voltage the inverter measures, V",
    "inverter_current_a": "battery current the inverter measures, A, + charging",
    "inverter_temperature_c": "battery temperature the inverter measures, °C",
    "inverter_soc_pct": "state of charge the inverter uses, %",
    "inverter_soh_pct": "state of health the inverter uses, %",
    "inverter_charge_voltage_setpoint_v": "the inverter's charge voltage set-point, V",
    "inverter_charge_procedure": "the inverter's charge procedure code",
    "inverter_operating_state": "the inverter's operating state code",
    "inverter_error_code": "the inverter's active error code",
    "inverter_power_w": "battery power the inverter measures, W, + charging",
}
"""Names the value fields of inverter frames may carry (SMA 0x305/0x306 and the like), with units."""


class FieldKind(enum.StrEnum):
    """What a field carries; named after the YAML key that selects it."""

    VALUE = "value"
    FLAGS = "flags"
    PAIR = "pair"
    TEXT = "text"
    TEXT_VALUE = "text_value"
    CONSTANT = "constant"
    INVALID = "invalid"


class SendMode(enum.StrEnum):
    """When the frames go out."""

    BROADCAST = "broadcast"
    """Every frame every period_s."""
    REQUEST = "request"
    """The whole set once per request frame from the inverter; nothing otherwise."""


class OnLost(enum.StrEnum):
    """What the gateway does while the inverter's heartbeat is lost."""

    KEEP_SENDING = "keep_sending"
    STOP = "stop"
    """Send nothing, except one whole set every ``retry_after_s``."""


class StaleAction(enum.StrEnum):
    """What the gateway sends while the BMS data is stale (older than the BMS timeout)."""

    ZEROS = "zeros"
    """Currents 0, enables cleared, comm alarm; silence only after ``silence_after_s``."""
    SILENCE = "silence"
    """Nothing, at once."""


_TOP_KEYS: Final = (
    "name",
    "description",
    "aliases",
    "extends",
    "remove_frames",
    "inverters",
    "sources",
    "confirmed_by",
    "inverter_behaviour",
    "transport",
    "bitrate",
    "byte_order",
    "mode",
    "request",
    "period_s",
    "min_gap_s",
    "heartbeat",
    "failsafe",
    "frames",
    "inverter_frames",
)
_HEARTBEAT_KEYS: Final = ("id", "timeout_s", "on_lost", "retry_after_s")
_FAILSAFE_KEYS: Final = ("silence_after_s", "stale")
_REQUEST_KEYS: Final = ("id",)
_FRAME_KEYS: Final = ("id", "name", "period_s", "min_gap_s", "dlc", "fields", "remove_fields", "sources")
_KIND_KEYS: Final = tuple(kind.value for kind in FieldKind)
_FIELD_KEYS: Final = (
    "name",
    "offset",
    "size",
    "bit",
    "signed",
    "scale",
    "value_offset",
    "min",
    "max",
    "byte_order",
    "pad",
    "invalid_when_missing",
    "rounding",
    "negate",
    *_KIND_KEYS,
)

_KIND_EXTRA_KEYS: Final[Mapping[FieldKind, frozenset[str]]] = {
    FieldKind.VALUE: frozenset(
        {
            "size",
            "signed",
            "scale",
            "value_offset",
            "min",
            "max",
            "byte_order",
            "invalid_when_missing",
            "rounding",
            "negate",
        }
    ),
    FieldKind.FLAGS: frozenset({"bit"}),
    FieldKind.PAIR: frozenset({"bit"}),
    FieldKind.TEXT: frozenset({"size", "pad"}),
    FieldKind.TEXT_VALUE: frozenset({"size", "pad"}),
    FieldKind.CONSTANT: frozenset({"size", "bit", "signed", "byte_order"}),
    FieldKind.INVALID: frozenset({"size", "signed", "byte_order"}),
}
"""Keys, besides ``name``, ``offset`` and the kind key itself, that each kind of field accepts."""

_PAD_BYTES: Final[Mapping[str, bytes]] = {"nul": b"\x00", "space": b" "}


def invalid_marker(size: int, *, signed: bool) -> int:
    """The raw "not available" integer of a ``size``-byte field: all ones unsigned, the most negative signed.

    1 byte: 0xFF / -128 (0x80); 2 bytes: 0xFFFF / -32768 (0x8000); 4 bytes: 0xFFFFFFFF / 0x80000000.
    """
    bits = 8 * size
    return -(1 << (bits - 1)) if signed else (1 << bits) - 1


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One validated field of a frame. Byte offsets count from 0; bit 0 is a byte's least significant bit."""

    name: str
    """Field name, unique in its frame; the key of :meth:`CanFrameCodec.decode` results."""
    kind: FieldKind
    offset: int
    """First byte of the field, bytes from the frame start."""
    size: int
    """Length, bytes (1 for a bit field or pair)."""
    bit: int | None = None
    """Bit number 0-7 within byte ``offset`` of a bit field (the low bit of a pair); None for whole bytes."""
    signed: bool = False
    """Two's-complement integer (value, constant and invalid fields)."""
    scale: float = 1
    """Physical units per raw count: ``raw = round((value - value_offset) / scale)``."""
    value_offset: float = 0
    """Physical value at raw 0, in the value's unit."""
    byte_order: ByteOrder = "little"
    """Byte order of a multi-byte integer field."""
    value: str | None = None
    """Value name of a value field (a numeric value, or an inverter value in an inverter frame), or the text
    value of a text_value field."""
    flags: tuple[str, ...] = ()
    """Flag names of a flags or pair field: set (raised) when any is true."""
    text: str | None = None
    """ASCII constant of a text field, before padding."""
    pad: Literal["nul", "space"] = "nul"
    """What fills a text field after its text."""
    constant: int | None = None
    """Raw integer of a constant field."""
    minimum: float | None = None
    """Smallest physical value a value field sends (YAML ``min``); lower values saturate here."""
    maximum: float | None = None
    """Largest physical value a value field sends (YAML ``max``); higher values saturate here."""
    invalid_when_missing: bool = False
    """A value field sends :attr:`invalid_raw` when its value is missing, None or NaN."""
    negate: bool = False
    """The wire carries the value with the opposite sign (e.g. SMA's 0x305 current, negative while charging)."""
    rounding: Literal["nearest", "floor"] = "nearest"
    """How a value field's scaled value becomes an integer: to the nearest, or down (as the sources of some
    protocols truncate)."""

    @property
    def is_bit(self) -> bool:
        """The field is a single bit or a 2-bit pair."""
        return self.bit is not None

    @property
    def bit_width(self) -> int:
        """Bits the field occupies: 1 for a bit field, 2 for a pair, ``8 * size`` otherwise."""
        if self.kind is FieldKind.PAIR:
            return 2
        return 1 if self.bit is not None else 8 * self.size

    @property
    def span(self) -> str:
        """Where the field sits, for messages: ``bytes 0-1``, ``byte 4``, ``byte 0 bit 3`` or ``byte 0 bits 2-3``."""
        if self.kind is FieldKind.PAIR and self.bit is not None:
            return f"byte {self.offset} bits {self.bit}-{self.bit + 1}"
        if self.bit is not None:
            return f"byte {self.offset} bit {self.bit}"
        return _byte_span(self.offset, self.size)

    @property
    def raw_range(self) -> tuple[int, int]:
        """Smallest and largest raw integer the field can hold."""
        if self.bit is not None:
            return 0, (1 << self.bit_width) - 1
        bits = 8 * self.size
        if self.signed:
            return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        return 0, (1 << bits) - 1

    @property
    def invalid_raw(self) -> int | None:
        """The invalid marker of an ``invalid`` field or an ``invalid_when_missing`` value field, else None."""
        if self.kind is FieldKind.INVALID or self.invalid_when_missing:
            return invalid_marker(self.size, signed=self.signed)
        return None

    @property
    def clamp_range(self) -> tuple[int, int]:
        """Smallest and largest raw integer a value field sends for a real value.

        :attr:`raw_range`, narrowed by min/max, and by one count at the marker's end when the field has an
        invalid marker (so that no real value ever reads as "not available").
        """
        low, high = self.raw_range
        if self.minimum is not None:
            low = max(low, math.ceil((self.minimum - self.value_offset) / self.scale - 1e-9))
        if self.maximum is not None:
            high = min(high, math.floor((self.maximum - self.value_offset) / self.scale + 1e-9))
        marker = self.invalid_raw
        if marker is not None:
            low, high = (max(low, marker + 1), high) if self.signed else (low, min(high, marker - 1))
        return low, high

    @property
    def text_bytes(self) -> bytes:
        """The padded bytes of a text field, exactly ``size`` long."""
        raw = (self.text or "").encode("ascii")
        return raw + _PAD_BYTES[self.pad] * (self.size - len(raw))


@dataclass(frozen=True, slots=True)
class FrameSpec:
    """One validated CAN frame."""

    can_id: int
    """11-bit standard CAN identifier."""
    name: str
    """Short name for logs and messages (defaults to the hex id)."""
    period_s: float
    """Transmit period, s (for an inverter frame: its expected period; 0 in request mode: only when asked)."""
    dlc: int
    """Data length, bytes: every encoded frame has exactly this many."""
    fields: tuple[FieldSpec, ...]
    """Fields in file order."""
    byte_order: ByteOrder
    """The profile's default byte order (fields may override theirs)."""
    min_gap_s: float = 0.0
    """Shortest time between two sends of this id, s (SMA: 0.2); 0: no limit."""
    sources: tuple[str, ...] = ()
    """Where its layout comes from, or one ``unverified: ...`` entry (:mod:`gateway.profiles.sources`)."""

    @property
    def label(self) -> str:
        """``frame 0x351``, as messages name it."""
        return f"frame {self.can_id:#05x}"


@dataclass(frozen=True, slots=True)
class HeartbeatSpec:
    """The frame the inverter sends to show it is alive, and what to do when it stops."""

    can_id: int
    """CAN identifier of the heartbeat frame (one of the profile's inverter frames)."""
    timeout_s: float
    """How long without a heartbeat counts as lost, s."""
    on_lost: OnLost = OnLost.KEEP_SENDING
    """What the gateway does while the heartbeat is lost."""
    retry_after_s: float | None = None
    """With ``on_lost: stop``: seconds between the single whole sets sent to retry; else None."""


@dataclass(frozen=True, slots=True)
class ProfileSpec:
    """A whole validated profile, before compilation."""

    name: str
    description: str
    inverters: tuple[str, ...]
    sources: tuple[str, ...]
    transport: str
    bitrate: int
    """CAN bit rate, bit/s."""
    byte_order: ByteOrder
    heartbeat: HeartbeatSpec | None
    silence_after_s: float
    """Stop transmitting after this long with stale BMS data, s."""
    frames: tuple[FrameSpec, ...]
    inverter_frames: tuple[FrameSpec, ...]
    aliases: tuple[str, ...] = ()
    """Further names the profile loads by."""
    mode: SendMode = SendMode.BROADCAST
    request_id: int | None = None
    """The inverter's request frame id in request mode; None in broadcast mode."""
    stale: StaleAction = StaleAction.ZEROS
    """What goes out while the BMS data is stale."""
    inverter_behaviour: InverterBehaviour | None = None
    """How the inverter reacts to 0 A and to silence, as the profile states it."""
    confirmed_by: tuple[str, ...] = ()
    """Public reports of this protocol on real inverters, ``<inverter>: <report>``."""


def _byte_span(offset: int, size: int) -> str:
    return f"byte {offset}" if size == 1 else f"bytes {offset}-{offset + size - 1}"


def _type_name(obj: object) -> str:
    return "null" if obj is None else type(obj).__name__


def _suggest(word: str, choices: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _is_standard_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_STANDARD_ID


class _Section:
    """A mapping from the YAML file with the label that error messages put in front of its problems."""

    def __init__(self, data: object, where: str, allowed: Sequence[str], required: Sequence[str]) -> None:
        self.where = where
        if not isinstance(data, Mapping):
            self.fail(f"must be a mapping, got {_type_name(data)}")
        self.data: Mapping[object, object] = data
        for key in data:
            if key not in allowed:
                hint = _suggest(str(key), allowed)
                more = f"did you mean '{hint}'?" if hint else "valid: " + ", ".join(sorted(allowed))
                self.fail(f"unknown key '{key}' ({more})")
        for key in required:
            if key not in data:
                self.fail(f"missing key '{key}'")

    def fail(self, problem: str) -> NoReturn:
        raise ProfileError(f"{self.where}: {problem}")

    def has(self, key: str) -> bool:
        return key in self.data

    def integer(self, key: str, default: int | None = None) -> int:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{key} must be an integer, got {value!r}")
        return value

    def can_id(self, key: str = "id") -> int:
        value = self.integer(key)
        if not 0 <= value <= MAX_STANDARD_ID:
            self.fail(f"{key} {value:#x} is not an 11-bit standard id (0x000-0x7ff)")
        return value

    def number(self, key: str, default: float | None = None) -> float:
        value = self.data.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            self.fail(f"{key} must be a number, got {value!r}")
        return value

    def positive(self, key: str, default: float | None = None) -> float:
        value = self.number(key, default)
        if value <= 0:
            self.fail(f"{key} must be > 0, got {value!r}")
        return value

    def non_negative(self, key: str, default: float | None = None) -> float:
        value = self.number(key, default)
        if value < 0:
            self.fail(f"{key} must be >= 0, got {value!r}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            self.fail(f"{key} must be true or false, got {value!r}")
        return value

    def string(self, key: str, default: str | None = None) -> str:
        value = self.data.get(key, default)
        if not isinstance(value, str) or not value:
            self.fail(f"{key} must be a non-empty string, got {value!r}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.fail(f"{key} must be a list of non-empty strings, got {value!r}")
        return tuple(value)

    def choice(self, key: str, choices: Sequence[str], default: str) -> str:
        value = self.data.get(key, default)
        if value not in choices:
            self.fail(f"{key} must be {' or '.join(choices)}, got {value!r}")
        assert isinstance(value, str)
        return value

    def byte_order(self, default: ByteOrder) -> ByteOrder:
        return "big" if self.choice("byte_order", ("little", "big"), default) == "big" else "little"

    def items(self, key: str) -> list[object]:
        value = self.data.get(key, [])
        if not isinstance(value, list):
            self.fail(f"{key} must be a list, got {_type_name(value)}")
        return value


@dataclass(frozen=True, slots=True)
class _FrameDefaults:
    """What every frame of one list inherits from the top level."""

    byte_order: ByteOrder
    mode: SendMode
    period_s: float | None
    """Top-level period_s of sent frames; None: each frame gives its own."""
    min_gap_s: float
    inverter: bool
    """The list is inverter_frames: inverter value names, no min_gap_s."""


def parse_profile(data: object, source: str) -> ProfileSpec:
    """Validate ``data`` (what ``yaml.safe_load`` returned for the file ``source``) into a :class:`ProfileSpec`.

    ``data`` must already have its ``extends`` applied (:func:`gateway.profiles.merge.merge_profiles`; the
    loader does that).

    :raises ProfileError: on the first problem found, naming ``source``, frame and field.
    """
    if not isinstance(data, Mapping):
        raise ProfileError(f"{source}: top level must be a mapping, got {_type_name(data)}")
    top = _Section(data, source, _TOP_KEYS, ("name", "description", "transport", "bitrate", "failsafe", "frames"))
    if top.has("extends"):
        top.fail("extends is applied by the loader: load the file with load_profile")
    if top.has("remove_frames"):
        top.fail("remove_frames applies only to a profile that extends another")
    name = top.string("name")
    description = top.string("description")
    aliases = _parse_aliases(top, name)
    inverters = top.strings("inverters")
    sources = top.strings("sources")
    inverter_behaviour = parse_inverter_behaviour(top.data, source)
    confirmed_by = parse_confirmed_by(top.data, source)
    transport = top.string("transport")
    if transport not in TRANSPORTS:
        top.fail(f"transport {transport!r} not supported (valid: {', '.join(TRANSPORTS)})")
    bitrate = top.integer("bitrate")
    if bitrate <= 0:
        top.fail(f"bitrate must be > 0, got {bitrate}")
    byte_order = top.byte_order("little")
    mode = SendMode(top.choice("mode", tuple(SendMode), SendMode.BROADCAST))
    if mode is SendMode.REQUEST and top.has("period_s"):
        top.fail("period_s does not apply to mode request (frames go out only when asked)")
    period_s = top.positive("period_s") if top.has("period_s") else None
    min_gap_s = top.non_negative("min_gap_s", 0.0)
    failsafe = _Section(top.data["failsafe"], f"{source}: failsafe", _FAILSAFE_KEYS, ("silence_after_s",))
    silence_after_s = failsafe.positive("silence_after_s")
    stale = StaleAction(failsafe.choice("stale", tuple(StaleAction), StaleAction.ZEROS))

    sent = _FrameDefaults(byte_order, mode, period_s, min_gap_s, inverter=False)
    frames = _parse_frames(top.items("frames"), "frames", source, sent, ())
    received = _FrameDefaults(byte_order, mode, None, 0.0, inverter=True)
    inverter_frames = _parse_frames(top.items("inverter_frames"), "inverter_frames", source, received, frames)

    request_id = _parse_request(top, source, mode, frames)
    heartbeat = _parse_heartbeat(top, source, mode, inverter_frames)
    return ProfileSpec(
        name=name,
        description=description,
        inverters=inverters,
        sources=sources,
        transport=transport,
        bitrate=bitrate,
        byte_order=byte_order,
        heartbeat=heartbeat,
        silence_after_s=silence_after_s,
        frames=frames,
        inverter_frames=inverter_frames,
        aliases=aliases,
        mode=mode,
        request_id=request_id,
        stale=stale,
        inverter_behaviour=inverter_behaviour,
        confirmed_by=confirmed_by,
    )


def _parse_aliases(top: _Section, name: str) -> tuple[str, ...]:
    aliases = top.strings("aliases")
    for index, alias in enumerate(aliases):
        if alias == name:
            top.fail(f"aliases: '{alias}' is the profile's own name")
        if alias in aliases[:index]:
            top.fail(f"aliases: '{alias}' given twice")
        if "/" in alias or "\\" in alias or alias.endswith((".yaml", ".yml")):
            top.fail(f"aliases: '{alias}' is not a plain name (no '/', '\\' or .yaml ending)")
    return aliases


def _parse_request(top: _Section, source: str, mode: SendMode, frames: tuple[FrameSpec, ...]) -> int | None:
    if mode is not SendMode.REQUEST:
        if top.has("request"):
            top.fail("request applies only to mode: request")
        return None
    if not top.has("request"):
        top.fail("mode request needs request: {id: <the inverter's request frame id>}")
    section = _Section(top.data["request"], f"{source}: request", _REQUEST_KEYS, _REQUEST_KEYS)
    can_id = section.can_id()
    if can_id in {frame.can_id for frame in frames}:
        section.fail(f"id {can_id:#05x} is one of the frames we send")
    return can_id


def _parse_heartbeat(
    top: _Section, source: str, mode: SendMode, inverter_frames: tuple[FrameSpec, ...]
) -> HeartbeatSpec | None:
    if not top.has("heartbeat"):
        return None
    section = _Section(top.data["heartbeat"], f"{source}: heartbeat", _HEARTBEAT_KEYS, ("id",))
    can_id = section.integer("id")
    frame = next((f for f in inverter_frames if f.can_id == can_id), None)
    if frame is None:
        section.fail(f"id {can_id:#05x} is not one of the inverter_frames")
    timeout_s = section.positive("timeout_s", DEFAULT_HEARTBEAT_TIMEOUT_S)
    if timeout_s < HEARTBEAT_TOLERANCE * frame.period_s:
        section.fail(
            f"timeout_s {timeout_s:g} is shorter than {HEARTBEAT_TOLERANCE} × the heartbeat's period_s"
            f" {frame.period_s:g}: one late frame would count as lost"
        )
    on_lost = OnLost(section.choice("on_lost", tuple(OnLost), OnLost.KEEP_SENDING))
    retry_after_s: float | None = None
    if on_lost is OnLost.STOP:
        if mode is SendMode.REQUEST:
            section.fail("on_lost stop does not apply to mode request (nothing is sent unless asked)")
        if not section.has("retry_after_s"):
            section.fail("on_lost stop needs retry_after_s (s between retry sets)")
        retry_after_s = section.positive("retry_after_s")
    elif section.has("retry_after_s"):
        section.fail("retry_after_s applies only to on_lost: stop")
    return HeartbeatSpec(can_id=can_id, timeout_s=timeout_s, on_lost=on_lost, retry_after_s=retry_after_s)


def _parse_frames(
    items: list[object], key: str, source: str, defaults: _FrameDefaults, earlier: tuple[FrameSpec, ...]
) -> tuple[FrameSpec, ...]:
    frames: list[FrameSpec] = []
    seen = {frame.can_id for frame in earlier}
    for index, item in enumerate(items):
        frame = _parse_frame(item, f"{source}: {key}[{index}]", source, defaults)
        if frame.can_id in seen:
            raise ProfileError(f"{source}: {frame.label}: duplicate frame id")
        seen.add(frame.can_id)
        frames.append(frame)
    return tuple(frames)


def _parse_frame(item: object, where: str, source: str, defaults: _FrameDefaults) -> FrameSpec:
    can_id = item.get("id") if isinstance(item, Mapping) else None
    if _is_standard_id(can_id):
        where = f"{source}: frame {can_id:#05x}"  # name the frame by its id as soon as it has a valid one
    request_mode = defaults.mode is SendMode.REQUEST and not defaults.inverter
    required = ["id", "dlc", "fields"]
    if defaults.inverter or (defaults.period_s is None and not request_mode):
        required.insert(1, "period_s")
    section = _Section(item, where, _FRAME_KEYS, required)
    can_id = section.can_id()
    if section.has("remove_fields"):
        section.fail("remove_fields applies only to a frame of the base of a profile that extends another")
    label = f"frame {can_id:#05x}"
    name = section.string("name", label.removeprefix("frame "))
    if request_mode:
        if section.has("period_s"):
            section.fail("period_s does not apply to mode request (frames go out only when asked)")
        period_s = 0.0
    else:
        period_s = section.positive("period_s", defaults.period_s)
    if defaults.inverter and section.has("min_gap_s"):
        section.fail("min_gap_s applies only to frames we send")
    min_gap_s = section.non_negative("min_gap_s", defaults.min_gap_s)
    if period_s and min_gap_s > period_s:
        section.fail(f"min_gap_s {min_gap_s:g} is longer than period_s {period_s:g}")
    dlc = section.integer("dlc")
    if not 0 <= dlc <= MAX_CLASSIC_DLC:
        section.fail(f"dlc must be 0-{MAX_CLASSIC_DLC}, got {dlc}")

    fields: list[FieldSpec] = []
    owners: dict[tuple[int, int], FieldSpec] = {}  # (byte, bit) -> the field painted there, to find overlaps
    for index, raw_field in enumerate(section.items("fields")):
        field = _parse_field(raw_field, index, f"{source}: {label}", defaults)
        field_where = f"{source}: {label} field '{field.name}'"
        if any(other.name == field.name for other in fields):
            raise ProfileError(f"{field_where}: duplicate field name")
        if field.offset + field.size > dlc:
            fits = "does" if field.size == 1 else "do"
            raise ProfileError(f"{field_where}: {_byte_span(field.offset, field.size)} {fits} not fit in dlc {dlc}")
        cells = (
            [(field.offset, bit) for bit in range(field.bit, field.bit + field.bit_width)]
            if field.bit is not None
            else [(byte, bit) for byte in range(field.offset, field.offset + field.size) for bit in range(8)]
        )
        for cell in cells:
            other = owners.get(cell)
            if other is not None:
                raise ProfileError(f"{field_where}: overlaps field '{other.name}' ({other.span})")
        owners.update(dict.fromkeys(cells, field))
        fields.append(field)
    return FrameSpec(
        can_id=can_id,
        name=name,
        period_s=period_s,
        dlc=dlc,
        fields=tuple(fields),
        byte_order=defaults.byte_order,
        min_gap_s=min_gap_s,
        sources=parse_sources(section.data, section.where),
    )


def _field_kind(section: _Section) -> FieldKind:
    kinds = [FieldKind(key) for key in _KIND_KEYS if section.has(key)]
    if FieldKind.INVALID in kinds and len(kinds) == 2:
        other = next(kind for kind in kinds if kind is not FieldKind.INVALID)
        section.fail(f"invalid: true marks an unused number and cannot go with {other} (leave one out)")
    if len(kinds) != 1:
        given = " and ".join(kinds) if kinds else "none"
        section.fail(f"needs exactly one of {', '.join(_KIND_KEYS)} (has {given})")
    kind = kinds[0]
    for key in section.data:
        if key not in ("name", "offset", kind) and key not in _KIND_EXTRA_KEYS[kind]:
            article = "an" if kind is FieldKind.INVALID else "a"
            section.fail(f"key '{key}' does not apply to {article} {kind} field")
    return kind


def _field_bit_and_size(section: _Section, kind: FieldKind) -> tuple[int | None, int]:
    if kind is FieldKind.FLAGS and not section.has("bit"):
        section.fail("a flags field needs 'bit' (0-7)")
    if kind is FieldKind.PAIR:
        if not section.has("bit"):
            section.fail("a pair field needs 'bit' (0, 2, 4 or 6: its low bit)")
        bit = section.integer("bit")
        if bit not in PAIR_BITS:
            section.fail(f"a pair field's bit must be 0, 2, 4 or 6 (its low bit), got {bit}")
        return bit, 1
    if kind is FieldKind.CONSTANT and section.has("bit") == section.has("size"):
        section.fail("a constant field needs exactly one of size, bit")
    if section.has("bit"):
        bit = section.integer("bit")
        if not 0 <= bit <= 7:
            section.fail(f"bit {bit} not in 0-7")
        return bit, 1
    size = section.integer("size")
    if kind in (FieldKind.TEXT, FieldKind.TEXT_VALUE):
        if size < 1:
            section.fail(f"size must be >= 1, got {size}")
    elif size not in INTEGER_SIZES:
        section.fail(f"size {size} not one of {', '.join(map(str, INTEGER_SIZES))}")
    return None, size


def _parse_field(item: object, index: int, frame_where: str, defaults: _FrameDefaults) -> FieldSpec:
    if isinstance(item, Mapping) and isinstance(item.get("name"), str) and item["name"]:
        where = f"{frame_where} field '{item['name']}'"
    else:
        where = f"{frame_where} fields[{index}]"
    section = _Section(item, where, _FIELD_KEYS, ("name", "offset"))
    name = section.string("name")
    kind = _field_kind(section)
    offset = section.integer("offset")
    if offset < 0:
        section.fail(f"offset must be >= 0, got {offset}")
    bit, size = _field_bit_and_size(section, kind)
    signed = section.boolean("signed", False)
    order = section.byte_order(defaults.byte_order)

    if kind is FieldKind.VALUE:
        return _value_field(section, name, offset, size, signed, order, inverter=defaults.inverter)
    if kind in (FieldKind.FLAGS, FieldKind.PAIR):
        flags = section.data[kind]
        if not isinstance(flags, list) or not flags or not all(isinstance(f, str) for f in flags):
            section.fail(f"{kind} must be a non-empty list of flag names, got {flags!r}")
        for flag in flags:
            _check_name(section, flag, numeric=False, inverter=defaults.inverter)
        return FieldSpec(name=name, kind=kind, offset=offset, size=size, bit=bit, flags=tuple(flags))
    if kind is FieldKind.TEXT:
        text = section.data["text"]
        if not isinstance(text, str):
            section.fail(f"text must be a string, got {text!r} (quote it in the YAML)")
        if not text.isascii():
            section.fail(f"text must be ASCII, got {text!r}")
        if len(text) > size:
            section.fail(f"text {text!r} is {len(text)} bytes, longer than size {size}")
        pad: Literal["nul", "space"] = "space" if section.choice("pad", ("nul", "space"), "nul") == "space" else "nul"
        return FieldSpec(name=name, kind=kind, offset=offset, size=size, text=text, pad=pad)
    if kind is FieldKind.TEXT_VALUE:
        value = section.string("text_value")
        if value not in TEXT_VALUES:
            hint = _suggest(value, TEXT_VALUES)
            section.fail(f"unknown text value '{value}'" + (f" (did you mean '{hint}'?)" if hint else ""))
        if defaults.inverter:
            section.fail("an inverter frame carries no text values")
        text_pad: Literal["nul", "space"] = (
            "space" if section.choice("pad", ("nul", "space"), "nul") == "space" else "nul"
        )
        return FieldSpec(name=name, kind=kind, offset=offset, size=size, value=value, pad=text_pad)
    if kind is FieldKind.INVALID:
        if section.data["invalid"] is not True:
            section.fail(f"invalid must be true, got {section.data['invalid']!r} (leave the field out instead)")
        return FieldSpec(name=name, kind=kind, offset=offset, size=size, signed=signed, byte_order=order)
    constant = section.integer("constant")
    spec = FieldSpec(
        name=name, kind=kind, offset=offset, size=size, bit=bit, signed=signed, byte_order=order, constant=constant
    )
    low, high = spec.raw_range
    if not low <= constant <= high:
        section.fail(f"constant {constant} out of range {low}..{high}")
    return spec


def _value_field(
    section: _Section, name: str, offset: int, size: int, signed: bool, order: ByteOrder, *, inverter: bool
) -> FieldSpec:
    value = section.string("value")
    _check_name(section, value, numeric=True, inverter=inverter)
    scale = section.number("scale", 1)
    if scale <= 0:
        section.fail(f"scale must be > 0, got {scale!r}")
    value_offset = section.number("value_offset", 0)
    minimum = section.number("min") if section.has("min") else None
    maximum = section.number("max") if section.has("max") else None
    if minimum is not None and maximum is not None and minimum > maximum:
        section.fail(f"min {minimum!r} is greater than max {maximum!r}")
    spec = FieldSpec(
        name=name,
        kind=FieldKind.VALUE,
        offset=offset,
        size=size,
        signed=signed,
        scale=scale,
        value_offset=value_offset,
        byte_order=order,
        value=value,
        minimum=minimum,
        maximum=maximum,
        invalid_when_missing=section.boolean("invalid_when_missing", False),
        rounding="floor" if section.choice("rounding", ("nearest", "floor"), "nearest") == "floor" else "nearest",
        negate=section.boolean("negate", False),
    )
    low, high = spec.clamp_range
    if low > high:
        raw_low, raw_high = spec.raw_range
        section.fail(f"min..max leaves no raw value in the field's range {raw_low}..{raw_high}")
    return spec


def _check_name(section: _Section, name: object, *, numeric: bool, inverter: bool) -> None:
    """Fail unless ``name`` is a value name of the right kind for the frame list (sent or inverter)."""
    if inverter:
        if numeric and name in INVERTER_VALUE_NAMES:
            return
        if not numeric:
            section.fail(f"an inverter frame carries no flags ('{name}'); decode it with value: and a size")
        hint = _suggest(str(name), INVERTER_VALUE_NAMES)
        section.fail(f"unknown inverter value '{name}'" + (f" (did you mean '{hint}'?)" if hint else ""))
    wanted, other = (NUMERIC_VALUES, FLAG_VALUES) if numeric else (FLAG_VALUES, NUMERIC_VALUES)
    if name in wanted:
        return
    if name in other:
        if numeric:
            section.fail(f"'{name}' is a flag, not a numeric value: carry it with flags: [{name}] and a bit")
        section.fail(f"'{name}' is a numeric value, not a flag: carry it with value: {name} and a size")
    if name in INVERTER_VALUE_NAMES:
        section.fail(f"'{name}' is an inverter value: only inverter_frames carry it")
    hint = _suggest(str(name), VALUE_NAMES)
    section.fail(f"unknown value '{name}'" + (f" (did you mean '{hint}'?)" if hint else ""))
