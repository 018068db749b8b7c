"""`bms-gateway run` with an RS485 profile, across processes: the JK simulator on one null-modem, the gateway
answering Pylontech polls on another, and this test as the inverter."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from gateway.clock import SystemClock
from gateway.rs485.profile import load_rs485_profile
from gateway.rs485.pylontech_ascii import build_request, decode_frame
from gateway.sim.jk_uart import JkUartSimulator
from gateway.sim.nullmodem import NullModem
from gateway.sim.scenarios import SCENARIOS

REPO = Path(__file__).resolve().parents[1]
SPEC = load_rs485_profile("pylontech-rs485").pylontech
CHARGE_MANAGEMENT = 0x92


def poll(port: serial.Serial, request: bytes, within_s: float) -> bytes | None:
    """Send ``request`` and read one reply up to CR, or None when none came within ``within_s``."""
    port.reset_input_buffer()
    port.write(request)
    deadline = time.monotonic() + within_s
    reply = b""
    while time.monotonic() < deadline:
        reply += port.read(256)
        if reply.endswith(b"\r"):
            return reply[reply.rfind(b"~") :]
    return None


def test_run_answers_pylontech_polls_with_the_engine_limits(tmp_path: Path) -> None:
    assert SPEC is not None
    with (
        NullModem(tmp_path / "bms", names=("bms", "gateway")) as bms_cable,
        NullModem(tmp_path / "inv", names=("inverter", "gateway")) as inverter_cable,
    ):
        simulator = JkUartSimulator(SCENARIOS["normal-charge"], SystemClock(), port=str(bms_cable.a_path))
        simulator.start()
        config = tmp_path / "gateway.yaml"
        config.write_text(
            f"""\
bms:
  port: "{bms_cable.b_path}"
inverter:
  profile: pylontech-rs485
  serial:
    port: "{inverter_cable.b_path}"
limits:
  max_charge_current_a: 100
  max_discharge_current_a: 250
status:
  enabled: false
""",
            encoding="utf-8",
        )
        env = dict(os.environ, PYTHONPATH=str(REPO))
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "run", "-c", str(config)],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            with serial.Serial(str(inverter_cable.a_path), 9600, timeout=0.05) as port:
                fields: dict[str, object] | None = None
                deadline = time.monotonic() + 30
                while fields is None and time.monotonic() < deadline:
                    reply = poll(port, build_request(2, CHARGE_MANAGEMENT, bytes([2])), within_s=1.0)
                    if reply is not None:
                        decoded = decode_frame(reply, SPEC, request_cid2=CHARGE_MANAGEMENT)
                        if decoded.get("return_code") == 0:
                            fields = decoded["fields"]
                assert fields is not None, "no 0x92 answer within 30 s"
        finally:
            process.terminate()
            _, stderr = process.communicate(timeout=15)
            simulator.stop()
    text = stderr.decode(errors="replace")
    assert process.returncode == 0, text
    assert "Traceback" not in text, text
    # The simulated 16S LiFePO4 pack, through the limits engine: CVL 16 × 3.45 = 55.2 V, CCL the 100 A cap
    # (below 0.9 × 150 A), DCL 0.9 × 200 A = 180 A; charge and discharge enabled.
    values = dict(fields)
    assert any(abs(float(v) - 55.2) < 0.01 for k, v in values.items() if "charge_voltage" in k), values
    assert any(abs(float(v) - 100.0) < 0.1 for k, v in values.items() if "charge_current" in k), values
    assert any(abs(abs(float(v)) - 180.0) < 0.1 for k, v in values.items() if "discharge_current" in k), values


if not hasattr(os, "openpty"):  # pragma: no cover
    pytest.skip("needs pseudo-terminals", allow_module_level=True)


def test_the_rs485_feed_gives_the_battery_limits_of_every_pack() -> None:
    """Two packs, one allowing less charge current: the RS485 outputs get the system limit (2 × the smaller
    pack's ceiling), as the CAN loop would, not the first pack's own."""
    from dataclasses import replace

    from gateway.clock import FakeClock
    from gateway.limits import LimitsSettings
    from gateway.rs485.server import LimitsFeed, OutputSettings

    clock = FakeClock()
    base = SCENARIOS["normal-charge"].step(0.0).reading
    strong = replace(base, pack_id="p1", state=replace(base.state, measured_at_s=clock.monotonic()))
    weak = replace(
        base,
        pack_id="p2",
        state=replace(base.state, measured_at_s=clock.monotonic()),
        settings=replace(base.settings, max_charge_current_a=50.0),
    )
    feed = LimitsFeed(clock, LimitsSettings(max_charge_current_a=1000.0), OutputSettings(10.0, 60.0))
    feed.on_readings((strong, weak))
    readings, limits, _ = feed()
    assert len(readings) == 2
    assert limits is not None
    # Pack 2: 0.9 × 50 A = 45 A; two packs sharing equally: 2 × 45 A = 90 A (not pack 1's 0.9 × 150 = 135 A).
    assert limits.charge_current_limit_a == pytest.approx(90.0)
