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

Invalid marker (:func:`~gateway.profiles.spec.invalid_marker`): all ones unsigned (0xFF, 0xFFFF, 0xFFFFFFFF),
the most negative number signed (0x80, 0x8000, 0x80000000), in the field's byte order. A value field with
``invalid_when_missing: true`` sends the marker when its value is missing, None or NaN, and never sends the
marker for a real value: its saturation range stops one count short of the marker. Decoding gives NaN for a
marker in such a field or an ``invalid`` field.

Names: value fields of sent frames name :data:`~gateway.values.NUMERIC_VALUES`, flags and pairs
:data:`~gateway.values.FLAG_VALUES`; value fields of inverter frames name
:data:`~gateway.profiles.spec.INVERTER_VALUE_NAMES` (inverter frames carry no flags). The merge rule
of ``extends`` is in :mod:`gateway.profiles.merge`.

The specs themselves are in :mod:`gateway.profiles.spec`, the checks of each field kind in
:mod:`gateway.profiles.schema_fields`, the typed YAML getters in :mod:`gateway.profiles.section`; this module
parses the top level and the frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from gateway.errors import ProfileError
from gateway.profiles.behaviour import parse_inverter_behaviour
from gateway.profiles.schema_fields import FrameDefaults, parse_field
from gateway.profiles.section import Section, type_name
from gateway.profiles.sources import parse_confirmed_by, parse_sources
from gateway.profiles.spec import (
    DEFAULT_HEARTBEAT_TIMEOUT_S,
    HEARTBEAT_TOLERANCE,
    MAX_CLASSIC_DLC,
    MAX_STANDARD_ID,
    TRANSPORTS,
    FieldSpec,
    FrameSpec,
    HeartbeatSpec,
    OnLost,
    ProfileSpec,
    SendMode,
    StaleAction,
    byte_span,
)

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


def _is_standard_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_STANDARD_ID


def parse_profile(data: object, source: str) -> ProfileSpec:
    """Validate ``data`` (what ``yaml.safe_load`` returned for the file ``source``) into a :class:`ProfileSpec`.

    ``data`` must already have its ``extends`` applied (:func:`gateway.profiles.merge.merge_profiles`; the
    loader does that).

    :raises ProfileError: on the first problem found, naming ``source``, frame and field.
    """
    if not isinstance(data, Mapping):
        raise ProfileError(f"{source}: top level must be a mapping, got {type_name(data)}")
    top = Section(data, source, _TOP_KEYS, ("name", "description", "transport", "bitrate", "failsafe", "frames"))
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
    failsafe = Section(top.data["failsafe"], f"{source}: failsafe", _FAILSAFE_KEYS, ("silence_after_s",))
    silence_after_s = failsafe.positive("silence_after_s")
    stale = StaleAction(failsafe.choice("stale", tuple(StaleAction), StaleAction.ZEROS))

    sent = FrameDefaults(byte_order, mode, period_s, min_gap_s, inverter=False)
    frames = _parse_frames(top.items("frames"), "frames", source, sent, ())
    received = FrameDefaults(byte_order, mode, None, 0.0, inverter=True)
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


def _parse_aliases(top: Section, name: str) -> tuple[str, ...]:
    aliases = top.strings("aliases")
    for index, alias in enumerate(aliases):
        if alias == name:
            top.fail(f"aliases: '{alias}' is the profile's own name")
        if alias in aliases[:index]:
            top.fail(f"aliases: '{alias}' given twice")
        if "/" in alias or "\\" in alias or alias.endswith((".yaml", ".yml")):
            top.fail(f"aliases: '{alias}' is not a plain name (no '/', '\\' or .yaml ending)")
    return aliases


def _parse_request(top: Section, source: str, mode: SendMode, frames: tuple[FrameSpec, ...]) -> int | None:
    if mode is not SendMode.REQUEST:
        if top.has("request"):
            top.fail("request applies only to mode: request")
        return None
    if not top.has("request"):
        top.fail("mode request needs request: {id: <the inverter's request frame id>}")
    section = Section(top.data["request"], f"{source}: request", _REQUEST_KEYS, _REQUEST_KEYS)
    can_id = section.can_id()
    if can_id in {frame.can_id for frame in frames}:
        section.fail(f"id {can_id:#05x} is one of the frames we send")
    return can_id


def _parse_heartbeat(
    top: Section, source: str, mode: SendMode, inverter_frames: tuple[FrameSpec, ...]
) -> HeartbeatSpec | None:
    if not top.has("heartbeat"):
        return None
    section = Section(top.data["heartbeat"], f"{source}: heartbeat", _HEARTBEAT_KEYS, ("id",))
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
    items: list[object], key: str, source: str, defaults: FrameDefaults, earlier: tuple[FrameSpec, ...]
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


def _parse_frame(item: object, where: str, source: str, defaults: FrameDefaults) -> FrameSpec:
    can_id = item.get("id") if isinstance(item, Mapping) else None
    if _is_standard_id(can_id):
        where = f"{source}: frame {can_id:#05x}"  # name the frame by its id as soon as it has a valid one
    request_mode = defaults.mode is SendMode.REQUEST and not defaults.inverter
    required = ["id", "dlc", "fields"]
    if defaults.inverter or (defaults.period_s is None and not request_mode):
        required.insert(1, "period_s")
    section = Section(item, where, _FRAME_KEYS, required)
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
        field = parse_field(raw_field, index, f"{source}: {label}", defaults)
        field_where = f"{source}: {label} field '{field.name}'"
        if any(other.name == field.name for other in fields):
            raise ProfileError(f"{field_where}: duplicate field name")
        if field.offset + field.size > dlc:
            fits = "does" if field.size == 1 else "do"
            raise ProfileError(f"{field_where}: {byte_span(field.offset, field.size)} {fits} not fit in dlc {dlc}")
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
