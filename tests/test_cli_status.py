"""``bms-gateway status`` for the people who run it: a normal user beside an installed service (no traceback, no
config needed), and the view itself (several packs, stale values marked)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from telemetry_fixtures import SNAPSHOT_CLOCK_S, snapshot

from gateway.clock import FakeClock
from gateway.config import StatusConfig
from gateway.telemetry.http_status import LatestSnapshot, StatusServer

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
