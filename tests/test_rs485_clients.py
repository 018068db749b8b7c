"""Two independent inverter-side clients from PyPI poll the gateway's Pylontech RS485 output over a null-modem.

``pylontech`` 0.1.3 and ``python-pylontech`` 0.3.3 both install a top-level package named ``pylontech``, so each
is installed with ``pip install --target`` into its own directory (``.venv/pypi-clients/<name>-<version>``,
kept between runs) and run in a subprocess with only that directory on ``PYTHONPATH``. They address packs
differently (0.1.3: address 2 + pack index with a 2-byte INFO; 0.3.3: address 0 for version and manufacturer,
a 1-byte INFO, ``FF`` for every module) and both must parse every command they support to the gateway's live
values and limits. Without PyPI the tests are skipped, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from rs485_fixtures import FixedSource, reading

from gateway.rs485.profile import load_rs485_profile
from gateway.rs485.server import OutputSettings, Rs485Output
from gateway.sim.nullmodem import NullModem
from gateway.transport.serial_server import SerialEndpoint

REPO: Final = Path(__file__).resolve().parents[1]
CLIENTS_DIR: Final = REPO / ".venv" / "pypi-clients"
DRIVERS: Final = Path(__file__).parent / "pylontech_clients"
SECOND_SERIAL: Final = "JK000000000002BB"


def _client(requirement: str) -> Path:
    """The directory ``requirement`` is installed in (installed now if it is not yet)."""
    target = CLIENTS_DIR / requirement.replace("==", "-")
    if (target / "pylontech").is_dir():
        return target
    CLIENTS_DIR.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".install-", dir=CLIENTS_DIR))
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-input"]
    try:
        done = subprocess.run(
            [*command, "--target", str(staging), requirement], capture_output=True, text=True, timeout=600
        )
        if done.returncode != 0 or not (staging / "pylontech").is_dir():
            reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
            message = f"cannot install {requirement} from PyPI: {reason}"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        staging.rename(target)  # whole or not at all: a half-installed client is never reused
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _stack() -> FixedSource:
    second = reading(
        current_a=-10.0,
        soc_pct=53.0,
        remaining_capacity_ah=148.4,
        cell_voltages_v=tuple(round(v - 0.01, 3) for v in reading().state.cell_voltages_v),
        pack_voltage_v=52.74,
    )
    second = type(second)(second.pack_id + "2", second.state, second.settings, type(second.device)(
        model="JK-PB2A16S20P", serial_number=SECOND_SERIAL
    ))  # fmt: skip
    return FixedSource(reading(), second)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[FixedSource, Path]]:
    """The gateway's pylontech-rs485 output for a 2-pack stack on one end of a null-modem; yields the other."""
    source = _stack()
    with NullModem(tmp_path, names=("inverter", "battery")) as modem:
        output = Rs485Output(
            load_rs485_profile("pylontech-rs485"),
            SerialEndpoint(str(modem.b_path), 9600),
            2,
            source,
            source.clock,
            OutputSettings(bms_timeout_s=10, silence_after_s=60),
        )
        output.start()
        assert output.wait_serving()
        try:
            yield source, modem.a_path
        finally:
            output.stop()


