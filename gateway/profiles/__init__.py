"""Inverter protocol profiles: YAML data that says which frames to send and what each byte carries.

Adding an inverter means adding a profile file, not code. A profile is validated at load (every problem is a
:class:`~gateway.errors.ProfileError` naming the file, frame and field) and compiled once into frozen frame
codecs whose :meth:`~CanFrameCodec.encode` only scales, saturates and packs.

    profile = load_profile("pylontech-can")
    for can_id, payload in profile.encode_all(published_values(reading, limits)):
        bus.send(can_id, payload)

Modules: :mod:`.schema` (YAML data → validated specs), :mod:`.codec` (spec → compiled codec),
:mod:`.loader` (files, built-ins, :class:`Profile`).
"""

from gateway.profiles.codec import CanFrameCodec, EncodeError, compile_frame
from gateway.profiles.loader import Profile, builtin_profile_names, load_profile, load_profile_text
from gateway.profiles.schema import FieldKind, FieldSpec, FrameSpec, HeartbeatSpec, ProfileSpec, parse_profile

__all__ = [
    "CanFrameCodec",
    "EncodeError",
    "FieldKind",
    "FieldSpec",
    "FrameSpec",
    "HeartbeatSpec",
    "Profile",
    "ProfileSpec",
    "builtin_profile_names",
    "compile_frame",
    "load_profile",
    "load_profile_text",
    "parse_profile",
]
