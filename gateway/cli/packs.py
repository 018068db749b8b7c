"""``bms-gateway packs forget ID``: tell a running gateway that a silent pack is gone for good.

A pack that stops answering keeps its last blocks and limits latched (it may still be on the bus, and its BMS
may still be protecting it); only its answering again, or this command, ends that. The command goes to the
running gateway's status endpoint (``POST /packs/<id>/forget``, taken from this machine only), found as
``bms-gateway status`` finds it. Exit 0 when the gateway took it, 1 when it refused (the pack answers, or is
unknown), 2 on bad arguments or config.
"""

from __future__ import annotations

import argparse
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from gateway.cli.common import DEFAULT_CONFIG
from gateway.cli.status import DEFAULT_TIMEOUT_S, status_url
from gateway.errors import GatewayError


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("packs", help="manage the packs of a running gateway (forget a silent pack)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    forget = actions.add_parser(
        "forget", help="drop a silent pack's latched blocks and limits: it is gone (the status shows its id)"
    )
    forget.add_argument("pack_id", metavar="ID", help="the pack's id, as `bms-gateway status` shows it")
    forget.add_argument(
        "-c",
        "--config",
        type=Path,
        metavar="FILE",
        help=f"take the endpoint from this config's status: section (default {DEFAULT_CONFIG}, if it exists)",
    )
    forget.add_argument("--url", help="the gateway's status endpoint, e.g. http://127.0.0.1:9480")
    forget.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S", help="seconds to wait for an answer"
    )
    forget.set_defaults(func=run_forget)


def run_forget(args: argparse.Namespace) -> int:
    base = status_url(args).rsplit("/status", 1)[0]
    url = f"{base}/packs/{urllib.parse.quote(args.pack_id, safe='')}/forget"
    request = urllib.request.Request(url, data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            print(response.read().decode(errors="replace").strip())
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace").strip()
        raise GatewayError(f"the gateway refused: {detail or error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise GatewayError(f"no gateway answered at {base}: {getattr(reason, 'strerror', None) or reason}") from None
    return 0
