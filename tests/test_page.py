"""The local page's server side (issue 20): history in fixed memory, the event log, the event stream's
coalescing and heartbeat on a fake clock, its own cap beside the request cap, and the page's routes."""

from __future__ import annotations

import json
import math
import socket
import tracemalloc
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
import yaml
from telemetry_fixtures import PROFILE, SETTINGS, NullSink, stamped

from gateway.clock import FakeClock
from gateway.config import StatusConfig, parse_config
from gateway.runtime import ControlLoop, Snapshot
from gateway.secret import REDACTED
from gateway.sim.scenarios import SCENARIOS
from gateway.telemetry.bounded_http import MAX_EVENT_STREAMS, MAX_HANDLERS
from gateway.telemetry.history import EVENTS, MINUTES, RAW_CAPACITY, EventLog, History
from gateway.telemetry.http_status import LatestSnapshot, StatusServer
from gateway.telemetry.page import CSP, Page
from gateway.telemetry.sse import HEARTBEAT, Schedule, event

HISTORY_BOUND_BYTES = 600_000
"""What docs/page.md states the history holds at most."""


class Loop:
    """A control loop on a fake clock fed one scenario's readings; :meth:`at` is its snapshot at a time."""

    def __init__(self) -> None:
        self.clock = FakeClock()
        self.loop = ControlLoop(PROFILE, NullSink(), self.clock, SETTINGS)

    def read(self, scenario: str, t_s: float) -> Snapshot:
        reading = SCENARIOS[scenario].step(t_s).reading
        self.loop.on_readings((stamped(reading, self.clock.monotonic()),))
        self.loop.tick()
        return self.loop.snapshot()

    def silent_for(self, seconds: float) -> Snapshot:
        self.clock.advance(seconds)
        self.loop.tick()
        return self.loop.snapshot()


# --- history ---------------------------------------------------------------------------------------------------


def test_a_day_of_readings_fits_in_the_preallocated_arrays_and_is_bucketed_by_minute() -> None:
    loop, history = Loop(), History()
    base = loop.read("normal-charge", 0.0)
    start_bytes = history.buffer_bytes()
    assert start_bytes <= HISTORY_BOUND_BYTES
    wall_s = 1_800_000_000.0  # a whole minute
    step_s = 5.0
    for n in range(int(25 * 3600 / step_s)):  # 25 h: the oldest hour falls out of the 24
        reading = replace(base.reading, state=replace(base.reading.state, measured_at_s=n, current_a=float(n % 12)))
        assert history.record(replace(base, reading=reading), wall_s + n * step_s)
        if n == int(24 * 3600 / step_s):
            tracemalloc.start()
            before, _ = tracemalloc.get_traced_memory()
    grown, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert grown - before < 4096, "recording the 25th hour allocated memory that stays"
    assert history.buffer_bytes() == start_bytes
    assert history.minute_count == MINUTES and history.raw_count == RAW_CAPACITY
    document = history.to_json(wall_s + 25 * 3600)
    assert len(document["raw"]["t"]) == 3600 / step_s  # the last hour, every reading
    minutes = document["minutes"]
    assert len(minutes["t"]) == MINUTES - 1  # 24 h back from now: the bucket exactly 24 h old is out
    assert minutes["t"][1] - minutes["t"][0] == 60
    # 12 readings a minute with currents 0..11 A: min, max and mean of each bucket
    assert (minutes["current_a"]["min"][-1], minutes["current_a"]["max"][-1]) == (0.0, 11.0)
    assert minutes["current_a"]["mean"][-1] == 5.5
    assert minutes["soc_pct"]["mean"][-1] == pytest.approx(base.reading.state.soc_pct)


def test_the_same_reading_is_kept_once_and_a_missing_limit_is_null() -> None:
    loop, history = Loop(), History()
    snapshot = loop.read("normal-charge", 0.0)
    assert history.record(snapshot, 100.0) and not history.record(snapshot, 100.5)
    assert not history.record(replace(snapshot, reading=None), 101.0)
    newer = replace(snapshot, reading=replace(snapshot.reading, state=replace(snapshot.reading.state, measured_at_s=9)))
    history.record(replace(newer, limits=None), 101.0)
    raw = history.to_json(102.0)["raw"]
    assert raw["ccl_a"][0] == snapshot.limits.charge_current_limit_a and math.isnan(raw["ccl_a"][1])
    assert raw["pack_v"] == [snapshot.reading.state.pack_voltage_v] * 2


