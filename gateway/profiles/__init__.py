"""Inverter protocol profiles: YAML data that says which frames to send and what each byte carries.

Adding an inverter means adding a profile file, not code. A profile is validated at load (every problem is a
:class:`~gateway.errors.ProfileError` naming the file, frame and field) and compiled once into frozen frame
codecs whose :meth:`~CanFrameCodec.encode` only scales, saturates and packs.

    profile = load_profile("pylontech-can")          # a built-in name, an alias, or a path
    for can_id, payload in profile.encode_all(published_values(reading, limits)):
        bus.send(can_id, payload)

Modules: :mod:`.schema` (YAML data → validated specs; the YAML reference; field kinds in :mod:`.schema_fields`),
:mod:`.spec` (the validated specs), :mod:`.merge` (``extends:``),
:mod:`.codec` (spec → compiled codec), :mod:`.loader` (files, built-ins and aliases, :class:`Profile`).
"""

from gateway.profiles.behaviour import InverterBehaviour, parse_inverter_behaviour
from gateway.profiles.codec import CanFrameCodec, EncodeError, compile_frame
from gateway.profiles.loader import (
    Profile,
    ProfileInfo,
    builtin_profile_names,
    builtin_profiles,
    load_profile,
    load_profile_text,
)
from gateway.profiles.schema import parse_profile
from gateway.profiles.spec import (
    INVERTER_VALUE_NAMES,
    FieldKind,
    FieldSpec,
    FrameSpec,
    HeartbeatSpec,
    OnLost,
    ProfileSpec,
    SendMode,
    StaleAction,
    invalid_marker,
)

__all__ = [
    "INVERTER_VALUE_NAMES",
    "CanFrameCodec",
    "EncodeError",
    "FieldKind",
    "FieldSpec",
    "FrameSpec",
    "HeartbeatSpec",
    "InverterBehaviour",
    "OnLost",
    "Profile",
    "ProfileInfo",
    "ProfileSpec",
    "SendMode",
    "StaleAction",
    "builtin_profile_names",
    "builtin_profiles",
    "compile_frame",
    "invalid_marker",
    "load_profile",
    "load_profile_text",
    "parse_inverter_behaviour",
    "parse_profile",
]
