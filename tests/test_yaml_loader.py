"""YAML aliases: refused in the config, counted in profiles (security audit L7, "billion laughs")."""

from __future__ import annotations

import pytest

from gateway.errors import ProfileError
from gateway.profiles.loader import load_profile, load_profile_text
from gateway.rs485.profile import load_rs485_profile_text
from gateway.yaml_loader import MAX_PROFILE_NODES


def _bomb(depth: int, top_key: str = "x-bomb") -> str:
    """A YAML mapping whose ``top_key`` expands to 9**depth strings through nested aliases."""
    lines = [f"  l0: &l0 [{', '.join(['a'] * 9)}]"]
    lines += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, depth + 1)]
    return f"{top_key}:\n" + "\n".join(lines) + "\n"


def test_a_profile_alias_bomb_is_refused_before_it_is_expanded() -> None:
    # 9**40 nodes: expanding even a sliver of that would never end; the count stops it while composing.
    with pytest.raises(ProfileError) as caught:
        load_profile_text("name: bomb\n" + _bomb(40), "bomb.yaml")
    assert f"the file expands to more than {MAX_PROFILE_NODES} YAML nodes (aliases counted)" in str(caught.value)
    with pytest.raises(ProfileError) as caught:
        load_rs485_profile_text("name: bomb\ntransport: rs485\n" + _bomb(40), "bomb.yaml")
    assert f"the file expands to more than {MAX_PROFILE_NODES} YAML nodes (aliases counted)" in str(caught.value)


def test_a_few_aliases_in_a_profile_still_load() -> None:
    # The SMA profile repeats its warning flags by alias: under the cap, the profile is the same as written out.
    assert load_profile("sma-sunny-island").name == "sma-sunny-island"
    with pytest.raises(ProfileError) as caught:  # small: past the YAML, the schema speaks (unknown key)
        load_profile_text("name: small\n" + _bomb(2), "small.yaml")
    assert "x-bomb" in str(caught.value) and "YAML nodes" not in str(caught.value)
