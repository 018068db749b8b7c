"""A gateway on simulated hardware with its status endpoint, for the local page's browser test and screenshots.

``python -m gateway run`` runs in a subprocess, its BMS port one end of a null-modem with the JK simulator (in
this process) on the other, its inverter side a python-can ``virtual`` bus (nobody needs to hear the frames: the
page shows what was sent), its status endpoint on a free loopback port. What the simulated BMS says is switched
by the caller (:class:`SwitchedBms`): a normal charge, a cell over OVP, or silence.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from telemetry_fixtures import free_port

from gateway.clock import SystemClock
from gateway.sim.jk_uart import JkUartSimulator
from gateway.sim.nullmodem import NullModem
from gateway.sim.scenarios import SCENARIOS, Behaviour, Scenario, Step

REPO = Path(__file__).resolve().parents[1]
OVP_AT_S = 40.0
"""The ``cell-ovp`` scenario's time with cell 7 at 3.633 V: above the charge cut-off, below the BMS's OVP."""


class SwitchedBms:
    """A scenario whose state the test sets: ``normal`` (charging), ``ovp`` (cell 7 held high), ``silent``."""

    def __init__(self) -> None:
        self.mode = "normal"

    def scenario(self) -> Scenario:
        return Scenario("switched", "normal, cell over the cut-off, or silent: set by the test", self._step)

    def _step(self, t_s: float) -> Step:
        if self.mode == "ovp":
            return SCENARIOS["cell-ovp"].step(OVP_AT_S)
        step = SCENARIOS["normal-charge"].step(t_s)
        return replace(step, behaviour=Behaviour.SILENT) if self.mode == "silent" else step


@dataclass
class PageChain:
    url: str
    """The status endpoint's base, ``http://127.0.0.1:PORT``."""
    bms: SwitchedBms
    process: subprocess.Popen[bytes]
    stderr_path: Path

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/status", timeout=5) as response:
            document: dict[str, Any] = json.load(response)
            return document

    def page_json(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/page.json", timeout=5) as response:
            document: dict[str, Any] = json.load(response)
            return document

    def wait_for_status(self, within_s: float = 30.0) -> dict[str, Any]:
        """The first status document with a reading (the gateway subprocess takes a second or two to start)."""
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited {self.process.returncode}: {self.stderr_path.read_text()}")
            with contextlib.suppress(OSError):
                document = self.status()
                if document["bms"]["pack"] is not None and document["limits"] is not None:
                    return document
            time.sleep(0.1)
        raise RuntimeError(f"no reading on /status within {within_s} s: {self.stderr_path.read_text()}")


@contextlib.contextmanager
def running_page(tmp_path: Path) -> Iterator[PageChain]:
    """The gateway subprocess with its page on a free port; killed on exit."""
    bms = SwitchedBms()
    port = free_port()
    config = tmp_path / "gateway.yaml"
    stderr_path = tmp_path / "gateway.stderr"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    with NullModem(tmp_path / "bms", names=("bms", "gateway")) as cable:
        simulator = JkUartSimulator(bms.scenario(), SystemClock(), port=str(cable.a_path))
        simulator.start()
        config.write_text(
            f"""\
bms:
  driver: jk-uart
  port: "{cable.b_path}"
  poll_interval_s: 0.5
  timeout_s: 0.5
inverter:
  profile: pylontech-can
  can: {{interface: virtual, channel: page-test-{port}}}
limits:
  max_charge_current_a: 100
  max_discharge_current_a: 100
failsafe:
  bms_timeout_s: 3
state_dir: "{tmp_path / "state"}"
status:
  port: {port}
  metrics: false
logging:
  level: warning
""",
            encoding="utf-8",
        )
        process: subprocess.Popen[bytes] | None = None
        try:
            with stderr_path.open("wb") as stderr:
                process = subprocess.Popen(
                    [sys.executable, "-m", "gateway", "run", "-c", str(config)],
                    cwd=REPO,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                )
            yield PageChain(f"http://127.0.0.1:{port}", bms, process, stderr_path)
        finally:
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            simulator.stop()