# --- events ----------------------------------------------------------------------------------------------------


def test_events_name_the_fail_safe_the_limiter_with_its_reason_and_the_alarm() -> None:
    loop, log = Loop(), EventLog()
    log.observe(loop.read("normal-charge", 0.0), 1.0)
    loop.clock.advance(1)
    log.observe(loop.read("normal-charge", 1.0), 2.0)
    first = [e.text for e in log.last()]
    assert first[0].startswith("fail-safe normal") and any(t.startswith("CCL 100.0 A by ceiling") for t in first)
    mark = log.seq
    assert log.last(mark) == []  # nothing changed
    loop.clock.advance(1)
    log.observe(loop.read("cell-ovp", 40.0), 3.0)  # cell 7 at 3.633 V: past the cut-off
    texts = [e.text for e in log.last(mark)]
    assert any(t.startswith("CCL 0.0 A by cell_voltage: cell 7 at 3.633 V") for t in texts), texts
    assert any(t.startswith("charge off: cell 7 at 3.633 V") for t in texts), texts
    loop.clock.advance(1)
    log.observe(loop.read("cell-ovp", 55.0), 4.0)  # past the BMS's OVP: it trips
    assert "alarm raised: cell_over_voltage" in [e.text for e in log.last()]
    mark = log.seq
    log.observe(loop.silent_for(SETTINGS.bms_timeout_s + 1), 5.0)
    assert next(e.text for e in log.last(mark) if e.kind == "failsafe").startswith("fail-safe normal → stale")


def test_the_log_keeps_the_last_200_events_numbered_on() -> None:
    log = EventLog()
    for n in range(EVENTS + 50):
        log.add(float(n), "alarm", f"event {n}")
    kept = log.last()
    assert len(kept) == EVENTS and kept[0].text == "event 50" and kept[-1].seq == EVENTS + 50


# --- the event stream's schedule ---------------------------------------------------------------------------------


def test_updates_are_coalesced_to_one_a_second_and_the_newest_goes_out() -> None:
    clock = FakeClock(start_s=0.0)
    schedule, written = Schedule(clock.monotonic()), []
    for version in range(1, 25):  # 3 s with a new state every 0.125 s
        step = schedule.next(clock.monotonic(), version)
        if step.action == "data":
            schedule.wrote_data(clock.monotonic(), version)
            written.append((clock.monotonic(), version))
        clock.advance(0.125)
    assert [v for _, v in written] == [1, 9, 17]  # at 0, 1 and 2 s: the newest each time, the rest merged
    assert [round(t, 6) for t, _ in written] == [0.0, 1.0, 2.0]
    assert schedule.next(2.5, 21).action == "wait"  # nothing new: nothing written


def test_a_quiet_stream_gets_a_heartbeat_every_15_s() -> None:
    schedule = Schedule(0.0)
    schedule.wrote_data(0.0, 1)
    step = schedule.next(10.0, 1)
    assert step.action == "wait" and step.wait_s == pytest.approx(5.0)
    assert schedule.next(15.0, 1).action == "heartbeat"
    schedule.wrote_heartbeat(15.0)
    assert schedule.next(29.9, 1).action == "wait" and schedule.next(30.0, 1).action == "heartbeat"
    assert HEARTBEAT.startswith(b":")  # a comment: EventSource ignores it


def test_an_event_with_several_lines_is_one_data_field_each() -> None:
    assert event('{"a": 1}') == b'data: {"a": 1}\n\n'
    assert event("x\ny") == b"data: x\ndata: y\n\n"


# --- the page on the status server -------------------------------------------------------------------------------


CONFIG_YAML = """\
bms: {driver: jk-uart, port: /dev/ttyUSB0}
inverter: {profile: pylontech-can, can: {interface: virtual, channel: page}}
mqtt: {enabled: true, host: 127.0.0.1, username: u, password: hunter2-secret}
"""


@dataclass
class Served:
    server: StatusServer
    page: Page
    loop: Loop
    latest: LatestSnapshot


