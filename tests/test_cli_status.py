"""``bms-gateway status`` for the people who run it: a normal user beside an installed service (no traceback, no
config needed), and the view itself (several packs, stale values marked)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from multipack_fixtures import FOUR
from prometheus_client.parser import text_string_to_metric_families
from telemetry_fixtures import SNAPSHOT_CLOCK_S, snapshot
from test_multipack import Rig, start_rig

from gateway.cli.status import render
from gateway.clock import FakeClock
from gateway.config import StatusConfig
from gateway.runtime import Snapshot
from gateway.telemetry.http_status import LatestSnapshot, StatusServer
from gateway.telemetry.status_doc import status_document, to_json_text

REPO = Path(__file__).resolve().parent.parent
NOBODY = 65534
"""The uid and gid of ``nobody`` on Debian: a normal user outside the service's group."""

AS_INSTALLED = (
    "import pathlib, sys\n"
    "import gateway.cli.status as status\n"
    "from gateway.config import StatusConfig\n"
    "from gateway.cli import main\n"
    "status.DEFAULT_CONFIG = pathlib.Path(sys.argv[1])\n"
    "status.DEFAULT_STATUS = StatusConfig(port=int(sys.argv[2]))\n"
    "sys.exit(main(sys.argv[3:]))\n"
)
"""``bms-gateway`` with the default config and the default endpoint's port moved to where the test has them."""


@pytest.fixture
def installed_config() -> Iterator[Path]:
    """A config where install.sh puts it: a directory 0750 owned by root (the user is not in its group), the file
    0640, and a config that turns the endpoint off (so that reading it would show)."""
    with tempfile.TemporaryDirectory() as root:
        Path(root).chmod(0o755)  # the barrier is the config directory, as in /etc, not the test's temp directory
        directory = Path(root, "etc", "bms-gateway")
        directory.mkdir(parents=True)
        directory.parent.chmod(0o755)
        config = directory / "config.yaml"
        config.write_text("bms: {port: p}\ninverter: {profile: pylontech-can}\nstatus: {enabled: false}\n")
        config.chmod(0o640)
        directory.chmod(0o750)
        yield config


def status_as_nobody(config: Path, port: int, *args: str) -> subprocess.CompletedProcess[str]:
    """``status`` run by uid and gid 65534 without supplementary groups: with ``setpriv``, as the audit did (it
    also starts an interpreter kept under root's 0700 home, as a venv's may be), else with Popen's own switch."""
    command = [sys.executable, "-c", AS_INSTALLED, str(config), str(port), "status", "--timeout", "5", *args]
    setpriv = shutil.which("setpriv")
    as_other = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if setpriv is None else {}
    if setpriv is not None:
        command = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command]
    try:
        return subprocess.run(
            command,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            **as_other,  # type: ignore[call-overload]
        )
    except PermissionError as error:
        pytest.skip(f"uid {NOBODY} cannot start this interpreter: {error}")


@pytest.mark.skipif(os.geteuid() != 0, reason="running status as another user (uid 65534) needs root")
def test_a_normal_user_beside_the_installed_service_gets_the_status_without_a_config(installed_config: Path) -> None:
    latest = LatestSnapshot()
    latest.offer(snapshot())
    server = StatusServer(StatusConfig(port=0), latest, FakeClock(start_s=SNAPSHOT_CLOCK_S + 1))
    server.start()
    port = server.port
    try:
        shown = status_as_nobody(installed_config, port)
    finally:
        server.stop()
    assert (shown.returncode, shown.stderr) == (0, "")
    assert "fail-safe normal" in shown.stdout and "CCL 100.0 A" in shown.stdout

    # Nothing answers at the default endpoint: one line, and a hint that the config was passed over.
    unreachable = status_as_nobody(installed_config, port)
    refused = (
        f"bms-gateway: error: cannot reach http://127.0.0.1:{port}/status: Connection refused"
        " (is the gateway running, with status.enabled?)"
    )
    assert unreachable.returncode == 1
    assert unreachable.stderr.splitlines() == [
        refused,
        f"hint: {installed_config} cannot be read by this user (Permission denied), so the default endpoint was"
        " asked: run it with sudo, or give the endpoint with --url",
    ]
    # The same user naming the endpoint never touches the config: nothing to hint at.
    named = status_as_nobody(installed_config, port, "--url", f"http://127.0.0.1:{port}")
    assert (named.returncode, named.stderr.splitlines()) == (1, [refused])


# --- several packs -----------------------------------------------------------------------------------------------


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    """Four JK-PB packs on the simulated bus through the real driver and loop (``multipack_fixtures`` has the
    numbers worked out by hand)."""
    yield from start_rig(tmp_path)


def document_of(snapshot: Snapshot) -> dict[str, Any]:
    """The status document as the status command gets it: through the endpoint's JSON."""
    document: dict[str, Any] = json.loads(to_json_text(status_document(snapshot)))
    return document


