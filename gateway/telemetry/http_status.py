"""The live state over HTTP: ``/status`` (JSON, :mod:`~gateway.telemetry.status_doc`) and ``/metrics``
(Prometheus text, prometheus-client from the ``metrics`` extra, imported only when metrics are on).

The control loop only drops its newest snapshot into a :class:`LatestSnapshot`; requests are served on the
server's own threads from that copy and never touch the loop. The server binds to loopback unless the config
says ``allow_remote: true`` (it has no authentication). No client can hold its threads: at most
:data:`~gateway.telemetry.bounded_http.MAX_HANDLERS` requests at once, each with a deadline for the whole
exchange, and a client that leaves mid-reply is one debug line (:mod:`~gateway.telemetry.bounded_http`).
With a :class:`~gateway.telemetry.page.Page`, ``/`` is the local page, live through ``/events`` (at most
:data:`~gateway.telemetry.bounded_http.MAX_EVENT_STREAMS` streams, beside the request cap).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any, Final

from gateway import __version__
from gateway.clock import Clock
from gateway.config import StatusConfig
from gateway.errors import GatewayError
from gateway.runtime import FailsafeState, InverterState, Snapshot
from gateway.telemetry import sse
from gateway.telemetry.bounded_http import BoundedHTTPServer
from gateway.telemetry.pack_metrics import energy_metrics, pack_metrics
from gateway.telemetry.page import CSP, Page, asset
from gateway.telemetry.status_doc import bms_link, status_document, to_json_text
from gateway.telemetry.support import SupportRings

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

log = logging.getLogger(__name__)

REQUEST_TIMEOUT_S: Final = 5.0
"""A client that sends nothing for this long is dropped, s (per receive; the whole request has a deadline too)."""
METRICS_MISSING: Final = "prometheus-client is not installed: pip install 'bms-gateway[metrics]'"
JSON_TYPE: Final = "application/json; charset=utf-8"
TEXT_TYPE: Final = "text/plain; charset=utf-8"

ForgetPack = Callable[[str], str]
"""The control loop's :meth:`~gateway.runtime.ControlLoop.forget_pack` for one source: a line, or GatewayError."""

Health = Callable[[], Mapping[str, Any] | None]
"""Extra health to show, e.g. the MQTT publisher's; None when that part is off."""


