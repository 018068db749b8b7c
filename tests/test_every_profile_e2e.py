"""``bms-gateway run`` end to end with every built-in CAN profile: simulated JK BMS → gateway → slcan → this test.

One parametrised case per built-in profile file whose transport is CAN (aliases name the same file and are not
repeated), so a profile added later is covered without touching this file. Each case wires the chain as
tests/test_chain_e2e.py does: the JK simulator on one end of a null-modem, ``python -m gateway run`` in a
subprocess on the other, its CAN side python-can's ``slcan`` over a second null-modem whose far end this test
opens. The test plays the inverter with the profile's own codecs: it sends the profile's inverter frames (the
heartbeat, SMA's measurements) and, for a request-mode profile, its request frame, and decodes every frame it
hears with the profile's codec. It asserts that frames of every id the profile sends arrive, decode, and carry
the limits the simulated pack calls for; then SIGTERM ends the gateway cleanly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import can
import pytest

from gateway.clock import SystemClock
from gateway.errors import GatewayError
from gateway.profiles import Profile, SendMode, builtin_profile_names, load_profile
from gateway.sim.jk_uart import JkUartSimulator
from gateway.sim.nullmodem import NullModem
from gateway.sim.scenarios import SCENARIOS
from gateway.values import Value

REPO = Path(__file__).resolve().parents[1]
# The simulated pack (normal-charge: 16S LiFePO4, BMS max 150 A charge / 200 A discharge) with these caps:
MAX_CHARGE_CAP_A = 100.0  # below 0.9 × 150 A = 135 A: the cap wins
MAX_DISCHARGE_CAP_A = 250.0  # above 0.9 × 200 A = 180 A: the BMS's share wins
EXPECTED_CCL_A = 100.0
EXPECTED_CVL_V = 55.2  # bulk: 16 × min(3.45, OVP 3.65 − 0.10) = 16 × 3.45
STARTUP_S = 30.0
"""Longest wait for every id (a loaded machine; about 2 s on an idle one)."""
INVERTER_PERIOD_S = 0.25
"""How often this test sends the inverter's frames (heartbeat, measurements, request)."""
SETS = 2
"""Every id must arrive this many times: the stream goes on, it is not one lucky set."""
# What an SMA-style inverter reports in its own frames (any value name an inverter frame carries; 0 if absent).
INVERTER_MEASUREMENTS: dict[str, Value] = {
    "inverter_voltage_v": 53.0,
    "inverter_current_a": 20.0,
    "inverter_temperature_c": 23.0,
    "inverter_soc_pct": 60.0,
    "inverter_soh_pct": 100.0,
    "inverter_charge_voltage_setpoint_v": 55.2,
}


def can_profile_names() -> list[str]:
    """Every built-in profile file speaking CAN; one that does not load stays in, so that its case fails."""
    names = []
    for name in builtin_profile_names():  # file names only: no aliases
        try:
            transport = load_profile(name).transport
        except GatewayError:
            transport = "can"  # the case will show the load error
        if transport == "can":
            names.append(name)
    return names


@dataclass
class Heard:
    count: int = 0
    data: bytes = b""
    decoded: dict[str, Value] = field(default_factory=dict)


def write_config(path: Path, profile: str, bms_port: Path, can_channel: Path) -> None:
    path.write_text(
        f"""\
bms:
  driver: jk-uart
  port: "{bms_port}"
  poll_interval_s: 0.5
  timeout_s: 0.5
inverter:
  profile: {profile}
  can:
    interface: slcan
    channel: "{can_channel}"
    sleep_after_open: 0
limits:
  max_charge_current_a: {MAX_CHARGE_CAP_A}
  max_discharge_current_a: {MAX_DISCHARGE_CAP_A}
failsafe:
  bms_timeout_s: 10
logging:
  level: info
""",
        encoding="utf-8",
    )


@dataclass
class Chain:
    process: subprocess.Popen[bytes]
    bus: can.BusABC
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")


@contextlib.contextmanager
def running_chain(tmp_path: Path, profile: str) -> Iterator[Chain]:
    config_path = tmp_path / "gateway.yaml"
    stderr_path = tmp_path / "gateway.stderr"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    with (
        NullModem(tmp_path / "bms", names=("bms", "gateway")) as bms_cable,
        NullModem(tmp_path / "can", names=("inverter", "gateway")) as can_cable,
    ):
        simulator = JkUartSimulator(SCENARIOS["normal-charge"], SystemClock(), port=str(bms_cable.a_path))
        simulator.start()
        bus = can.Bus(interface="slcan", channel=str(can_cable.a_path), sleep_after_open=0, ignore_config=True)
        process: subprocess.Popen[bytes] | None = None
        try:
            write_config(config_path, profile, bms_cable.b_path, can_cable.b_path)
            with stderr_path.open("wb") as stderr:
                process = subprocess.Popen(
                    [sys.executable, "-m", "gateway", "run", "-c", str(config_path)],
                    cwd=REPO,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                )
            yield Chain(process, bus, stderr_path)
        finally:
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=10)
            bus.shutdown()
            simulator.stop()


