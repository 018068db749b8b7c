"""``bms-gateway profiles``: the built-in inverter profiles and the inverters each serves."""

from __future__ import annotations

import argparse

from gateway.profiles import builtin_profile_names, load_profile


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("profiles", help="list the built-in inverter profiles")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for name in builtin_profile_names():
        profile = load_profile(name)
        print(f"{name:<20} {profile.transport:<5} {', '.join(profile.inverters)}")
    return 0
