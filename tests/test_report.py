"""``bms-gateway report``: the support bundle (issue 20, item 3).

A running ``bms-gateway run`` (child process: a JK simulator on a pty, CAN on python-can's ``virtual`` bus) keeps
the frames it sent and received, the BMS's replies with the password masked, and its log lines; ``report`` takes
them through the status endpoint into a zip. The candump log reads back with python-can's ``LogReader`` and holds
the frames the gateway sent; no file of the zip, nor the endpoint, holds a secret (the BMS password set in the
simulator, the MQTT password, the control password), as text or as hex. Without a service the bundle says so and
reads the BMS itself. The rings' bounds and the password masking on real frames, as units.
"""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import can
import pytest
import yaml
from gateway_process import gateway_process
from jk_frames import REPLIES
from telemetry_fixtures import free_port

from gateway.bms import jk_nw
from gateway.bms.reply_ring import MASK_BYTE, redact_nw_frame
from gateway.cli import main
from gateway.clock import SystemClock
from gateway.config import StatusConfig
from gateway.errors import FrameError
from gateway.secret import Secret
from gateway.sim.jk_uart import JkUartSimulator
from gateway.sim.nullmodem import NullModem
from gateway.sim.scenarios import SCENARIOS
from gateway.telemetry.frame_ring import MAX_FRAMES, RECORD_BYTES, TX, FrameRing
from gateway.telemetry.http_status import LatestSnapshot, StatusServer
from gateway.telemetry.support import SupportRings

"""Generous: the child imports python-can and pymodbus on a shared two-core machine."""
BMS_PASSWORD = "Kq7#Zp2!wX"
"""The simulator's settings password: 10 characters, all of tag 0xB2."""
MQTT_PASSWORD = "mqtt-Pw-4f9a2c"
SENT_IDS = {0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E}
"""The frames pylontech-can sends every period."""


def secret_forms(secret: str) -> list[bytes]:
    """A secret as text and as hex, lower and upper case, bare and spaced (as a dump would print it)."""
    raw = secret.encode("latin-1")
    return [raw, *(f.encode() for h in (raw.hex(), raw.hex(" ")) for f in (h, h.upper()))]


SECRETS = {"BMS password": BMS_PASSWORD, "MQTT password": MQTT_PASSWORD}


def assert_no_secret(name: str, data: bytes) -> None:
    for what, secret in SECRETS.items():
        for form in secret_forms(secret):
            assert form not in data, f"{what} as {form!r} in {name}"


