"""The local page's cost (issue 20): RSS with 24 h of history held, and CPU of ``bms-gateway run`` with one page
connected.

* **RSS**: a fresh interpreter imports what the service imports (``gateway.app``), fills a
  :class:`~gateway.telemetry.page.Page` with 24 h of readings at a 1 s poll on a fake clock (the control loop's
  real snapshots), serves it on a status server and fetches ``/page.json`` once (the largest answer); its
  ``VmRSS`` and ``VmHWM`` are read from ``/proc``. Target ≤ 60 MB, the service's own.
* **CPU**: ``bms-gateway run`` against the JK simulator (CAN on python-can ``virtual``), with one client on
  ``/events`` for the whole run, after loading ``/page.json`` as the page does. Target ≤ 1.5 % of one core.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Final

from bench.service import CLK_TCK, REPO, _cpu_ticks, _free_port, _status_kb
from gateway.clock import SystemClock
from gateway.sim.jk_uart import JkUartSimulator
from gateway.sim.nullmodem import NullModem
from gateway.sim.scenarios import SCENARIOS

TARGET_RSS_MB: Final = 60.0
TARGET_CPU_PCT: Final = 1.5

_FILL: Final = """
import json, sys, urllib.request
from dataclasses import replace
import gateway.app  # everything the service imports
from gateway.clock import FakeClock
from gateway.config import StatusConfig, parse_config
from gateway.limits.settings import LimitsSettings
from gateway.profiles import load_profile
from gateway.runtime import ControlLoop, LoopSettings
from gateway.sim.scenarios import SCENARIOS
from gateway.telemetry.http_status import LatestSnapshot, StatusServer
from gateway.telemetry.page import Page

class Sink:
    def send(self, can_id, data):
        return True

clock = FakeClock()
profile = load_profile("pylontech-can")
config = parse_config({"bms": {"driver": "jk-uart", "port": "/dev/null"},
                       "inverter": {"profile": "pylontech-can", "can": {"interface": "virtual", "channel": "x"}}})
loop = ControlLoop(profile, Sink(), clock, LoopSettings(1.0, 10.0, 60.0, LimitsSettings()))
page, latest = Page(config, profile, clock), LatestSnapshot()
scenario = SCENARIOS["normal-charge"]
for second in range(24 * 3600):
    clock.advance(1.0)
    reading = scenario.step(float(second)).reading
    reading = replace(reading, state=replace(reading.state, measured_at_s=clock.monotonic()))
    loop.on_readings((reading,))
    loop.tick()
    snapshot = loop.snapshot()
    latest.offer(snapshot)
    page.offer(snapshot)
server = StatusServer(StatusConfig(port=0, metrics=False), latest, clock, page=page)
server.start()
with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/page.json", timeout=30) as response:
    size = len(response.read())
server.stop()
status = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
print(json.dumps({"rss_kb": int(status["VmRSS"].split()[0]), "hwm_kb": int(status["VmHWM"].split()[0]),
                  "page_json_bytes": size, "history_bytes": page.history.buffer_bytes(),
                  "minutes": page.history.minute_count, "raw": page.history.raw_count}))
"""


def history_rss() -> dict[str, Any]:
    """RSS of an interpreter holding 24 h of page history (see the module docs)."""
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", _FILL], cwd=REPO, capture_output=True, text=True, check=True, timeout=900
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return {
        "rss_mb": result["rss_kb"] / 1024,
        "hwm_mb": result["hwm_kb"] / 1024,
        "history_kb": result["history_bytes"] / 1024,
        "page_json_kb": result["page_json_bytes"] / 1024,
        "minutes": result["minutes"],
        "raw_samples": result["raw"],
        "fill_s": round(time.monotonic() - started, 1),
        "target_rss_mb": TARGET_RSS_MB,
    }


def _config(bms_port: Path, status_port: int, state_dir: Path) -> str:
    return f"""\
bms:
  driver: jk-uart
  port: "{bms_port}"
  poll_interval_s: 1.0
inverter:
  profile: pylontech-can
  can: {{interface: virtual, channel: bench-page-{status_port}}}
state_dir: "{state_dir}"
status:
  port: {status_port}
logging:
  level: warning
"""


def _listen(url: str, stop: threading.Event, counts: dict[str, int]) -> None:
    """One page's stream: read events until ``stop`` (counted, not parsed)."""
    with urllib.request.urlopen(url, timeout=30) as response:
        while not stop.is_set():
            line = response.readline()
            if not line:
                return
            if line.startswith(b"data:"):
                counts["updates"] += 1


def cpu_with_page(duration_s: float = 60.0, warmup_s: float = 5.0) -> dict[str, Any]:
    """CPU % of one core of ``bms-gateway run`` with one page connected over ``duration_s``."""
    port = _free_port()
    counts = {"updates": 0}
    stop = threading.Event()
    with tempfile.TemporaryDirectory(prefix="bms-bench-page-") as tmp_name, NullModem(Path(tmp_name)) as cable:
        tmp = Path(tmp_name)
        simulator = JkUartSimulator(SCENARIOS["normal-charge"], SystemClock(), port=str(cable.a_path))
        simulator.start()
        config = tmp / "gateway.yaml"
        config.write_text(_config(cable.b_path, port, tmp / "state"), encoding="utf-8")
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(config)],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        listener: threading.Thread | None = None
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(OSError), urllib.request.urlopen(f"{base}/page.json", timeout=5) as r:
                    if json.load(r)["status"] is not None:
                        break
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the gateway's page did not come up")
                time.sleep(0.2)
            listener = threading.Thread(target=_listen, args=(f"{base}/events", stop, counts), daemon=True)
            listener.start()
            time.sleep(warmup_s)
            ticks0, t0, updates0 = _cpu_ticks(process.pid), time.monotonic(), counts["updates"]
            time.sleep(duration_s)
            ticks1, t1 = _cpu_ticks(process.pid), time.monotonic()
            rss_kb = _status_kb(process.pid, "VmRSS")
            updates = counts["updates"] - updates0
        finally:
            stop.set()
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if listener is not None:
                listener.join(timeout=5)
            simulator.stop()
    return {
        "duration_s": round(t1 - t0, 1),
        "cpu_pct": (ticks1 - ticks0) / CLK_TCK / (t1 - t0) * 100,
        "updates": updates,
        "rss_mb": rss_kb / 1024,
        "target_cpu_pct": TARGET_CPU_PCT,
    }
