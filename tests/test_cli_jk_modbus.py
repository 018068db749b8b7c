"""``bms-gateway read`` and ``simulate`` with the JK-PB (``jk-modbus``): the real processes against the simulator
through a null-modem."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.bms.jk_modbus_driver import JkModbusDriver
from gateway.clock import FakeClock
from gateway.sim.jk_modbus import JkModbusSimulator, SimPack, pack_variant
from gateway.sim.nullmodem import NullModem
from gateway.sim.scenarios import SCENARIOS, Behaviour

REPO = Path(__file__).resolve().parent.parent
TIMEOUT_S = 0.3
SIM_PASSCODES = ("S1mPa55code", "1234")
"""The simulator's setup and device passcodes: they travel in its trigger info frame."""


def run_cli(*args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def json_documents(text: str) -> list[dict[str, Any]]:
    """``read --json`` prints one JSON document per pack, one after the other."""
    decoder = json.JSONDecoder()
    documents: list[dict[str, Any]] = []
    at = 0
    while text[at:].strip():
        while text[at].isspace():
            at += 1
        document, at = decoder.raw_decode(text, at)
        documents.append(document)
    return documents


def config_file(tmp_path: Path, port: str, addresses: list[int]) -> Path:
    data = {
        "bms": {"driver": "jk-modbus", "port": port, "addresses": addresses, "timeout_s": TIMEOUT_S, "retries": 0},
        "inverter": {"profile": "pylontech-can", "can": {"interface": "virtual", "channel": "bms-gateway-test"}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[tuple[NullModem, JkModbusSimulator]]:
    """Three packs at 1, 2, 3; pack 3 needs the trigger frames (so its info frame, passcodes and all, is read)."""
    scenario = SCENARIOS["normal-charge"]
    packs = {unit: SimPack(pack_variant(scenario, index)) for index, unit in enumerate((1, 2, 3))}
    packs[3] = SimPack(pack_variant(scenario, 2), answers_fc03=False)
    with NullModem(tmp_path / "rs485") as modem:
        simulator = JkModbusSimulator(packs, FakeClock(), port=str(modem.a_path))
        simulator.start()
        try:
            assert simulator.wait_serving(10)
            yield modem, simulator
        finally:
            simulator.stop()


def assert_no_passcode(*texts: str) -> None:
    for text in texts:
        for passcode in SIM_PASSCODES:
            assert passcode not in text


def test_read_prints_every_pack(tmp_path: Path, bus: tuple[NullModem, JkModbusSimulator]) -> None:
    modem, _ = bus
    config = config_file(tmp_path, str(modem.b_path), [1, 2, 3])
    result = run_cli("read", "-c", str(config), "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    *documents, battery = json_documents(result.stdout)
    assert [d["pack_id"] for d in documents] == [f"jk-modbus:{modem.b_path}#{unit}" for unit in (1, 2, 3)]
    assert battery["pack_id"] == "battery" and battery["packs"] == [d["pack_id"] for d in documents]
    for document in documents:
        assert document["implausible"] is None
        assert document["state"]["cell_count"] == 16
        assert document["settings"]["cell_ovp_v"] == pytest.approx(3.65)
        assert document["device"]["model"] == "JK_PB-SIMULATOR"
        assert document["limits"]["charge_current_limit_a"] >= 0
        assert document["current_sharing"] == "equal"  # auto, three packs alike
    socs = [d["state"]["soc_pct"] for d in documents]
    assert socs == [socs[0], socs[0] - 1, socs[0] - 2]
    assert_no_passcode(result.stdout, result.stderr)

    text = run_cli("read", "-c", str(config))
    assert text.returncode == 0, text.stderr
    for unit in (1, 2, 3):
        assert f"pack jk-modbus:{modem.b_path}#{unit}  (JK_PB-SIMULATOR, sw SIM15.41)" in text.stdout
    assert "current shared among the 3 packs by equal (auto: capacities within 10%, or not all reported)" in text.stdout
    assert_no_passcode(text.stdout, text.stderr)


def test_read_with_a_silent_pack_warns_and_prints_the_others(
    tmp_path: Path, bus: tuple[NullModem, JkModbusSimulator]
) -> None:
    modem, simulator = bus
    simulator.set_behaviour(2, Behaviour.SILENT)
    result = run_cli("read", "-c", str(config_file(tmp_path, str(modem.b_path), [1, 2, 3])), "--json")
    assert result.returncode == 0, result.stderr
    *packs, battery = json_documents(result.stdout)
    assert [d["pack_id"][-2:] for d in packs] == ["#1", "#3"]
    assert battery["pack_id"] == "battery" and battery["packs"] == [d["pack_id"] for d in packs]
    assert result.stderr.splitlines() == [
        f"bms-gateway: warning: pack jk-modbus:{modem.b_path}#2: no reply from unit 2 on {modem.b_path}"
        f" within {TIMEOUT_S:g} s"
    ]


def test_read_shows_the_battery_total_and_the_limits_the_inverter_gets(
    tmp_path: Path, bus: tuple[NullModem, JkModbusSimulator]
) -> None:
    """Each pack's own limits allow 100 A (the default cap); the battery of three gets 100 A, not 300 A: the cap
    bounds the total. The audit's "read never shows the combined limit the inverter actually gets"."""
    modem, _ = bus
    config = config_file(tmp_path, str(modem.b_path), [1, 2, 3])
    *packs, battery = json_documents(run_cli("read", "-c", str(config), "--json").stdout)
    assert battery["state"]["current_a"] == pytest.approx(sum(p["state"]["current_a"] for p in packs))
    assert battery["state"]["cell_count"] == 48
    assert [p["limits"]["charge_current_limit_a"] for p in packs] == [100.0] * 3
    assert battery["limits"]["charge_current_limit_a"] == 100.0
    assert battery["limits"]["reasons"]["charge_current_limit_a"]["limiter"] == "user_cap"

    text = run_cli("read", "-c", str(config))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    soc = round(battery["state"]["soc_pct"])
    assert any(line.startswith("battery of 3 packs in parallel: ") and f"SOC {soc} %" in line for line in lines)
    cells = next(line for line in lines if line.startswith("  cells (48): "))
    assert re.fullmatch(r"  cells \(48\): min 3\.\d{3} V \(P\d C\d\d\)  max 3\.\d{3} V \(P\d C\d\d\)  Δ \d+ mV", cells)
    limits = lines.index("battery limits (what the inverter would be told, from every pack's own):")
    assert lines[limits + 2].startswith("  CCL 100.0 A     user_cap: user cap 100 A for the battery")
    for number, unit in enumerate((1, 2, 3), start=1):
        assert f"P{number}: pack jk-modbus:{modem.b_path}#{unit}" in text.stdout
        assert f"  P{number} C01-C08  3." in text.stdout and f"  P{number} C09-C16  3." in text.stdout
        assert f"P{number}'s own limits (the battery's are below):" in lines


def test_read_with_no_pack_answering_is_one_error_line_and_its_hint(
    tmp_path: Path, bus: tuple[NullModem, JkModbusSimulator]
) -> None:
    modem, simulator = bus
    for unit in (1, 2, 3):
        simulator.set_behaviour(unit, Behaviour.SILENT)
    result = run_cli("read", "-c", str(config_file(tmp_path, str(modem.b_path), [1, 2, 3])))
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"bms-gateway: error: no reply from units 1, 2, 3 on {modem.b_path} within {TIMEOUT_S:g} s",
        "hint: check bms.driver (jk-uart for JK B-series/BD6A via the RS485 adapter, jk-modbus for JK-PB inverter "
        "BMSs), TX/RX not swapped, GND connected, 115200 baud, and each pack's DIP address in bms.addresses (1-15; "
        "0 makes a pack the bus master)",
    ]


def test_check_accepts_a_jk_modbus_config(tmp_path: Path) -> None:
    result = run_cli("check", "-c", str(config_file(tmp_path, "/dev/null", [1, 2, 3, 4])), "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["config"]["bms"]["addresses"] == [1, 2, 3, 4]


def test_simulate_jk_modbus_serves_the_addresses() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "simulate", "jk-modbus", "--addresses", "1", "2", "3", "--duration", "20"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        path = process.stdout.readline().strip()
        driver = JkModbusDriver(port=path, clock=FakeClock(), addresses=(1, 2, 3), timeout_s=1.0, retries=2)
        try:
            readings = driver.read()
        finally:
            driver.close()
        assert [r.pack_id for r in readings] == [f"jk-modbus:{path}#{unit}" for unit in (1, 2, 3)]
        assert driver.pack_errors == {}
    finally:
        process.send_signal(signal.SIGINT)  # Ctrl-C: the simulator stops and removes its null-modem
        _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130
    assert "simulating a JK-PB BMS at addresses 1, 2, 3 (normal-charge)" in stderr
    assert "Traceback" not in stderr
    assert not Path(path).parent.exists()


def test_simulate_jk_uart_refuses_addresses() -> None:
    result = run_cli("simulate", "jk-uart", "--addresses", "2", "--duration", "0")
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["bms-gateway: error: --addresses: only for jk-modbus"]


def test_simulate_rejects_a_bad_address() -> None:
    result = run_cli("simulate", "jk-modbus", "--addresses", "0", "--duration", "0")
    assert result.returncode == 2
    assert "0 is not a Modbus unit address (1–247)" in result.stderr
