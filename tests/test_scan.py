"""``bms-gateway scan`` against the JK-PB simulator: which units answer, with model and firmware, and the
address-0 warnings (a pack whose settings say address 0, foreign traffic from a pack acting as bus master)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from multipack_fixtures import FOUR, constant

from gateway.bms import jk_modbus
from gateway.bms.jk_modbus_scan import Found, ScanResult, scan, scan_warnings
from gateway.cli import main
from gateway.cli.scan import parse_addresses
from gateway.clock import FakeClock
from gateway.errors import LinkError
from gateway.model import DeviceInfo
from gateway.sim.jk_modbus import JkModbusSimulator, SimPack
from gateway.sim.nullmodem import A_TO_B, NullModem

TIMEOUT_S = 0.15
MASTER_POLL = jk_modbus.trigger_request(2, jk_modbus.LIVE)
"""What a pack at address 0 sends as bus master: the status trigger to unit 2."""


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[tuple[NullModem, JkModbusSimulator]]:
    modem = NullModem(tmp_path / "rs485")
    modem.start()
    packs: Mapping[int, SimPack] = {
        1: SimPack(constant(FOUR[1])),
        3: SimPack(constant(FOUR[3])),
        4: SimPack(constant(FOUR[4]), reported_address=0),
        5: SimPack(constant(FOUR[2]), answers_fc03=False, reported_address=9),
    }
    simulator = JkModbusSimulator(packs, FakeClock(), port=str(modem.a_path))
    simulator.start()
    assert simulator.wait_serving(10)
    yield modem, simulator
    simulator.stop()
    modem.stop()


def test_scan_lists_the_units_that_answer_and_warns_about_address_zero(
    bus: tuple[NullModem, JkModbusSimulator],
) -> None:
    modem, simulator = bus
    seen: list[int] = []
    result = scan(
        str(modem.b_path),
        addresses=range(1, 7),
        timeout_s=TIMEOUT_S,
        listen_s=0,
        on_probe=lambda unit, found: seen.append(unit),
    )
    assert seen == [1, 2, 3, 4, 5, 6]
    assert [(p.address, p.method, p.reported_address) for p in result.found] == [
        (1, "FC03", 1),
        (3, "FC03", 3),
        (4, "FC03", 0),
        (5, "trigger", 9),  # FC03 unanswered: found by the trigger frame
    ]
    assert result.found[0].device.model == "JK_PB2A16S20P"
    assert result.found[0].device.software_version == "15.41"
    assert simulator.writes and all(w.address in (0x161C, 0x161E, 0x1620) for w in simulator.writes)
    warnings = scan_warnings(result)
    assert len(warnings) == 2
    assert warnings[0].startswith("unit 4 reports device address 0: after its next power-up it will act as bus master")
    assert warnings[1].startswith("unit 5 reports device address 9: its DIP switches were changed since power-up")


def test_scan_hears_another_master_before_polling(bus: tuple[NullModem, JkModbusSimulator]) -> None:
    modem, _ = bus
    timer = threading.Timer(0.2, modem.inject, (A_TO_B, MASTER_POLL * 3))
    timer.start()
    try:
        result = scan(str(modem.b_path), addresses=[1], timeout_s=TIMEOUT_S, listen_s=0.6)
    finally:
        timer.cancel()
    assert result.foreign_bytes == 3 * len(MASTER_POLL)
    (warning,) = scan_warnings(result)
    assert "another master is on the bus" in warning and "address 0" in warning
    assert [p.address for p in result.found] == [1], "the scan still reads the packs that answer"


def test_warnings_without_a_bus() -> None:
    nobody = ScanResult("/dev/x", (1, 2, 3, 7), (), 0, 1.0)
    assert scan_warnings(nobody) == ["no JK-PB answered on /dev/x at units 1-3, 7"]
    fine = ScanResult("/dev/x", (1,), (Found(1, DeviceInfo(), "FC03", 1),), 0, 1.0)
    assert scan_warnings(fine) == []
    unknown = ScanResult("/dev/x", (1,), (Found(1, DeviceInfo(), "FC03", None),), 0, 1.0)
    assert scan_warnings(unknown) == []


def test_cli(bus: tuple[NullModem, JkModbusSimulator], capsys: pytest.CaptureFixture[str]) -> None:
    modem, _ = bus
    port = str(modem.b_path)
    status = main(["scan", "--port", port, "--addresses", "1-3", "--timeout", str(TIMEOUT_S), "--listen", "0"])
    out, err = capsys.readouterr()
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["unit", "model", "firmware", "hardware", "serial", "read", "by"]
    assert lines[1].split()[:4] == ["1", "JK_PB2A16S20P", "15.41", "15A"]
    assert lines[-1] == "bms.addresses: [1, 3]"
    assert "warning" not in err

    status = main(["scan", "--port", port, "--addresses", "4", "--timeout", str(TIMEOUT_S), "--listen", "0", "--json"])
    document = json.loads(capsys.readouterr().out)
    assert status == 1
    assert document["found"][0]["reported_address"] == 0 and len(document["warnings"]) == 1

    assert main(["scan", "--port", str(modem.directory / "absent"), "--listen", "0.1"]) == 1
    assert "cannot open serial port" in capsys.readouterr().err


def test_address_ranges() -> None:
    assert parse_addresses("1-4,7, 9-10") == (1, 2, 3, 4, 7, 9, 10)
    assert parse_addresses("3,1,3") == (3, 1)
    for bad in ("0-3", "5-2", "x", "1-248"):
        with pytest.raises(Exception, match="units"):
            parse_addresses(bad)


def test_a_missing_port_is_a_link_error(tmp_path: Path) -> None:
    with pytest.raises(LinkError, match="cannot open serial port"):
        scan(str(tmp_path / "absent"), listen_s=0.05)