def test_status_shows_the_battery_total_then_each_pack_with_labelled_cells(rig: Rig) -> None:
    rig.cycle()
    document = document_of(rig.loop.snapshot())
    each = document["packs"]["each"]
    assert [(p["label"], p["pack_id"]) for p in each] == [(f"P{u}", rig.pack_id(u)) for u in FOUR]
    assert each[3]["limits"]["charge_current_limit_a"] == 90.0 and each[2]["state"]["soc_pct"] == 18

    lines = render(document).splitlines()
    assert "battery of 4 packs online: 52.81 V  +70.00 A  +3697 W  SOC 54 %" in lines
    assert "cells (64 in 4 packs): min 3.280 V (P3 C03)  max 3.350 V (P2 C07)  Δ 70 mV" in lines
    assert f"P2 {rig.pack_id(2)}: 52.85 V  +20.00 A  +1057 W  SOC 50 %  own CCL 135.0 A  own DCL 180.0 A" in lines
    assert f"P4 {rig.pack_id(4)}: 52.80 V  +15.00 A  +792 W  SOC 70 %  own CCL 90.0 A  own DCL 180.0 A" in lines
    assert "  P2 C01-C08  3.300 3.300 3.300 3.300 3.300 3.300 3.350 3.300" in lines
    assert "  P3 temperatures: MOS 35 °C  T1 30 °C  T2 29 °C" in lines
    assert not any(line.startswith(("cells (64)", "temperatures:")) for line in lines)  # no T1-T8 of four packs
    limits = lines.index("limits (the battery's, what the inverter is told):")
    assert lines[limits + 2].startswith("  CCL 360.0 A     ceiling: pack #4: BMS max × 0.9: 90.0 A (4 packs")
    assert "STALE" not in "\n".join(lines)


def test_one_pack_is_shown_as_before() -> None:
    document = document_of(snapshot())
    assert document["packs"]["each"] == []
    out = render(document)
    assert "cells (16): min 3.292 V" in out and "battery of" not in out and " C01-C08" not in out


def test_metrics_label_each_packs_series_and_keep_the_battery_series_unlabelled(rig: Rig) -> None:
    rig.cycle()
    latest = LatestSnapshot()
    latest.offer(rig.loop.snapshot())
    server = StatusServer(StatusConfig(port=0), latest, rig.clock)
    server.start()
    try:
        families = {f.name: f for f in text_string_to_metric_families(server.metrics_text().decode())}
    finally:
        server.stop()

    def by_labels(name: str) -> dict[tuple[str, ...], float]:
        return {tuple(s.labels[k] for k in sorted(s.labels)): s.value for s in families[name].samples}

    cells = by_labels("bms_gateway_cell_voltage_volts")  # keys (cell, pack)
    assert len(cells) == 64 and cells[("7", rig.pack_id(2))] == 3.35 and cells[("3", rig.pack_id(3))] == 3.28
    temperatures = by_labels("bms_gateway_temperature_celsius")  # keys (pack, sensor)
    assert temperatures[(rig.pack_id(3), "t1")] == 30.0 and temperatures[(rig.pack_id(3), "mos")] == 35.0
    assert len(temperatures) == 4 * 3
    assert by_labels("bms_gateway_pack_current_amperes") == {
        (rig.pack_id(u),): amperes for u, amperes in zip(FOUR, (25.0, 20.0, 10.0, 15.0), strict=True)
    }
    assert by_labels("bms_gateway_pack_soc_percent")[(rig.pack_id(3),)] == 18
    assert by_labels("bms_gateway_pack_terminal_voltage_volts")[(rig.pack_id(2),)] == 52.85
    assert by_labels("bms_gateway_pack_charge_current_limit_amperes")[(rig.pack_id(4),)] == 90.0
    assert set(by_labels("bms_gateway_pack_online").values()) == {1.0}
    # The battery's series: one sample each, no pack label.
    assert by_labels("bms_gateway_current_amperes") == {(): 70.0}
    assert by_labels("bms_gateway_soc_percent") == {(): 54.0}
    assert by_labels("bms_gateway_charge_current_limit_amperes") == {(): 360.0}


# --- stale values --------------------------------------------------------------------------------------------


def test_stale_bms_values_are_marked_with_their_age() -> None:
    fresh = render(document_of(snapshot()))
    assert "STALE" not in fresh
    lines = render(document_of(snapshot(stale=True))).splitlines()
    mark = "  [STALE: 6.0 s old]"
    marked = [line for line in lines if line.endswith(mark)]
    assert [line.split(" ", 1)[0] for line in marked] == ["pack", "cells", "temperatures:"]
    assert "  CCL 0.0 A       failsafe: BMS data 6 s old (no new reading)" in lines  # the limits are live: no mark


def test_stale_packs_are_each_marked_with_their_age(rig: Rig) -> None:
    rig.cycle()
    rig.clock.advance(6.0)
    rig.loop.tick()
    document = document_of(rig.loop.snapshot())
    assert document["failsafe"] == "stale"
    lines = render(document).splitlines()
    assert [line.split(": ")[0] for line in lines if line.endswith("  [STALE: 7.0 s old]")] == [
        "battery of 4 packs online",
        "cells (64 in 4 packs)",
        *(f"P{u} {rig.pack_id(u)}" for u in FOUR),
    ]
