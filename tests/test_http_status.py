"""The status endpoint: valid JSON and Prometheus text, loopback only unless told, and ``bms-gateway status``."""

from __future__ import annotations

import json
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from telemetry_fixtures import SNAPSHOT_CLOCK_S, free_port, snapshot

from gateway.cli import main
from gateway.cli.status import render
from gateway.clock import FakeClock, SystemClock
from gateway.config import StatusConfig, parse_config
from gateway.errors import ConfigError, GatewayError
from gateway.telemetry.http_status import LatestSnapshot, StatusServer

REMOTE_REFUSED = (
    "status.bind: 0.0.0.0 is not a loopback address and the endpoint has no authentication: "
    "set status.allow_remote: true to serve beyond this machine"
)


@pytest.fixture
def latest() -> LatestSnapshot:
    return LatestSnapshot()


SERVED_AFTER_S = 2.5
"""The server's clock runs this far ahead of the snapshots' (the snapshot's age it reports), s."""


@pytest.fixture
def server(latest: LatestSnapshot) -> Iterator[StatusServer]:
    server = StatusServer(
        StatusConfig(port=0),
        latest,
        FakeClock(start_s=SNAPSHOT_CLOCK_S + SERVED_AFTER_S),
        mqtt_health=lambda: {"broker": "127.0.0.1:1883", "connected": True, "dropped": 3},
    )
    server.start()
    yield server
    server.stop()