def inverter_frames(profile: Profile) -> list[tuple[int, bytes]]:
    """What the inverter sends each period: every inverter frame, encoded by the profile's codec, and the
    request frame of a request-mode profile (8 zero bytes unless it is one of the inverter frames)."""
    frames = [
        (codec.can_id, codec.encode({name: INVERTER_MEASUREMENTS.get(name, 0) for name in codec.value_names}))
        for codec in profile.inverter_frames
    ]
    if profile.request_id is not None and profile.inverter_frame(profile.request_id) is None:
        frames.append((profile.request_id, bytes(8)))
    return frames


def play_inverter(chain: Chain, profile: Profile) -> dict[int, Heard]:
    """Send the inverter's frames every INVERTER_PERIOD_S and decode what comes back, until every id the
    profile sends was heard SETS times."""
    ours = {codec.can_id: codec for codec in profile.frames}
    heard = {can_id: Heard() for can_id in ours}
    outgoing = inverter_frames(profile)
    if profile.mode is SendMode.REQUEST:
        assert any(can_id == profile.request_id for can_id, _ in outgoing)
    deadline = time.monotonic() + STARTUP_S
    next_send = time.monotonic()
    while any(h.count < SETS for h in heard.values()):
        now = time.monotonic()
        if now > deadline:
            missing = sorted(f"{i:#05x}" for i, h in heard.items() if h.count < SETS)
            pytest.fail(f"{profile.name}: {missing} not heard {SETS} times in {STARTUP_S} s; stderr:\n{chain.stderr()}")
        if chain.process.poll() is not None:
            pytest.fail(f"{profile.name}: gateway exited with {chain.process.returncode}; stderr:\n{chain.stderr()}")
        if now >= next_send:
            for can_id, data in outgoing:
                chain.bus.send(can.Message(arbitration_id=can_id, data=data, is_extended_id=False))
            next_send = now + INVERTER_PERIOD_S
        message = chain.bus.recv(timeout=max(0.0, min(next_send - time.monotonic(), 0.1)))
        if message is None or message.is_extended_id or message.is_remote_frame or message.is_error_frame:
            continue
        codec = ours.get(message.arbitration_id)
        if codec is None:
            continue
        data = bytes(message.data)
        assert len(data) == codec.dlc, f"{codec.label}: {len(data)} bytes, dlc {codec.dlc}"
        entry = heard[codec.can_id]
        entry.count += 1
        entry.data = data
        entry.decoded = codec.decode_values(data)  # raises FrameError if it does not decode
    return heard


def values_of(heard: dict[int, Heard], name: str) -> list[float]:
    found = [entry.decoded[name] for entry in heard.values() if name in entry.decoded]
    return [float(value) for value in found if isinstance(value, int | float)]


def half_count(profile: Profile, name: str) -> float:
    """Half the resolution of the (first) field carrying ``name``: the rounding a decoded value may show."""
    return next(f.scale for codec in profile.frames for f in codec.spec.fields if f.value == name) / 2 + 1e-6


@pytest.mark.parametrize("name", can_profile_names())
def test_gateway_runs_end_to_end_with_every_can_profile(name: str, tmp_path: Path) -> None:
    profile = load_profile(name)
    with running_chain(tmp_path, name) as chain:
        heard = play_inverter(chain, profile)
        chain.process.send_signal(signal.SIGTERM)
        try:
            returncode = chain.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{name}: no exit within 10 s of SIGTERM; stderr:\n{chain.stderr()}")
        stderr = chain.stderr()
    assert returncode == 0, stderr
    assert "Traceback" not in stderr, stderr

    # The limits the simulated pack calls for, as the profile's own codec reads them.
    ccl = values_of(heard, "charge_current_limit_a")
    cvl = values_of(heard, "charge_voltage_limit_v")
    assert ccl and cvl, f"{name}: no frame carries the charge current and voltage limits"
    for value in ccl:
        assert 0 < value <= MAX_CHARGE_CAP_A + half_count(profile, "charge_current_limit_a")
        assert value == pytest.approx(EXPECTED_CCL_A, abs=half_count(profile, "charge_current_limit_a"))
    for value in cvl:
        assert 0 < value <= EXPECTED_CVL_V + half_count(profile, "charge_voltage_limit_v"), "CVL above bulk"
        assert value == pytest.approx(EXPECTED_CVL_V, abs=half_count(profile, "charge_voltage_limit_v"))
    for value in values_of(heard, "discharge_current_limit_a"):
        assert value > 0
    for value in values_of(heard, "soc_pct"):
        assert 0 < value <= 100