@pytest.fixture
def served() -> Iterator[Served]:
    loop = Loop()
    page = Page(parse_config(yaml.safe_load(CONFIG_YAML)), PROFILE, loop.clock)
    latest = LatestSnapshot()
    snapshot = loop.read("cell-ovp", 40.0)
    latest.offer(snapshot)
    page.offer(snapshot)
    server = StatusServer(StatusConfig(port=0, metrics=False), latest, loop.clock, page=page)
    server.start()
    yield Served(server, page, loop, latest)
    server.stop()


def fetch(server: StatusServer, path: str) -> tuple[int, dict[str, str], bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as response:
        return response.status, dict(response.headers), response.read()


def test_the_page_and_its_assets_come_from_this_server_only(served: Served) -> None:
    server = served.server
    status, headers, body = fetch(server, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert headers["Content-Security-Policy"] == CSP and "default-src 'none'" in CSP
    html = body.decode()
    assert "http://" not in html and "https://" not in html  # every asset by a relative path
    for path in ("/app.js", "/app.css", "/vendor/uPlot.iife.min.js", "/vendor/uPlot.min.css", "/vendor/uPlot.LICENSE"):
        assert fetch(server, path)[0] == 200
    assert b"uPlot" in fetch(server, "/vendor/uPlot.iife.min.js")[2]


def test_page_json_holds_history_events_audit_redacted_config_and_decoded_frames(
    served: Served,
) -> None:
    server = served.server
    _, _, body = fetch(server, "/page.json")
    assert b"hunter2" not in body
    doc = json.loads(body)
    assert doc["config"]["mqtt"]["password"] == REDACTED
    assert doc["status"]["limits"]["charge_current_limit_a"] == 0.0
    assert doc["history"]["raw"]["soc_pct"] == [97.0]
    assert any(e["text"].startswith("CCL 0.0 A by cell_voltage") for e in doc["events"])
    assert doc["lines"]["ovp"] == 3.65 and doc["lines"]["uvp"] == 2.7
    assert doc["lines"]["charge_knee"] < doc["lines"]["charge_cutoff"] < doc["lines"]["ovp"]
    assert doc["versions"]["bms-gateway"] and doc["versions"]["profile"] == "pylontech-can"
    assert isinstance(doc["audit"], list)
    frame = next(line for line in doc["frames"] if line.startswith("0x351"))
    assert "charge_current_limit=0.0 A" in frame


def read_event(stream: socket.socket, end: bytes = b"\n\n") -> bytes:
    """Bytes up to the end of the next event (a blank line), or of the HTTP head (``end`` CRLF CRLF)."""
    data = b""
    while not data.endswith(end):
        chunk = stream.recv(1)
        assert chunk, f"stream closed after {data!r}"
        data += chunk
    return data


def open_stream(server: StatusServer) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    client.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    return client


def test_the_stream_sends_retry_then_the_live_state_and_takes_no_request_slot(
    served: Served,
) -> None:
    server, page, loop = served.server, served.page, served.loop
    streams = [open_stream(server) for _ in range(MAX_EVENT_STREAMS)]
    try:
        for stream in streams:
            head = read_event(stream, b"\r\n\r\n")
            assert b"200 OK" in head and b"text/event-stream" in head
            assert read_event(stream) == b"retry: 3000\n\n"
            data = read_event(stream)
            doc = json.loads(data.removeprefix(b"data: "))
            assert doc["status"]["limits"]["charge_current_limit_a"] == 0.0
        # One stream more is refused; requests still have every one of their slots.
        extra = open_stream(server)
        assert b"503" in read_event(extra, b"\r\n\r\n")
        extra.close()
        assert fetch(server, "/status")[0] == 200
        assert server._server is not None
        # Past the whole-request deadline, no stream is cut: each hears the next update.
        loop.clock.advance(3600)
        server._server.service_actions()
        newer = loop.read("normal-charge", 0.0)
        served.latest.offer(newer)
        page.offer(newer)
        for stream in streams:
            doc = json.loads(read_event(stream).removeprefix(b"data: "))
            assert doc["status"]["bms"]["pack"]["state"]["cell_voltages_v"][6] < 3.5  # the newer reading
        assert MAX_EVENT_STREAMS < MAX_HANDLERS
    finally:
        for stream in streams:
            stream.close()