def _run(client: Path, script: str, *args: str, tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / f"{script}.json"
    done = subprocess.run(
        [sys.executable, str(DRIVERS / script), *args, str(out)],
        env={**os.environ, "PYTHONPATH": str(client)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return result


def test_pylontech_0_1_3(gateway: tuple[FixedSource, Path], tmp_path: Path) -> None:
    source, port = gateway
    client = _client("pylontech==0.1.3")
    got = _run(client, "drive_pylontech.py", str(port), "2", tmp_path=tmp_path)
    first, second = (r.state for r in source.readings)
    assert got["SerialNumbers"] == ["JK0123456789ABCD", SECOND_SERIAL]
    for analog, state, address in zip(got["AnaloglList"], (first, second), (2, 3), strict=True):
        assert analog["ADR"] == address
        assert analog["CellVoltages"] == list(state.cell_voltages_v)
        assert analog["Temperatures"] == [state.mos_temperature_c, *state.battery_temperatures_c]
        assert analog["Current"] == state.current_a
        assert analog["Voltage"] == state.pack_voltage_v
        assert analog["CapDetect"] == ">65Ah"  # the 3-byte capacities
        assert analog["ModuleTotalCapacity"] == 280.0
        assert analog["RemainCapacity"] == pytest.approx(280.0 * state.soc_pct / 100)
        assert analog["CycleNumber"] == 42
    assert got["Calculated"]["TotalCapacity_Ah"] == 560.0
    assert got["Calculated"]["Remain_Percent"] == 54.0  # (154.0 + 148.4) / 560
    limits = source.limits
    assert limits is not None
    for management in got["ChargeDischargeManagementList"]:
        # Each module reports its share of the battery's current limits (2 modules).
        assert management["ChargeVoltage"] == limits.charge_voltage_limit_v
        assert management["DischargeVoltage"] == limits.discharge_voltage_limit_v
        assert management["ChargeCurrent"] == limits.charge_current_limit_a / 2
        assert management["DischargeCurrent"] == -limits.discharge_current_limit_a / 2
        assert management["StatusChargeEnable"] is True
        assert management["StatusDischargeEnable"] is True
        assert management["StatusChargeImmediately1"] is False
        assert management["StatusFullChargeRequired"] is False
    for alarms in got["AlarmInfoList"]:
        assert alarms["CellCount"] == 16 and set(alarms["CellAlarm"]) == {"Ok"}
        assert alarms["TemperatureAlarm"] == ["Ok"] * 3
        assert (alarms["ChargeCurentAlarm"], alarms["ModuleVoltageAlarm"], alarms["DischargeCurrentAlarm"]) == (
            "Ok", "Ok", "Ok",
        )  # fmt: skip
        assert (alarms["Status2"], alarms["Status3"]) == (0x0E, 0x40)  # MOSFETs on; discharging
    # 0x47: this client reads the parameters from the first INFO byte on (its "TODO: decoding seems
    # broken"), one byte before they start. So check its INFO: test_golden_system_parameters's, with this
    # module's share of the current limits: 45.0 A = 01C2, −67.5 A = FD5D.
    assert got["SystemParameter"]["PAYLOAD"] == "110E420BB80AF00C6D0AAB01C2D7A0C1C0AF000D0309E3FD5D"
    assert got["ProtocolVersion"]["VER"] == 0x20
    assert got["ManufacturerInfo"]["BatteryName"] == "JK-BMS"
    assert got["ManufacturerInfo"]["ManufacturerName"] == "PYLON"
    assert got["ManufacturerInfo"]["SoftwareVersion"] == 0x0100


def test_python_pylontech_0_3_3(gateway: tuple[FixedSource, Path], tmp_path: Path) -> None:
    source, port = gateway
    client = _client("python-pylontech==0.3.3")
    got = _run(client, "drive_python_pylontech.py", str(port), tmp_path=tmp_path)
    first, second = (r.state for r in source.readings)
    limits = source.limits
    assert limits is not None
    assert got["protocol_version"]["ver"] == "\x20"
    manufacturer = got["manufacturer_info"]
    assert manufacturer["DeviceName"].rstrip("\x00") == "JK-BMS"
    assert manufacturer["SoftwareVersion"] == [1, 0]
    assert manufacturer["ManufacturerName"].rstrip("\x00") == "PYLON"
    parameters = got["system_parameters"]
    assert parameters == {
        "CellHighVoltageLimit": 3.65,
        "CellLowVoltageLimit": 3.0,
        "CellUnderVoltageLimit": 2.8,
        "ChargeHighTemperatureLimit": 45.0,
        "ChargeLowTemperatureLimit": 0.0,
        "ChargeCurrentLimit": limits.charge_current_limit_a / 2,
        "ModuleHighVoltageLimit": limits.charge_voltage_limit_v,
        "ModuleLowVoltageLimit": limits.discharge_voltage_limit_v,
        "ModuleUnderVoltageLimit": 44.8,
        "DischargeHighTemperatureLimit": 60.0,
        "DischargeLowTemperatureLimit": -20.0,
        "DischargeCurrentLimit": -limits.discharge_current_limit_a / 2,
    }
    management = got["management_info"]
    assert management["ChargeVoltageLimit"] == limits.charge_voltage_limit_v
    assert management["DischargeVoltageLimit"] == limits.discharge_voltage_limit_v
    assert management["ChargeCurrentLimit"] == limits.charge_current_limit_a / 2
    assert management["DischargeCurrentLimit"] == -limits.discharge_current_limit_a / 2
    status = management["status"]
    assert (status["ChargeEnable"], status["DischargeEnable"], status["ShouldCharge"]) == (True, True, False)
    assert got["serial_number"] == {"CommandValue": 2, "ModuleSerialNumber": "JK0123456789ABCD"}
    values = got["values"]
    assert values["NumberOfModules"] == 2
    for module, state in zip(values["Module"], (first, second), strict=True):
        assert module["CellVoltages"] == list(state.cell_voltages_v)
        assert module["AverageBMSTemperature"] == state.mos_temperature_c  # its name for the first sensor
        assert module["GroupedCellsTemperatures"] == list(state.battery_temperatures_c)
        assert (module["Current"], module["Voltage"]) == (state.current_a, state.pack_voltage_v)
        assert module["TotalCapacity"] == 280.0
        assert module["RemainingCapacity"] == pytest.approx(280.0 * state.soc_pct / 100)
        assert module["CycleNumber"] == 42
    assert values["StateOfCharge"] == pytest.approx((0.55 * 280 + 0.53 * 280) / 560)
    single = got["values_single"]
    assert single["NumberOfModule"] == 3  # the second pack, on its own address
    assert (single["Current"], single["CellVoltages"]) == (second.current_a, list(second.cell_voltages_v))


def test_stale_bms_reaches_the_client_as_zero_limits(gateway: tuple[FixedSource, Path], tmp_path: Path) -> None:
    source, port = gateway
    client = _client("python-pylontech==0.3.3")
    source.clock.advance(30)  # older than bms_timeout_s: the output's own age check, whatever the source says
    got = _run(client, "drive_python_pylontech.py", str(port), tmp_path=tmp_path)
    management = got["management_info"]
    assert (management["ChargeCurrentLimit"], management["DischargeCurrentLimit"]) == (0.0, 0.0)
    assert (management["status"]["ChargeEnable"], management["status"]["DischargeEnable"]) == (False, False)
    assert got["system_parameters"]["ChargeCurrentLimit"] == 0.0
