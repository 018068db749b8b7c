"""``bms-gateway check -c FILE``: validate the config and profile; show each value in force and its origin."""

from __future__ import annotations

import argparse
import json

from gateway.cli.common import add_config_argument, load_with_profile
from gateway.effective import resolve


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("check", help="validate a config file (exit status 2 when invalid)")
    add_config_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the validated config as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config, profile = load_with_profile(args)
    effective = resolve(config, profile)
    if args.json:
        out = {
            "config": config.to_json(),
            "profile": {"name": profile.name, "path": profile.path},
            "effective": {key: {"value": value, "origin": origin} for key, value, origin in effective.rows()},
        }
        print(json.dumps(out, indent=2))
        return 0
    print(f"{args.config}: OK")
    print(f"profile {profile.name} ({profile.path}): {', '.join(profile.inverters)}")
    width = max(len(key) for key, _, _ in effective.rows())
    for key, value, origin in effective.rows():
        print(f"  {key:<{width}}  {value!s:<8}  from {origin}")
    return 0
