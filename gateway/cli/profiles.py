"""``bms-gateway profiles``: the built-in inverter profiles, their aliases and the inverters each serves."""

from __future__ import annotations

import argparse
import json

from gateway.profiles import builtin_profiles


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("profiles", help="list the built-in inverter profiles")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    profiles = builtin_profiles()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": p.name,
                        "aliases": list(p.aliases),
                        "transport": p.transport,
                        "extends": p.extends,
                        "description": p.description,
                        "inverters": list(p.inverters),
                    }
                    for p in profiles
                ],
                indent=2,
                ensure_ascii=False,
            )
        )
        return 0
    for p in profiles:
        also = f" (also: {', '.join(p.aliases)})" if p.aliases else ""
        base = f", extends {p.extends}" if p.extends else ""
        print(f"{p.name}{also}  [{p.transport}{base}]  {p.description}")
        for inverter in p.inverters:
            print(f"    {inverter}")
    return 0
