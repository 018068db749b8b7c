"""``extends:``: a variant profile states only what differs from its base. Pure functions on YAML data.

The merge works on the data ``yaml.safe_load`` returned, before validation, so the merged profile is checked
as a whole by :func:`~gateway.profiles.schema.parse_profile` (and the base on its own before that). The rule:

* ``name``, ``aliases``, ``inverter_behaviour`` and ``confirmed_by`` are never inherited (a variant must give its
  ``name``; it serves another inverter, whose behaviour and reports it states itself); ``extends`` and
  ``remove_frames`` are consumed here.
* ``heartbeat``, ``failsafe`` and ``request`` merge key by key: ``failsafe: {stale: silence}`` keeps the
  base's ``silence_after_s``.
* ``frames`` and ``inverter_frames`` merge by frame ``id``. An entry with an id of the base changes that frame
  in place: its keys replace the base frame's keys, except ``fields``, which merge by field ``name`` (an entry
  with a base field's name replaces that whole field where it was; a new name is added at the end), and
  ``remove_fields: [names]``, which drops base fields. A frame the variant changes keeps the base's ``sources``
  only if the entry names them again (they described the base's bytes, not the changed ones). An entry with a
  new id is a whole new frame, added after the base's frames.
* ``remove_frames: [ids]`` drops base frames (sent or inverter) before the frames merge.
* Every other key replaces the base's value; a key set to null removes it (``heartbeat: null``; in a frame
  entry, ``min_gap_s: null``).

Top-level defaults (``byte_order``, ``period_s``, ``min_gap_s``) therefore apply to inherited frames and
fields that do not state their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from gateway.errors import ProfileError

NOT_INHERITED: Final = frozenset({"name", "aliases", "inverter_behaviour", "confirmed_by", "extends", "remove_frames"})
"""Top-level keys a variant never takes from its base."""
MERGED_SECTIONS: Final = frozenset({"heartbeat", "failsafe", "request"})
"""Top-level mappings that merge key by key."""
FRAME_LISTS: Final = ("frames", "inverter_frames")


def merge_profiles(base: Mapping[str, object], variant: Mapping[object, object], source: str) -> dict[str, object]:
    """The YAML data of ``variant`` (the file ``source``) applied on its ``base`` (already merged itself).

    :raises ProfileError: naming ``source``: the variant has no name, removes what the base lacks, or its
        frames and fields cannot be matched by id and name.
    """
    if "name" not in variant:
        raise ProfileError(f"{source}: missing key 'name' (a profile that extends another needs its own name)")
    merged: dict[str, object] = {key: value for key, value in base.items() if key not in NOT_INHERITED}
    lists = {key: _frame_list(merged.get(key, []), key, source) for key in FRAME_LISTS}
    _remove_frames(lists, variant.get("remove_frames", []), source)
    for raw_key, value in variant.items():
        key = str(raw_key)
        if key in ("extends", "remove_frames"):
            continue
        if key in FRAME_LISTS:
            if not isinstance(value, list):
                raise ProfileError(f"{source}: {key} must be a list, got {type(value).__name__}")
            lists[key] = _merge_frames(lists[key], value, key, source)
        elif value is None:
            merged.pop(key, None)
        elif key in MERGED_SECTIONS and isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            section = dict(_mapping(merged[key]))
            for sub_key, sub_value in value.items():
                if sub_value is None:
                    section.pop(str(sub_key), None)
                else:
                    section[str(sub_key)] = sub_value
            merged[key] = section
        else:
            merged[key] = value
    for key, frames in lists.items():
        if frames or key in merged or key in variant:
            merged[key] = frames
    return merged


def _mapping(value: object) -> Mapping[str, object]:
    assert isinstance(value, Mapping)
    return {str(k): v for k, v in value.items()}


def _frame_list(value: object, key: str, source: str) -> list[dict[str, object]]:
    """The base's frame list as mutable copies (the base was validated, so each frame has its id)."""
    if not isinstance(value, list):
        raise ProfileError(f"{source}: base {key} must be a list")
    return [dict(_mapping(item)) for item in value if isinstance(item, Mapping)]


def _frame_id(item: object, key: str, index: int, source: str) -> int:
    can_id = item.get("id") if isinstance(item, Mapping) else None
    if isinstance(can_id, bool) or not isinstance(can_id, int):
        raise ProfileError(f"{source}: {key}[{index}]: missing key 'id' (frames merge with the base by id)")
    return can_id


def _remove_frames(lists: dict[str, list[dict[str, object]]], ids: object, source: str) -> None:
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise ProfileError(f"{source}: remove_frames must be a list of frame ids, got {ids!r}")
    for can_id in ids:
        for key in FRAME_LISTS:
            kept = [frame for frame in lists[key] if frame.get("id") != can_id]
            if len(kept) != len(lists[key]):
                lists[key] = kept
                break
        else:
            raise ProfileError(f"{source}: remove_frames: the base has no frame {can_id:#05x}")


def _merge_frames(
    base: list[dict[str, object]], entries: list[object], key: str, source: str
) -> list[dict[str, object]]:
    frames = [dict(frame) for frame in base]
    by_id = {frame.get("id"): frame for frame in frames}
    for index, entry in enumerate(entries):
        can_id = _frame_id(entry, key, index, source)
        assert isinstance(entry, Mapping)
        changes = _mapping(entry)
        target = by_id.get(can_id)
        if target is None:
            if "remove_fields" in changes:
                raise ProfileError(f"{source}: frame {can_id:#05x}: remove_fields applies only to a frame of the base")
            new = dict(changes)
            frames.append(new)
            by_id[can_id] = new
            continue
        _merge_frame(target, changes, f"{source}: frame {can_id:#05x}")
    return frames


def _merge_frame(target: dict[str, object], changes: Mapping[str, object], where: str) -> None:
    fields = [dict(_mapping(f)) for f in _list(target.get("fields", []), where, "fields") if isinstance(f, Mapping)]
    removed = changes.get("remove_fields", [])
    if not isinstance(removed, list) or not all(isinstance(name, str) for name in removed):
        raise ProfileError(f"{where}: remove_fields must be a list of field names, got {removed!r}")
    for name in removed:
        kept = [field for field in fields if field.get("name") != name]
        if len(kept) == len(fields):
            raise ProfileError(f"{where}: remove_fields: the base frame has no field '{name}'")
        fields = kept
    for index, entry in enumerate(_list(changes.get("fields", []), where, "fields")):
        name = entry.get("name") if isinstance(entry, Mapping) else None
        if not isinstance(name, str):
            raise ProfileError(f"{where} fields[{index}]: missing key 'name' (fields merge with the base by name)")
        assert isinstance(entry, Mapping)
        position = next((i for i, field in enumerate(fields) if field.get("name") == name), None)
        if position is None:
            fields.append(dict(_mapping(entry)))
        else:
            fields[position] = dict(_mapping(entry))
    if "sources" not in changes:
        target.pop("sources", None)  # the base's sources described the bytes this entry changes
    for sub_key, value in changes.items():
        if sub_key in ("fields", "remove_fields"):
            continue
        if value is None:
            target.pop(sub_key, None)
        else:
            target[sub_key] = value
    target["fields"] = fields


def _list(value: object, where: str, key: str) -> list[object]:
    if not isinstance(value, list):
        raise ProfileError(f"{where}: {key} must be a list, got {type(value).__name__}")
    return value
