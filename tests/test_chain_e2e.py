"""The whole chain across processes: simulated JK BMS → ``bms-gateway run`` → slcan CAN → this test.

The simulator speaks the real JK wire protocol on one end of a null-modem; ``python -m gateway run`` runs in a
subprocess with ``bms.port`` on the other end, exactly as it would on a USB adapter. Its CAN side is python-can's
``slcan`` interface (the ASCII protocol of CANable-style adapters) over a second null-modem, whose other end
this test opens as an slcan bus of its own. Each side ignores the other's slcan commands (``O``, ``C``, ``S6``):
they are not frames.

The frames are decoded with cantools and the third-party DBC of plewka/PylontechUSX00C_CAN2MQTT (plus our own
supplement DBC for the discharge voltage limit), read from ``../shared/dbc`` next to the repository (GPL-3.0:
never copied into this repository); without ``../shared`` that test is skipped, except under ``CI=true``, where it
fails. The shutdown test needs no DBC: it reads the few bytes it checks by hand, from the spec.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import can
import pytest

from gateway.clock import SystemClock
from gateway.model import PackReading
from gateway.sim.jk_uart import JkUartSimulator
from gateway.sim.nullmodem import NullModem
from gateway.sim.scenarios import SCENARIOS, Scenario, Step

REPO = Path(__file__).resolve().parents[1]
SHARED_DBC_DIR = REPO.parent / "shared" / "dbc"
THIRD_PARTY_DBC = SHARED_DBC_DIR / "pylontech_plewka.dbc"
OUR_SUPPLEMENT_DBC = SHARED_DBC_DIR / "pylontech_lv_supplement_OURS.dbc"

FRAME_IDS = (0x351, 0x355, 0x356, 0x359, 0x35C, 0x35E)
# The simulated pack allows 150 A charge and 200 A discharge (gateway.sim.scenarios.base_settings).
MAX_CHARGE_CAP_A = 100.0  # below 0.9 × the BMS's 150 A = 135 A: the cap wins
MAX_DISCHARGE_CAP_A = 250.0  # above 0.9 × the BMS's 200 A = 180 A: the BMS's share wins
EXPECTED_CCL_A = 100.0
EXPECTED_DCL_A = 180.0  # 0.9 × 200 A
EXPECTED_CVL_V = 55.2  # LiFePO4 bulk: 16 × min(3.45, OVP 3.65 − 0.10) = 16 × 3.45
EXPECTED_DVL_V = 44.8  # discharge cut-off: 16 × (UVP 2.70 + 0.10)
STARTUP_S = 30.0
"""Longest wait for the subprocess's first frames (imports take about 1 s on an idle machine)."""


def load_dbc(path: Path) -> Any:
    """The cantools database at ``path``; skip (or fail under CI=true) when ../shared is missing."""
    if not path.is_file():
        reason = f"{path} not found: the shared research folder ../shared is not next to the repository"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}; the DBC cross-check must run in CI")
        pytest.skip(reason)
    cantools = pytest.importorskip("cantools")
    return cantools.database.load_file(str(path), strict=True)


@dataclass
class Heard:
    at_s: float
    """time.monotonic() when this test read the frame."""
    can_id: int
    data: bytes


@dataclass
class Chain:
    """A running chain: the gateway subprocess, the test's slcan bus and what the simulator served."""

    process: subprocess.Popen[bytes]
    bus: can.BusABC
    stderr_path: Path
    served: list[tuple[float, PackReading]]
    """(time.monotonic(), reading) for every reply the simulated BMS produced, in order."""
    served_lock: threading.Lock
    heard: list[Heard] = field(default_factory=list)

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def listen_until(self, done: Callable[[list[Heard]], bool], within_s: float) -> None:
        """Read frames into :attr:`heard` until ``done(heard)`` or ``within_s`` passed (then fail)."""
        deadline = time.monotonic() + within_s
        while not done(self.heard):
            if time.monotonic() > deadline:
                pytest.fail(f"no such frames within {within_s} s; heard {len(self.heard)}; stderr:\n{self.stderr()}")
            if self.process.poll() is not None and not self._receive(0.2):
                pytest.fail(f"gateway exited with {self.process.returncode}; stderr:\n{self.stderr()}")
            self._receive(0.2)

    def drain(self, quiet_s: float) -> None:
        """Read frames until none arrived for ``quiet_s``."""
        while self._receive(quiet_s):
            pass

    def _receive(self, timeout_s: float) -> bool:
        message = self.bus.recv(timeout=timeout_s)
        if message is None:
            return False
        if not (message.is_extended_id or message.is_remote_frame or message.is_error_frame):
            self.heard.append(Heard(time.monotonic(), message.arbitration_id, bytes(message.data)))
        return True

    def served_before(self, at_s: float) -> list[PackReading]:
        with self.served_lock:
            return [reading for served_at, reading in self.served if served_at <= at_s]


