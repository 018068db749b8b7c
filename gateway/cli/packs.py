"""``bms-gateway packs forget ID``: tell a running gateway that a silent pack is gone for good.

A pack that stops answering keeps its last blocks and limits latched (it may still be on the bus, and its BMS
may still be protecting it); only its answering again, or this command, ends that. The command goes to the
running gateway's status endpoint (``POST /packs/<id>/forget``, taken from this machine only), found as
``bms-gateway status`` finds it. Exit 0 when the gateway took it, 1 when it refused (the pack answers, or is
unknown), 2 on bad arguments or config.
"""

from __future__ import annotations

import argparse
import urllib.parse
import urllib.request

from gateway.cli.status import EndpointAnswered, add_endpoint_arguments, find_endpoint, open_endpoint
from gateway.errors import GatewayError


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("packs", help="manage the packs of a running gateway (forget a silent pack)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    forget = actions.add_parser(
        "forget", help="drop a silent pack's latched blocks and limits: it is gone (the status shows its id)"
    )
    forget.add_argument("pack_id", metavar="ID", help="the pack's id, as `bms-gateway status` shows it")
    add_endpoint_arguments(forget, "the gateway's status endpoint, e.g. http://127.0.0.1:9480")
    forget.set_defaults(func=run_forget)


def run_forget(args: argparse.Namespace) -> int:
    endpoint = find_endpoint(args)
    base = endpoint.url.rsplit("/status", 1)[0]
    url = f"{base}/packs/{urllib.parse.quote(args.pack_id, safe='')}/forget"
    request = urllib.request.Request(url, data=b"", method="POST")
    try:
        answer = open_endpoint(request, args.timeout, endpoint.hint)
    except EndpointAnswered as refused:
        raise GatewayError(f"the gateway refused: {refused.detail}") from None
    print(answer.decode(errors="replace").strip())
    return 0