class LatestSnapshot:
    """The newest snapshot the control loop offered: one reference, swapped atomically."""

    def __init__(self) -> None:
        self._snapshot: Snapshot | None = None

    def offer(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def get(self) -> Snapshot | None:
        return self._snapshot


class StatusServer:
    """Serves ``/status`` and ``/metrics`` on its own threads; :meth:`start` binds, :meth:`stop` closes."""

    def __init__(
        self,
        config: StatusConfig,
        latest: LatestSnapshot,
        clock: Clock,
        *,
        mqtt_health: Health = lambda: None,
        forget_pack: ForgetPack | None = None,
        support: SupportRings | None = None,
        page: Page | None = None,
    ) -> None:
        """:param forget_pack: serves ``POST /packs/<id>/forget`` (``bms-gateway packs forget``) from loopback.
        :param support: serves ``GET /support?minutes=N`` (``bms-gateway report``) from loopback: the frames, the
            BMS replies (password masked) and the log lines of the last N minutes.
        :param page: serves the local page at ``/`` (``/page.json``, ``/events``); None: ``/`` is one line.
        :raises ConfigError: a non-loopback bind without ``allow_remote``. (A missing prometheus-client is not an
        error: ``/metrics`` then answers 503 naming the extra, and ``/status`` works on.)
        """
        config.check_bind()
        self._config = config
        self._latest = latest
        self._clock = clock
        self._mqtt_health = mqtt_health
        self._forget_pack = forget_pack
        self._support = support
        self._page = page
        self._server: BoundedHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._registry: CollectorRegistry | None = None
        self._metrics_problem: str | None = None if config.metrics else "metrics are off (status.metrics: false)"

    @property
    def port(self) -> int:
        """The port listened on (the configured one, or the one the OS chose for port 0 in tests)."""
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    def start(self) -> None:
        """Bind and serve. :raises GatewayError: the address cannot be bound (one line naming it)."""
        if self._config.metrics:
            self._registry = self._metrics_registry()
        host, port = self._config.bind, self._config.port
        server_class = _server_class(host)
        try:
            self._server = server_class((host, port), self._handler_class(), clock=self._clock)
        except OSError as error:
            raise GatewayError(
                f"status: cannot listen on {host}:{port}: {error.strerror or error} (status.bind, status.port)"
            ) from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="status-http", daemon=True)
        self._thread.start()
        log.info(
            "status: serving http://%s:%d/status%s", host, self.port, "" if self._registry is None else " and /metrics"
        )

    def stop(self) -> None:
        if self._page is not None:
            self._page.hub.close()  # ends the event streams
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    # --- what is served ------------------------------------------------------------------------------------

    def document(self, snapshot: Snapshot | None = None) -> dict[str, Any] | None:
        """The status document of ``snapshot`` (default: the newest); None before the first."""
        snapshot = snapshot or self._latest.get()
        if snapshot is None:
            return None
        document = status_document(snapshot, mqtt=self._mqtt_health())
        document["snapshot_age_s"] = round(self._clock.monotonic() - snapshot.at_s, 2)
        return document

    def page_json(self, page: Page, *, full: bool) -> str:
        snapshot = self._latest.get()
        document = self.document(snapshot)
        return to_json_text(page.full(document, snapshot) if full else page.live(document, snapshot))

    def stream(self, page: Page, handler: BaseHTTPRequestHandler) -> None:
        """``/events`` on ``handler``'s thread until the page leaves or the server stops."""
        assert self._server is not None
        if not self._server.become_stream(handler.request):
            body = b"busy: too many live pages open at once, retry\n"
            handler.send_response(503)
            handler.send_header("Content-Type", TEXT_TYPE)
            handler.send_header("Content-Length", str(len(body)))
            handler.send_header("Retry-After", "5")
            handler.end_headers()
            handler.wfile.write(body)
            return
        handler.close_connection = True
        handler.send_response(200)
        handler.send_header("Content-Type", sse.CONTENT_TYPE)
        handler.send_header("Cache-Control", "no-store")
        handler.send_header("Content-Security-Policy", CSP)
        handler.end_headers()

        def write(data: bytes) -> None:
            handler.wfile.write(data)
            handler.wfile.flush()

        sse.serve_stream(write, page.hub, self._clock, lambda: self.page_json(page, full=False))

    def metrics_text(self) -> bytes:
        from prometheus_client import generate_latest

        assert self._registry is not None
        return generate_latest(self._registry)

    def _metrics_registry(self) -> CollectorRegistry | None:
        try:
            from prometheus_client.registry import CollectorRegistry
        except ImportError:
            self._metrics_problem = METRICS_MISSING
            log.warning("status: /metrics is off: %s", METRICS_MISSING)
            return None
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_SnapshotCollector(self._latest, self._clock, self._mqtt_health))
        return registry

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            server_version = f"bms-gateway/{__version__}"
            timeout = REQUEST_TIMEOUT_S

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0].rstrip("/") or "/"
                if path in ("/status", "/status.json"):
                    document = owner.document()
                    if document is None:
                        self._reply(503, TEXT_TYPE, b"no snapshot yet: the control loop has not run\n")
                    else:
                        self._reply(200, JSON_TYPE, to_json_text(document).encode() + b"\n")
                elif path == "/metrics":
                    if owner._registry is None:
                        self._reply(503, TEXT_TYPE, f"{owner._metrics_problem}\n".encode())
                    else:
                        from prometheus_client import CONTENT_TYPE_LATEST

                        self._reply(200, CONTENT_TYPE_LATEST, owner.metrics_text())
                elif path == "/support" and owner._support is not None:
                    self._support_reply(owner._support)
                elif owner._page is not None and self._page(owner._page, path):
                    pass
                elif path == "/":
                    self._reply(200, TEXT_TYPE, b"bms-gateway: /status (JSON), /metrics (Prometheus)\n")
                else:
                    self._reply(404, TEXT_TYPE, b"not found: try /status or /metrics\n")

            def do_POST(self) -> None:
                parts = self.path.split("?", 1)[0].strip("/").split("/")
                if len(parts) != 3 or parts[0] != "packs" or parts[2] != "forget" or owner._forget_pack is None:
                    self._reply(404, TEXT_TYPE, b"not found: the only command is POST /packs/<id>/forget\n")
                elif not _from_this_machine(self.client_address[0]):
                    # The endpoint has no authentication: a command that relaxes a protection comes from this
                    # machine only, whatever status.allow_remote says.
                    self._reply(403, TEXT_TYPE, b"refused: commands are taken from this machine only\n")
                else:
                    try:
                        answer = owner._forget_pack(parts[1])
                    except GatewayError as error:
                        self._reply(409, TEXT_TYPE, f"{error}\n".encode())
                    else:
                        self._reply(200, TEXT_TYPE, f"{answer}\n".encode())

            def _support_reply(self, support: SupportRings) -> None:
                if not _from_this_machine(self.client_address[0]):
                    # Frames and BMS replies are more than the status shows: for this machine only, whatever
                    # status.allow_remote says (bms-gateway report runs here).
                    self._reply(403, TEXT_TYPE, b"refused: /support is served to this machine only\n")
                    return
                minutes = _minutes(self.path)
                if minutes is None:
                    self._reply(400, TEXT_TYPE, b"bad request: minutes must be a number above 0\n")
                    return
                document = support.document(minutes, now_s=owner._clock.wall())
                self._reply(200, JSON_TYPE, to_json_text(document).encode() + b"\n")

            def _page(self, page: Page, path: str) -> bool:
                """The local page's answers; False: not one of its paths."""
                if path == "/events":
                    owner.stream(page, self)
                    return True
                if path == "/page.json":
                    self._reply(200, JSON_TYPE, owner.page_json(page, full=True).encode() + b"\n")
                    return True
                found = asset(path)
                if found is not None:
                    self._reply(200, found.content_type, found.body, csp=True)
                return found is not None

            def _reply(self, code: int, content_type: str, body: bytes, *, csp: bool = False) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                if csp:
                    self.send_header("Content-Security-Policy", CSP)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("status: %s %s", self.address_string(), format % args)  # no access log on the SD card

        return Handler


