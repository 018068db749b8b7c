"""``bms-gateway profiles``: every built-in inverter profile, CAN and RS485, with the inverters each serves, its
fail-safe, how its inverter reacts to 0 A and to silence (the profile's ``inverter_behaviour``), how many of its
frames (commands, register blocks) name a source or say ``unverified:``, and the public reports of its protocol on
real inverters (``confirmed_by``)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

from gateway.failsafe_timing import describe_stale_action
from gateway.profiles import InverterBehaviour, builtin_profiles
from gateway.profiles.sources import SourceCounts
from gateway.rs485.profile import load_rs485_profile, rs485_profile_names


@dataclass(frozen=True, slots=True)
class Listed:
    """One profile as the listing shows it, whichever its transport."""

    name: str
    aliases: tuple[str, ...]
    transport: str
    extends: str | None
    description: str
    inverters: tuple[str, ...]
    failsafe: str
    behaviour: InverterBehaviour | None
    sources: SourceCounts | None
    confirmed_by: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "transport": self.transport,
            "extends": self.extends,
            "description": self.description,
            "inverters": list(self.inverters),
            "failsafe": self.failsafe,
            "inverter_behaviour": None if self.behaviour is None else self.behaviour.to_json(),
            "sources": None if self.sources is None else self.sources.to_json(),
            "confirmed_by": list(self.confirmed_by),
        }


def listed_profiles() -> list[Listed]:
    """The CAN profiles, then the RS485 ones, each sorted by name.

    :raises ProfileError: a built-in profile is invalid.
    """
    listed = [
        Listed(
            p.name,
            p.aliases,
            p.transport,
            p.extends,
            p.description,
            p.inverters,
            describe_stale_action(p.stale, p.silence_after_s),
            p.inverter_behaviour,
            p.source_counts,
            p.confirmed_by,
        )
        for p in builtin_profiles()
    ]
    for name in rs485_profile_names():
        r = load_rs485_profile(name)
        framing = "/".join(f.value for f in r.framings)
        failsafe = describe_stale_action(r.stale, r.silence_after_s, answer_when_silent=r.answer_when_silent)
        kind = "rs485" if r.steers else "rs485, read-only"
        transport = f"{kind}, {framing}"
        listed.append(
            Listed(
                r.name,
                (),
                transport,
                None,
                r.description,
                r.inverters,
                failsafe,
                r.inverter_behaviour,
                r.source_counts,
                r.confirmed_by,
            )
        )
    return listed


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("profiles", help="list the built-in inverter profiles (CAN and RS485)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    profiles = listed_profiles()
    if args.json:
        print(json.dumps([p.to_json() for p in profiles], indent=2, ensure_ascii=False))
        return 0
    for p in profiles:
        also = f" (also: {', '.join(p.aliases)})" if p.aliases else ""
        base = f", extends {p.extends}" if p.extends else ""
        print(f"{p.name}{also}  [{p.transport}{base}]  {p.description}")
        for inverter in p.inverters:
            print(f"    {inverter}")
        print(f"  fail-safe: {p.failsafe}")
        if p.behaviour is not None:
            print(f"  inverter at 0 A: {p.behaviour.at_zero_amps}")
            print(f"  inverter on silence: {p.behaviour.on_silence}")
            print(f"  (source: {p.behaviour.source})")
        if p.sources is not None:
            print(f"  sources: {p.sources.describe()}")
        for report in p.confirmed_by:
            print(f"  confirmed on: {report}")
    return 0