def get(server: StatusServer, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def test_status_is_json_with_cells_limits_alarms_and_links(server: StatusServer, latest: LatestSnapshot) -> None:
    latest.offer(snapshot())
    code, content_type, body = get(server, "/status")
    assert (code, content_type) == (200, "application/json; charset=utf-8")
    doc = json.loads(body)
    assert doc["failsafe"] == "normal"
    assert doc["bms"]["link"] == "ok"
    assert len(doc["bms"]["pack"]["state"]["cell_voltages_v"]) == 16
    assert doc["limits"]["charge_current_limit_a"] == 100.0
    assert doc["limits"]["reasons"]["charge_current_limit_a"]["limiter"] == "ceiling"
    assert doc["alarms"] == []
    assert doc["inverter"]["frames_sent"] == 6 and doc["inverter"]["link"] == "unsupervised"
    assert doc["mqtt"]["connected"] is True
    assert doc["snapshot_age_s"] == SERVED_AFTER_S


def test_metrics_are_valid_prometheus_text(server: StatusServer, latest: LatestSnapshot) -> None:
    latest.offer(snapshot())
    code, content_type, body = get(server, "/metrics")
    assert code == 200 and content_type.startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    cells = families["bms_gateway_cell_voltage_volts"].samples
    assert len(cells) == 16 and all(3.0 < s.value < 3.5 for s in cells)
    assert families["bms_gateway_charge_current_limit_amperes"].samples[0].value == 100.0
    states = {s.labels["state"]: s.value for s in families["bms_gateway_failsafe_state"].samples}
    assert states["normal"] == 1 and states["stale"] == 0
    limiters = {s.labels["limit"]: s.labels["limiter"] for s in families["bms_gateway_limiter"].samples}
    assert limiters["charge_current_limit_a"] == "ceiling"
    assert families["bms_gateway_frames_sent"].samples[0].value == 6
    assert families["bms_gateway_mqtt_dropped"].samples[0].value == 3


def test_before_the_first_snapshot_status_says_so(server: StatusServer) -> None:
    code, _, body = get(server, "/status")
    assert code == 503 and b"no snapshot yet" in body
    assert get(server, "/nope")[0] == 404


def test_metrics_without_prometheus_client_say_which_extra(
    latest: LatestSnapshot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client.registry", None)
    server = StatusServer(StatusConfig(port=0), latest, SystemClock())
    server.start()
    try:
        latest.offer(snapshot())
        code, _, body = get(server, "/metrics")
        assert code == 503
        assert body.decode().strip() == "prometheus-client is not installed: pip install 'bms-gateway[metrics]'"
        assert get(server, "/status")[0] == 200, "JSON status needs no extra"
    finally:
        server.stop()


# --- loopback only -------------------------------------------------------------------------------------------


def test_non_loopback_bind_is_refused_unless_allowed(latest: LatestSnapshot) -> None:
    with pytest.raises(ConfigError) as caught:
        StatusServer(StatusConfig(bind="0.0.0.0", port=0), latest, SystemClock())
    assert str(caught.value) == REMOTE_REFUSED
    with pytest.raises(ConfigError) as from_file:
        parse_config({"bms": {"port": "p"}, "inverter": {"profile": "x"}, "status": {"bind": "0.0.0.0"}})
    assert str(from_file.value) == REMOTE_REFUSED
    for loopback in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        StatusConfig(bind=loopback).check_bind()
    allowed = StatusServer(StatusConfig(bind="0.0.0.0", port=0, allow_remote=True), latest, SystemClock())
    allowed.start()
    try:
        assert allowed.port > 0
    finally:
        allowed.stop()


def test_a_busy_port_is_one_line(latest: LatestSnapshot, server: StatusServer) -> None:
    second = StatusServer(StatusConfig(port=server.port), latest, SystemClock())
    with pytest.raises(GatewayError) as caught:
        second.start()
    assert str(caught.value).startswith(f"status: cannot listen on 127.0.0.1:{server.port}: ")
    assert "\n" not in str(caught.value)


# --- bms-gateway status ------------------------------------------------------------------------------------------


def test_status_command_prints_cells_limits_alarms_and_links(
    server: StatusServer, latest: LatestSnapshot, capsys: pytest.CaptureFixture[str]
) -> None:
    latest.offer(snapshot())
    assert main(["status", "--url", f"http://127.0.0.1:{server.port}"]) == 0
    out = capsys.readouterr().out
    assert "fail-safe normal" in out
    assert "cells (16): min 3.292 V" in out
    assert "CCL 100.0 A" in out and "ceiling: config (user cap): 100.0 A" in out
    assert "CVL 55.20 V" in out and "bulk: bulk 3.450 V × 16" in out
    assert "alarms: none" in out
    assert "BMS link: ok" in out and "inverter link: unsupervised" in out
    assert "MQTT: connected to 127.0.0.1:1883, 3 snapshots dropped" in out

    assert main(["status", "--url", f"http://127.0.0.1:{server.port}/status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["limits"]["charge_current_limit_a"] == 100.0


def test_status_command_when_stale_shows_the_failsafe(
    server: StatusServer, latest: LatestSnapshot, capsys: pytest.CaptureFixture[str]
) -> None:
    latest.offer(snapshot(stale=True))
    assert main(["status", "--url", f"http://127.0.0.1:{server.port}"]) == 0
    out = capsys.readouterr().out
    assert "fail-safe stale" in out and "BMS link: stale" in out
    assert "CCL 0.0 A" in out and "failsafe: BMS data" in out


def test_status_command_max_age_fails_on_a_stuck_loop(
    server: StatusServer, latest: LatestSnapshot, capsys: pytest.CaptureFixture[str]
) -> None:
    stuck = snapshot()
    latest.offer(type(stuck)(**{**{f: getattr(stuck, f) for f in stuck.__dataclass_fields__}, "at_s": 0.0}))
    assert main(["status", "--url", f"http://127.0.0.1:{server.port}", "--max-age", "15"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("bms-gateway: error: the gateway's newest snapshot is ") and err.count("\n") == 1


def test_status_command_without_a_gateway_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    assert main(["status", "--url", f"http://127.0.0.1:{port}", "--timeout", "1"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"bms-gateway: error: cannot reach http://127.0.0.1:{port}/status: ")
    assert err.count("\n") == 1


def test_status_command_takes_the_endpoint_from_the_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("bms: {port: p}\ninverter: {profile: pylontech-can}\nstatus: {enabled: false}\n", encoding="utf-8")
    assert main(["status", "-c", str(path)]) == 2
    assert (
        capsys.readouterr().err
        == f"bms-gateway: error: status.enabled: is false in {path}: the gateway serves no status\n"
    )


# --- bms-gateway packs forget ------------------------------------------------------------------------------------


class Forgetting:
    """Stands in for the control loop's forget_pack: pack "3" is latched, every other id is refused."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, pack_id: str) -> str:
        self.asked.append(pack_id)
        if pack_id != "3":
            raise GatewayError(f"pack {pack_id} is not latched (it answers, or nothing of it was ever latched)")
        return f"pack {pack_id}: its latched blocks and limits are dropped"


def post(port: int, path: str, host: str = "127.0.0.1") -> tuple[int, bytes]:
    request = urllib.request.Request(f"http://{host}:{port}{path}", data=b"", method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_packs_forget_reaches_the_loop_and_says_what_became_of_it(
    latest: LatestSnapshot, capsys: pytest.CaptureFixture[str]
) -> None:
    forgetting = Forgetting()
    server = StatusServer(StatusConfig(port=0), latest, SystemClock(), forget_pack=forgetting)
    server.start()
    try:
        assert main(["packs", "forget", "3", "--url", f"http://127.0.0.1:{server.port}"]) == 0
        assert capsys.readouterr().out == "pack 3: its latched blocks and limits are dropped\n"
        assert main(["packs", "forget", "1", "--url", f"http://127.0.0.1:{server.port}"]) == 1
        err = capsys.readouterr().err
        assert err.strip().splitlines() == [
            "bms-gateway: error: the gateway refused: pack 1 is not latched (it answers, or nothing of it was ever "
            "latched)"
        ]
        assert forgetting.asked == ["3", "1"]
        assert post(server.port, "/packs/3/remember")[0] == 404
        assert forgetting.asked == ["3", "1"]
    finally:
        server.stop()


def test_an_endpoint_without_a_loop_takes_no_command(server: StatusServer) -> None:
    code, body = post(server.port, "/packs/3/forget")
    assert code == 404 and b"POST /packs/<id>/forget" in body


def test_a_command_from_another_machine_is_refused(latest: LatestSnapshot) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing address
            address = probe.getsockname()[0]
        except OSError:
            address = "127.0.0.1"
    if address.startswith("127."):
        pytest.skip("this machine has no address but loopback to come from")
    forgetting = Forgetting()
    config = StatusConfig(bind="0.0.0.0", port=0, allow_remote=True)
    server = StatusServer(config, latest, SystemClock(), forget_pack=forgetting)
    server.start()
    try:
        code, body = post(server.port, "/packs/3/forget", host=address)
        assert (code, body) == (403, b"refused: commands are taken from this machine only\n")
        assert forgetting.asked == []
        assert post(server.port, "/packs/3/forget")[0] == 200  # the same server, from loopback
    finally:
        server.stop()


def test_status_command_shows_the_packs_and_a_latched_one() -> None:
    document = {
        "version": "x",
        "failsafe": "normal",
        "packs": {"online": ["1", "2"], "offline": ["3"], "latched": ["3"], "current_sharing": "capacity"},
        "alarms": ["pack_latched"],
    }
    out = render(document)
    assert "packs: 2 of 3 online; current shared by capacity" in out
    assert "ALARM pack 3 silent, its last blocks and limits latched; if it is gone for good: " in out
    assert "bms-gateway packs forget 3" in out
    assert "alarms: pack_latched" in out
    one = render({**document, "packs": {"online": ["1"], "offline": [], "latched": [], "current_sharing": "equal"}})
    assert "packs:" not in one