def _from_this_machine(peer: str) -> bool:
    """A loopback peer: a user on this machine (the endpoint has no authentication of its own)."""
    address = ipaddress.ip_address(peer.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _minutes(path: str) -> float | None:
    """``minutes`` of a ``/support`` query (default 10); None when it is no positive finite number."""
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
    try:
        minutes = float(query.get("minutes", ["10"])[0])
    except ValueError:
        return None
    return minutes if 0 < minutes < float("inf") else None


def _server_class(host: str) -> type[BoundedHTTPServer]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET

    class Server(BoundedHTTPServer):
        address_family = family

    return Server


# --- Prometheus ----------------------------------------------------------------------------------------------


class _SnapshotCollector:
    """Builds every metric from the newest snapshot at scrape time (no state of its own)."""

    def __init__(self, latest: LatestSnapshot, clock: Clock, mqtt_health: Health) -> None:
        self._latest = latest
        self._clock = clock
        self._mqtt_health = mqtt_health

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily

        def gauge(name: str, doc: str, value: float | None, unit: str = "") -> Iterator[Metric]:
            if value is not None:
                yield GaugeMetricFamily(f"bms_gateway_{name}", doc, value=float(value), unit=unit)

        def one_hot(name: str, doc: str, label: str, values: list[str], current: str) -> Metric:
            family = GaugeMetricFamily(f"bms_gateway_{name}", doc, labels=[label])
            for value in values:
                family.add_metric([value], 1.0 if value == current else 0.0)
            return family

        yield InfoMetricFamily("bms_gateway_build", "bms-gateway version", value={"version": __version__})
        snapshot = self._latest.get()
        if snapshot is None:
            return
        yield from gauge(
            "snapshot_age",
            "age of the control loop's newest snapshot (grows if the loop hangs)",
            self._clock.monotonic() - snapshot.at_s,
            "seconds",
        )
        yield one_hot(
            "failsafe_state",
            "fail-safe state (1 for the current one)",
            "state",
            [s.value for s in FailsafeState],
            snapshot.state.value,
        )
        yield one_hot(
            "bms_link",
            "BMS link (1 for the current word)",
            "link",
            ["ok", "failing", "stale", "lost", "waiting", "stopped"],
            bms_link(snapshot),
        )
        yield from gauge("bms_reading_age", "age of the newest good BMS reading", snapshot.reading_age_s, "seconds")
        yield one_hot(
            "inverter_link",
            "inverter heartbeat supervision (1 for the current state)",
            "state",
            [s.value for s in InverterState],
            snapshot.inverter_state.value,
        )
        yield from gauge(
            "inverter_heartbeat_age", "age of the inverter's newest heartbeat", snapshot.heartbeat_age_s, "seconds"
        )
        yield CounterMetricFamily(
            "bms_gateway_frames_sent", "frames accepted by the CAN adapter", value=snapshot.frames_sent
        )
        yield CounterMetricFamily(
            "bms_gateway_send_failures", "frames the CAN adapter refused", value=snapshot.send_failures
        )
        yield from self._pack(snapshot, gauge)
        yield from self._limits(snapshot, gauge)
        yield from energy_metrics(snapshot)
        mqtt = self._mqtt_health()
        if mqtt is not None:
            yield from gauge("mqtt_connected", "1 while connected to the MQTT broker", float(bool(mqtt["connected"])))
            yield CounterMetricFamily(
                "bms_gateway_mqtt_dropped", "snapshots dropped before publishing", value=float(mqtt["dropped"])
            )

    @staticmethod
    def _pack(snapshot: Snapshot, gauge: Callable[..., Iterator[Metric]]) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        if snapshot.reading is None:
            return
        state = snapshot.reading.state
        yield from gauge("soc", "state of charge", state.soc_pct, "percent")
        yield from gauge("pack_voltage", "pack voltage", state.pack_voltage_v, "volts")
        yield from gauge("current", "pack current, + charging", state.current_a, "amperes")
        yield from gauge("power", "pack power, + charging", state.power_w, "watts")
        yield from gauge("cell_delta", "highest minus lowest cell voltage", state.cell_delta_v, "volts")
        yield from pack_metrics(snapshot)  # cells, temperatures and each pack's own values, with a pack label
        alarms = GaugeMetricFamily(
            "bms_gateway_alarm_active", "active BMS alarm (one series per alarm)", labels=["alarm"]
        )
        for alarm in sorted(state.alarms):
            alarms.add_metric([alarm.value], 1.0)
        yield alarms
        yield from gauge("alarms_active", "number of active BMS alarms", len(state.alarms))

    @staticmethod
    def _limits(snapshot: Snapshot, gauge: Callable[..., Iterator[Metric]]) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        limits = snapshot.limits
        if limits is None:
            return
        yield from gauge("charge_voltage_limit", "CVL sent to the inverter", limits.charge_voltage_limit_v, "volts")
        yield from gauge("charge_current_limit", "CCL sent to the inverter", limits.charge_current_limit_a, "amperes")
        yield from gauge(
            "discharge_current_limit", "DCL sent to the inverter", limits.discharge_current_limit_a, "amperes"
        )
        yield from gauge(
            "discharge_voltage_limit", "DVL sent to the inverter", limits.discharge_voltage_limit_v, "volts"
        )
        yield from gauge("charge_enable", "1 while the inverter may charge", float(limits.charge_enable))
        yield from gauge("discharge_enable", "1 while the inverter may discharge", float(limits.discharge_enable))
        limiters = GaugeMetricFamily(
            "bms_gateway_limiter", "the limiter that set each limit (value 1)", labels=["limit", "limiter"]
        )
        for key, reason in sorted(limits.reasons.items()):
            limiters.add_metric([key, reason.limiter], 1.0)
        yield limiters