def service_config(path: Path, port: Path, status_port: int) -> Path:
    config = {
        "bms": {"driver": "jk-uart", "port": str(port), "poll_interval_s": 0.5, "timeout_s": 0.5},
        "inverter": {"profile": "pylontech-can", "can": {"interface": "virtual", "channel": f"report-{os.getpid()}"}},
        "status": {"port": status_port, "metrics": False},
        "control": {"enabled": True, "password": BMS_PASSWORD},
        "mqtt": {"enabled": False, "username": "gateway", "password": MQTT_PASSWORD},
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


@pytest.fixture
def modem(tmp_path: Path) -> Iterator[NullModem]:
    with NullModem(tmp_path) as nm:
        yield nm


@pytest.fixture
def simulator(modem: NullModem) -> Iterator[JkUartSimulator]:
    sim = JkUartSimulator(
        SCENARIOS["normal-charge"], SystemClock(), port=str(modem.a_path), password=Secret(BMS_PASSWORD)
    )
    sim.start()
    yield sim
    sim.stop()


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return json.load(answer)


@pytest.fixture
def service(modem: NullModem, simulator: JkUartSimulator, tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """``bms-gateway run`` polling the simulator; yields its config and status port once it shows a reading."""
    status_port = free_port()
    config = service_config(tmp_path / "service.yaml", modem.b_path, status_port)

    def reading_and_frames(document: dict[str, Any]) -> bool:
        """a reading and two rounds of frames sent"""
        return document["bms"]["pack"] is not None and document["inverter"]["frames_sent"] >= 2 * len(SENT_IDS)

    with gateway_process(config, status_port, reading_and_frames):
        yield config, status_port


def read_zip(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {Path(name).name: archive.read(name) for name in archive.namelist()}


def test_the_bundle_of_a_running_service_holds_its_frames_and_replies_and_no_secret(
    service: tuple[Path, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, status_port = service
    bundle = tmp_path / "bundle.zip"
    assert main(["report", "-c", str(config), "-o", str(bundle), "--minutes", "5"]) == 0
    assert str(bundle) in capsys.readouterr().out
    files = read_zip(bundle)
    assert {"README.txt", "config.json", "versions.json", "audit.txt", "events.txt", "can.log"} <= set(files)
    assert {"bms-replies.txt", "status.json"} <= set(files)

    # The candump log reads back with python-can and holds what the gateway sent, marked as sent.
    log_path = tmp_path / "can.log"
    log_path.write_bytes(files["can.log"])
    messages = list(can.LogReader(str(log_path)))
    sent = [m for m in messages if not m.is_rx]
    assert {m.arbitration_id for m in sent} >= SENT_IDS
    assert all(not m.is_extended_id and len(m.data) <= 8 for m in messages)
    last_sent = {m.arbitration_id: bytes(m.data) for m in sent}
    status_sent = json.loads(files["status.json"])["inverter"]["sent"]
    assert status_sent.keys() == {f"{i:#05x}" for i in SENT_IDS}
    assert all(len(last_sent[int(key, 16)]) == len(bytes.fromhex(data)) for key, data in status_sent.items())

    # The BMS replies: hex with the password's bytes masked (length kept), and their decode.
    replies = files["bms-replies.txt"].decode()
    masked = "B2 " + " ".join([f"{MASK_BYTE:02X}"] * 10)
    assert masked in replies and "checksum no longer matches" in replies
    assert '"password": "<redacted>"' in replies and '"cell_voltages_v"' in replies

    versions = json.loads(files["versions.json"])
    assert versions["python-can"] == can.__version__ and versions["pymodbus"]
    device = json.loads(files["status.json"])["bms"]["pack"]["device"]
    assert versions["bms"][0]["model"] == device["model"] == "bms-gateway JK simulator"
    assert versions["bms"][0]["software_version"] == device["software_version"] == "SIM_S11.26"
    assert json.loads(files["config.json"])["control"]["password"] == "<redacted>"
    assert "running: BMS jk-uart" in files["events.txt"].decode()

    for name, data in files.items():
        assert_no_secret(name, data)
    # The endpoint hands over the same, already redacted: nothing secret leaves the service.
    with urllib.request.urlopen(f"http://127.0.0.1:{status_port}/support?minutes=5", timeout=10) as answer:
        assert_no_secret("/support", answer.read())


def test_without_a_service_the_bundle_says_so_and_reads_the_bms_itself(
    modem: NullModem, simulator: JkUartSimulator, tmp_path: Path
) -> None:
    config = service_config(tmp_path / "service.yaml", modem.b_path, free_port())
    bundle = tmp_path / "bundle.zip"
    assert main(["report", "-c", str(config), "-o", str(bundle)]) == 0
    files = read_zip(bundle)
    readme = files["README.txt"].decode()
    assert "no running service answered" in readme and "the BMS was read afresh" in readme
    assert "can.log" not in files and "status.json" not in files
    assert "B2 " + " ".join(["2A"] * 10) in files["bms-replies.txt"].decode()
    assert json.loads(files["versions.json"])["bms"][0]["software_version"] == "SIM_S11.26"
    assert "findings" in files["audit.txt"].decode()
    for name, data in files.items():
        assert_no_secret(name, data)


def test_a_configured_secret_that_reaches_a_file_is_masked_and_named(tmp_path: Path) -> None:
    from gateway.cli.report import Bundle, mask_secrets

    bundle = Bundle()
    bundle.add_text("events.txt", f"a line that quoted {MQTT_PASSWORD} and {MQTT_PASSWORD.encode().hex(' ').upper()}")
    mask_secrets(bundle, {"mqtt.password": MQTT_PASSWORD})
    assert_no_secret("events.txt", bundle.files["events.txt"])
    assert bundle.notes[0] == "mqtt.password appeared in events.txt and was masked there"


def test_the_pages_event_log_comes_before_the_log_lines_in_events_txt() -> None:
    from gateway.cli.report import Bundle, Collected, _events

    bundle = Bundle()
    page_event = {"seq": 1, "wall_s": 1_750_000_000.0, "kind": "failsafe", "text": "fail-safe: normal"}
    _events(Collected(support={"log": [[1_750_000_001.0, "INFO gateway.app: running"]]}, events=[page_event]), bundle)
    lines = bundle.files["events.txt"].decode().splitlines()
    assert lines[0] == "events (the local page's event log):"
    assert lines[1].endswith(" failsafe: fail-safe: normal") and lines[-1].endswith(" INFO gateway.app: running")


# --- the masking, on real frames --------------------------------------------------------------------------------


@pytest.mark.parametrize("reply", REPLIES, ids=lambda r: r.id)
def test_the_password_bytes_of_a_real_reply_are_masked_and_nothing_else(reply: Any) -> None:
    frame = reply.frame
    password = jk_nw.decode_reply(frame)["password"]
    assert isinstance(password, Secret)
    raw = password.reveal().encode("latin-1")
    at = frame.index(b"\xb2" + raw.ljust(10, b"\x00")) + 1
    redacted = redact_nw_frame(frame)
    assert len(redacted) == len(frame)
    assert redacted[at : at + 10] == bytes([MASK_BYTE]) * 10
    assert redacted[:at] == frame[:at] and redacted[at + 10 :] == frame[at + 10 :]
    with pytest.raises(FrameError, match="bad checksum"):  # as the bundle says: the checksum no longer matches
        jk_nw.decode_reply(redacted)


def test_a_reply_whose_tags_cannot_be_walked_is_masked_from_there_to_the_end() -> None:
    frame = bytearray(REPLIES[0].frame)
    first_tag = jk_nw.HEADER_LEN
    frame[first_tag] = 0x7F  # no such tag: where the password sits can no longer be told
    redacted = redact_nw_frame(bytes(frame))
    end = len(frame) - jk_nw.TRAILER_LEN
    assert redacted[:first_tag] == frame[:first_tag] and redacted[end:] == frame[end:]
    assert set(redacted[first_tag:end]) == {MASK_BYTE}


# --- the rings' bounds and the endpoint ---------------------------------------------------------------------------


def test_the_frame_ring_keeps_the_last_30000_frames_in_600000_bytes() -> None:
    ring = FrameRing()
    for number in range(MAX_FRAMES + 5):
        ring.add(float(number), TX, number % 0x800, number.to_bytes(4, "big"))
    frames = ring.since(0.0)
    assert len(frames) == MAX_FRAMES == 30_000
    assert ring.capacity_bytes == MAX_FRAMES * RECORD_BYTES == 600_000
    assert frames[0].at_s == 5.0 and frames[-1].data == (MAX_FRAMES + 4).to_bytes(4, "big")
    assert [f.at_s for f in ring.since(MAX_FRAMES + 3.0)] == [MAX_FRAMES + 3.0, MAX_FRAMES + 4.0]


def test_support_is_served_to_this_machine_only() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing address
            address = probe.getsockname()[0]
        except OSError:
            address = "127.0.0.1"
    if address.startswith("127."):
        pytest.skip("this machine has no address but loopback to come from")
    config = StatusConfig(bind="0.0.0.0", port=0, allow_remote=True, metrics=False)
    server = StatusServer(config, LatestSnapshot(), SystemClock(), support=SupportRings())
    server.start()
    try:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://{address}:{server.port}/support", timeout=5)
        assert refused.value.code == 403
        assert get_json(f"http://127.0.0.1:{server.port}/support?minutes=1")["bounds"]["can_bytes"] == 600_000
    finally:
        server.stop()