def complete_sets(heard: list[Heard]) -> list[dict[int, Heard]]:
    """Groups of frames that start with 0x351 and hold every profile frame once before the next 0x351."""
    sets: list[dict[int, Heard]] = []
    current: dict[int, Heard] | None = None
    for frame in heard:
        if frame.can_id == 0x351:
            current = {}
            sets.append(current)
        if current is not None and frame.can_id in FRAME_IDS:
            current.setdefault(frame.can_id, frame)
    return [s for s in sets if sorted(s) == list(FRAME_IDS)]


def write_config(path: Path, bms_port: Path, can_channel: Path, poll_interval_s: float = 1.0) -> None:
    path.write_text(
        f"""\
bms:
  driver: jk-uart
  port: "{bms_port}"
  poll_interval_s: {poll_interval_s}
  timeout_s: 0.5
inverter:
  profile: pylontech-can
  can:
    interface: slcan
    channel: "{can_channel}"
    # Handed to can.Bus unchanged: no 2 s wait for an adapter to boot (a pty needs none).
    sleep_after_open: 0
    # bitrate unset: the profile's 500 kbit/s, which slcan supports (command S6)
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


@contextlib.contextmanager
def running_chain(
    tmp_path: Path,
    scenario_name: str = "normal-charge",
    time_scale: float = 1.0,
    poll_interval_s: float = 1.0,
    env_extra: dict[str, str] | None = None,
) -> Iterator[Chain]:
    """``time_scale`` > 1 plays the scenario faster than real time."""
    served: list[tuple[float, PackReading]] = []
    served_lock = threading.Lock()
    base = SCENARIOS[scenario_name]

    def recorded_step(t_s: float) -> Step:
        step = base.step(t_s * time_scale)
        with served_lock:
            served.append((time.monotonic(), step.reading))
        return step

    scenario = Scenario(f"{scenario_name} (recorded)", base.description, recorded_step)
    config_path = tmp_path / "gateway.yaml"
    stderr_path = tmp_path / "gateway.stderr"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.update(env_extra or {})
    with (
        NullModem(tmp_path / "bms", names=("bms", "gateway")) as bms_cable,
        NullModem(tmp_path / "can", names=("inverter", "gateway")) as can_cable,
    ):
        simulator = JkUartSimulator(scenario, SystemClock(), port=str(bms_cable.a_path))
        simulator.start()
        # Open our end before the gateway starts, so its first frames wait for us instead of being flushed.
        bus = can.Bus(interface="slcan", channel=str(can_cable.a_path), sleep_after_open=0, ignore_config=True)
        process: subprocess.Popen[bytes] | None = None
        try:
            write_config(config_path, bms_cable.b_path, can_cable.b_path, poll_interval_s)
            with stderr_path.open("wb") as stderr:
                process = subprocess.Popen(
                    [sys.executable, "-m", "gateway", "run", "-c", str(config_path)],
                    cwd=REPO,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                )
            yield Chain(process, bus, stderr_path, served, served_lock)
        finally:
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=10)
            bus.shutdown()
            simulator.stop()


def test_frames_decode_with_the_third_party_dbc_to_the_simulated_values(tmp_path: Path) -> None:
    plewka = load_dbc(THIRD_PARTY_DBC)
    ours = load_dbc(OUR_SUPPLEMENT_DBC)
    with running_chain(tmp_path) as chain:
        chain.listen_until(lambda heard: len(complete_sets(heard)) >= 3, within_s=STARTUP_S)
        sets = complete_sets(chain.heard)

        for frames in sets:

            def decode(db: Any, can_id: int, frames: dict[int, Heard] = frames) -> dict[str, Any]:
                message = db.get_message_by_frame_id(can_id)
                data = frames[can_id].data
                assert len(data) >= message.length, f"{can_id:#x}: {len(data)} bytes, the DBC wants {message.length}"
                return dict(message.decode(data, decode_choices=False, scaling=True, allow_excess=False))

            limits = decode(plewka, 0x351)
            assert limits == pytest.approx(
                {
                    "Battery_Charge_Voltage": EXPECTED_CVL_V,
                    "Charge_Current_Limitation": EXPECTED_CCL_A,
                    "Discharge_Current_Limitation": EXPECTED_DCL_A,
                }
            )
            assert decode(ours, 0x351)["Discharge_Voltage_Limit"] == pytest.approx(EXPECTED_DVL_V)

            # The reading behind this set: one the simulator served shortly before the set arrived (the
            # gateway may not have decoded the newest reply yet when it sent the set).
            candidates = chain.served_before(frames[0x351].at_s)[-3:]
            assert candidates, "a set arrived before the simulator served any reading"
            state = decode(plewka, 0x355)
            battery = decode(plewka, 0x356)
            assert state["SOH"] == 100  # the JK protocol carries no SOH
            matches = [
                r
                for r in candidates
                if state["SOC"] == round(r.state.soc_pct)
                and abs(battery["Battery_Voltage"] - r.state.pack_voltage_v) <= 0.005 + 1e-6
                and abs(battery["Battery_Current"] - r.state.current_a) <= 0.05 + 1e-6
            ]
            shown = [(r.state.soc_pct, r.state.pack_voltage_v, r.state.current_a) for r in candidates]
            assert matches, f"SOC/voltage/current {state}, {battery} match none of the served readings {shown}"
            # Mean of the two battery sensors (23 and 22 °C in this scenario).
            sensors = [t for t in matches[-1].state.battery_temperatures_c if t is not None]
            assert battery["Battery_Temperature"] == pytest.approx(sum(sensors) / len(sensors), abs=0.05)

            alarms = decode(plewka, 0x359)
            assert alarms.pop("Pack_Nr") == 1
            assert set(alarms.values()) == {0}, f"no alarm is active, yet {alarms}"
            assert decode(plewka, 0x35C) == {"Charge_Enable": 1, "Discharge_Enable": 1, "Charge_Immediately": 0}
            name = decode(plewka, 0x35E)
            assert "".join(chr(int(name[letter])) for letter in "abcdefgh") == "PYLON   "

        # A set a second: the three sets span about two periods.
        span = sets[2][0x351].at_s - sets[0][0x351].at_s
        assert 1.0 < span < 3.0


def test_sigterm_sends_a_zero_set_and_exits_cleanly(tmp_path: Path) -> None:
    def ccl_dcl(data: bytes) -> tuple[float, float]:
        # 0x351 bytes 2-3 CCL and 4-5 DCL: signed 16-bit little-endian, 0.1 A.
        return (
            int.from_bytes(data[2:4], "little", signed=True) / 10,
            int.from_bytes(data[4:6], "little", signed=True) / 10,
        )

    def limits_heard(heard: list[Heard]) -> bool:
        return any(f.can_id == 0x351 and ccl_dcl(f.data) == (EXPECTED_CCL_A, EXPECTED_DCL_A) for f in heard)

    with running_chain(tmp_path) as chain:
        chain.listen_until(limits_heard, within_s=STARTUP_S)
        chain.listen_until(lambda heard: heard[-1].can_id == 0x35E, within_s=5.0)  # a whole set is through
        stopped_at = len(chain.heard)
        chain.process.send_signal(signal.SIGTERM)
        try:
            returncode = chain.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the gateway did not exit within 15 s of SIGTERM; stderr:\n{chain.stderr()}")
        chain.drain(quiet_s=1.0)
        stderr = chain.stderr()

    assert returncode == 0, stderr
    assert "Traceback" not in stderr, stderr
    after = chain.heard[stopped_at:]
    assert after, "no frame after SIGTERM: the final zero set never went out"
    last_limits = [f for f in chain.heard if f.can_id == 0x351][-1]
    assert ccl_dcl(last_limits.data) == (0.0, 0.0)
    last_requests = [f for f in chain.heard if f.can_id == 0x35C][-1]
    assert last_requests.data[0] & 0x80 == 0, "charge enable (0x35C byte 0 bit 7) still set"
    assert last_requests.data[0] & 0x40 == 0, "discharge enable (0x35C byte 0 bit 6) still set"
    assert any(f is last_limits for f in after) and any(f is last_requests for f in after)


def test_missing_shared_dbc_skips_locally_and_fails_in_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "shared" / "dbc" / "pylontech_plewka.dbc"
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not found"):
        load_dbc(missing)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true"):
        load_dbc(missing)


def test_ccl_tapers_on_the_bus_as_a_cell_rises_towards_ovp(tmp_path: Path) -> None:
    """The cell-ovp scenario, 4× faster: cell 7 climbs 3.40 → 3.75 V. The limits engine tapers CCL from the
    knee (3.40 V) to 0 A at the cut-off (3.55 V, midway between bulk 3.45 V and OVP 3.65 V), before the BMS
    trips at 3.65 V; the bus shows the falling steps, not a jump from 100 A to 0."""

    def ccls(heard: list[Heard]) -> list[float]:
        # 0x351 bytes 2-3: CCL, signed 16-bit little-endian, 0.1 A.
        return [int.from_bytes(f.data[2:4], "little", signed=True) / 10 for f in heard if f.can_id == 0x351]

    def cut_off_seen(heard: list[Heard]) -> bool:
        values = ccls(heard)
        return 0.0 in values

    with running_chain(tmp_path, "cell-ovp", time_scale=4.0, poll_interval_s=0.25) as chain:
        chain.listen_until(cut_off_seen, within_s=STARTUP_S)
        zero_at = next(f.at_s for f in chain.heard if f.can_id == 0x351 and ccls([f]) == [0.0])
        served = chain.served_before(zero_at)

    values = ccls(chain.heard)
    falling = values[: values.index(0.0) + 1]
    # The scenario starts with cell 7 at 3.40 V, at the knee: the first limits are near the 100 A cap.
    assert falling[0] > 0.8 * EXPECTED_CCL_A, falling
    taper = sorted(set(falling) - {0.0, falling[0]})
    assert len(taper) >= 5, f"CCL went to 0 A without a taper: {falling}"
    assert falling == sorted(falling, reverse=True), f"not monotonic while the cell rises: {falling}"
    # 0 A reached the bus before the cell reached the BMS's OVP (3.65 V): the BMS never had to trip.
    assert max(r.state.max_cell_v for r in served) < 3.65


def test_a_hung_control_loop_stops_both_the_watchdog_pings_and_the_frames(tmp_path: Path) -> None:
    """The real service under a fake systemd: READY once running, WATCHDOG pings while the loop turns; when the
    loop hangs (the fault hook, 4 s after start) the pings stop and so do the inverter frames, so systemd
    restarts the gateway and the inverter never keeps hearing old limits."""
    notify_path = tmp_path / "notify.sock"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(notify_path))
    notify.settimeout(0.1)
    messages: list[tuple[float, str]] = []

    def drain_notify() -> None:
        while True:
            try:
                messages.append((time.monotonic(), notify.recv(4096).decode()))
            except TimeoutError:
                return

    env = {
        "NOTIFY_SOCKET": str(notify_path),
        "WATCHDOG_USEC": "1000000",  # 1 s: pings every 0.5 s
        "BMS_GATEWAY_FAULT": "hang-after:4",
    }
    try:
        with running_chain(tmp_path, env_extra=env) as chain:
            chain.listen_until(lambda heard: any(f.can_id == 0x351 for f in heard), within_s=STARTUP_S)
            deadline = time.monotonic() + 12.0
            while time.monotonic() < deadline:
                chain.drain(quiet_s=0.3)
                drain_notify()
            heard = list(chain.heard)
    finally:
        notify.close()

    texts = [text for _, text in messages]
    assert any("READY=1" in t for t in texts), texts
    pings = [at for at, text in messages if "WATCHDOG=1" in text]
    frames = [f.at_s for f in heard if f.can_id == 0x351]
    assert len(pings) >= 3, texts
    last_ping, last_frame = pings[-1], frames[-1]
    # After the hang nothing more: at least 3 s (several watchdog periods) of silence on both before the end.
    assert deadline - last_ping > 3.0, (deadline - last_ping, texts[-5:])
    assert deadline - last_frame > 3.0, deadline - last_frame
    assert abs(last_ping - last_frame) < 2.0
