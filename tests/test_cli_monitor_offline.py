"""``bms-gateway monitor --log FILE`` and ``--hex FILE``: recorded traffic decoded offline.

The CAN logs are written by python-can's own writers (``can.Logger``: candump ``.log``, Vector ``.asc`` and
``.blf``), from a real ``run`` of the gateway against the JK simulator on a ``virtual`` bus, or from the frames
every built-in profile's encoder produces; the RS485 files hold the frames the gateway's RS485 outputs answer
with, framed for Modbus RTU by pymodbus (not by our code). The monitor must decode every frame: counted, none
unknown, none undecodable.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import can
import pytest
from frame_values import fixed_values
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU, ModbusPDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    ReadInputRegistersRequest,
    ReadInputRegistersResponse,
)
from rs485_fixtures import FixedSource
from test_cli_tools import (
    EXPECTED_CCL_A,
    EXPECTED_CVL_V,
    EXPECTED_DCL_A,
    EXPECTED_DVL_V,
    number,
    restore_logging,
    unique_channel,
    write_config,
)

from gateway.cli import main
from gateway.cli.monitor_rs485 import POLL_COMMANDS, plan_reads
from gateway.clock import SystemClock
from gateway.profiles import builtin_profile_names, load_profile
from gateway.rs485.profile import load_rs485_profile, rs485_profile_names
from gateway.rs485.pylontech_ascii import build_request
from gateway.rs485.server import OutputSettings, Rs485Output
from gateway.sim.jk_uart import JkUartSimulator
from gateway.sim.nullmodem import NullModem
from gateway.sim.scenarios import SCENARIOS
from gateway.transport.serial_server import SerialEndpoint

__all__ = ["restore_logging"]  # test_cli_tools' autouse fixture: undoes main()'s logging set-up

ERROR_PREFIX: Final = "bms-gateway: error:"
RUN_S: Final = 3.0
LOG_SUFFIXES: Final = (".log", ".asc", ".blf")
"""The formats python-can both writes and reads (``can.Logger`` and ``can.LogReader``)."""
LINE_TIME: Final = re.compile(r"^\s*(\d+\.\d{3}) ")


def summary(err: str) -> str:
    """The count line ``monitor`` ends a file with."""
    (line,) = [line for line in err.splitlines() if re.search(r": \d+ frames, ", line)]
    return line


# --- CAN logs ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[can.Message], dict[str, Path]]]:
    """A short ``run`` of the gateway against the JK simulator on a virtual bus, logged by python-can in every
    format it writes: the frames a listener heard, and the logs."""
    tmp_path = tmp_path_factory.mktemp("run")
    channel = unique_channel()
    logs = {suffix: tmp_path / f"run{suffix}" for suffix in LOG_SUFFIXES}
    with NullModem(tmp_path / "bms", names=("bms", "gateway")) as modem:
        simulator = JkUartSimulator(SCENARIOS["normal-charge"], SystemClock(), port=str(modem.a_path))
        simulator.start()
        inverter = can.Bus(interface="virtual", channel=channel, ignore_config=True)
        heard = can.BufferedReader()
        notifier = can.Notifier(inverter, [heard, *(can.Logger(path) for path in logs.values())])
        try:
            config = write_config(tmp_path / "config.yaml", modem.b_path, {"interface": "virtual", "channel": channel})
            with config.open("a", encoding="utf-8") as file:
                file.write("status: {enabled: false}\n")  # no port 9480 taken from a service or a parallel test
            assert main(["run", "-c", str(config), "--duration", str(RUN_S)]) == 0
        finally:
            notifier.stop()  # stops the loggers too: the files are complete
            inverter.shutdown()
            simulator.stop()
    frames: list[can.Message] = []
    while (message := heard.get_message(timeout=0)) is not None:
        frames.append(message)
    yield frames, logs


@pytest.mark.parametrize("suffix", LOG_SUFFIXES)
def test_log_of_a_gateway_run_decodes_every_frame(
    suffix: str, gateway_run: tuple[list[can.Message], dict[str, Path]], capsys: pytest.CaptureFixture[str]
) -> None:
    heard, logs = gateway_run
    assert len(heard) >= 12, "the run sent too little to test with"  # 6 frames a second, for 3 s
    capsys.readouterr()
    assert main(["monitor", "--profile", "pylontech-can", "--log", str(logs[suffix])]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == len(heard), out
    assert f": {len(heard)} frames, 0 with an id the profile does not know, 0 not decodable, 0 error frames" in (
        summary(err)
    )
    assert all(" bat " in line and "(" not in line.replace("set (", "") for line in lines), out
    # The times are the log's, from its first frame.
    for line, message in zip(lines, heard, strict=True):
        match = LINE_TIME.match(line)
        assert match, line
        assert float(match.group(1)) == pytest.approx(message.timestamp - heard[0].timestamp, abs=0.0011), line
    # What the simulated pack calls for (tests/test_cli_tools.py), while running; the final set on stop: 0 A.
    limits = [" ".join(line.split()) for line in lines if " 0x351 " in line]
    assert len(limits) >= 3, out
    for line in limits[:-1]:
        assert number(line, "charge_voltage_limit", "V") == pytest.approx(EXPECTED_CVL_V)
        assert number(line, "charge_current_limit", "A") == pytest.approx(EXPECTED_CCL_A)
        assert number(line, "discharge_current_limit", "A") == pytest.approx(EXPECTED_DCL_A)
        assert number(line, "discharge_voltage_limit", "V") == pytest.approx(EXPECTED_DVL_V)
    assert number(limits[-1], "charge_current_limit", "A") == 0.0
    assert number(limits[-1], "discharge_current_limit", "A") == 0.0
    assert '"PYLON"' in next(line for line in lines if " 0x35E " in line)


def _write_log(path: Path, frames: list[tuple[int, bytes]], *, extended: bool = False) -> Path:
    with can.Logger(path) as logger:
        for index, (can_id, data) in enumerate(frames):
            message = can.Message(
                timestamp=1000 + index / 10, arbitration_id=can_id, data=data, is_extended_id=extended
            )
            logger.on_message_received(message)
    return path


@pytest.mark.parametrize("name", builtin_profile_names())
def test_log_of_every_profiles_frames_decodes_every_frame(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Battery and inverter frames, as each built-in CAN profile's encoder makes them, through a candump log."""
    profile = load_profile(name)
    values = fixed_values(profile)
    frames = [*profile.encode_all(values), *((codec.can_id, codec.encode(values)) for codec in profile.inverter_frames)]
    log = _write_log(tmp_path / f"{name}.log", frames)
    assert main(["monitor", "--profile", name, "--log", str(log)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == len(frames), out
    assert f": {len(frames)} frames, 0 with an id the profile does not know, 0 not decodable" in summary(err)
    for line, (can_id, _) in zip(lines, frames, strict=True):
        assert f" 0x{can_id:03X} " in line and " --- " not in line and "(" not in line.replace("set (", ""), line


def test_log_counts_unknown_ids_and_short_frames_and_takes_the_profile_from_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path / "config.yaml", tmp_path / "no-port", {"interface": "virtual", "channel": "x"})
    soc = bytes([67, 0, 98, 0])
    log = _write_log(tmp_path / "mixed.log", [(0x355, soc), (0x123, b"\x01"), (0x351, b"\x28\x02"), (0x355, soc)])
    assert main(["monitor", "-c", str(config), "--log", str(log), "--changes"]) == 0
    out, err = capsys.readouterr()
    first, unknown, short = (" ".join(line.split()) for line in out.splitlines())  # --changes: the repeat not shown
    assert first.startswith("0.000 bat 0x355 soc_soh") and "soc=67 %" in first
    assert unknown == "0.100 --- 0x123 ? [1] 01"
    assert short.startswith("0.200 bat 0x351 limits") and "short frame" in short
    assert ": 4 frames, 1 with an id the profile does not know, 1 not decodable, 0 error frames; 1 unchanged" in (
        summary(err)
    )
    assert "profile pylontech-can" in err


def _not_a_log(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("name", "content", "needle", "hint"),
    [
        ("screen.log", b"  can0  351   [8]  14 02 74 0E 74 0E CC 01\n", "not a log python-can's", "candump -l"),
        ("random.blf", b"not a binary logging format file" * 4, "not a log python-can reads", "Vector BLF"),
        ("binary.log", bytes(range(256)), "not a log python-can's", "candump -l"),
        ("text.asc", b"hello\n", "no CAN frame in it", "Vector ASC"),
        ("empty.log", b"", "no CAN frame in it", "candump -l"),
        ("frames.txt", b"351#1402740E\n", "no log with the extension .txt", "by the file's extension"),
    ],
)
def test_a_file_that_is_no_log_is_one_line_and_a_hint(
    name: str, content: bytes, needle: str, hint: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _not_a_log(tmp_path, name, content)
    assert main(["monitor", "--profile", "pylontech-can", "--log", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    message, hint_line = [line for line in err.splitlines() if not line.startswith("monitor: profile")]
    assert message.startswith(f"{ERROR_PREFIX} --log: ") and needle in message, message
    assert hint_line.startswith("hint: ") and hint in hint_line, hint_line


# --- RS485 frames ------------------------------------------------------------------------------------------------

SETTINGS: Final = OutputSettings(bms_timeout_s=10, silence_after_s=60)


def _output(name: str) -> Rs485Output:
    """The gateway's RS485 output for ``name``, never started: its answers come from its responder or map."""
    profile = load_rs485_profile(name)
    source = FixedSource()
    return Rs485Output(profile, SerialEndpoint("/dev/unused", 9600), profile.address, source, source.clock, SETTINGS)


def _pylontech_lines(output: Rs485Output) -> list[str]:
    """Every command of the profile asked and answered: requests as hex bytes, answers as their ASCII text."""
    spec = output.profile.pylontech
    assert spec is not None and output.responder is not None
    view = output.view()
    lines = ["# the gateway's Pylontech answers", ""]
    for cid2 in sorted(spec.commands, key=lambda cid2: (cid2 not in POLL_COMMANDS, cid2)):
        command = spec.commands[cid2]
        request = build_request(output.address, cid2, bytes([output.address]) if command.info == "pack" else b"")
        answer = output.responder.respond(request, view)
        assert answer is not None, command.name
        lines += [request.hex(" ").upper() + f"  # {command.name}", answer.decode("ascii").rstrip("\r")]
    return lines


def _modbus_lines(output: Rs485Output) -> list[str]:
    """Reads of every register of the map (each module's too), framed for Modbus RTU by pymodbus."""
    spec = output.profile.registers
    assert spec is not None and output.register_map is not None
    view = output.view()
    assert view is not None
    reads = plan_reads(spec.registers)
    if spec.modules is not None:
        for module in range(len(view.modules)):
            reads += plan_reads(spec.modules.registers, spec.modules.base + module * spec.modules.stride)
    function = 3 if 3 in spec.read_functions else 4
    request_type, answer_type = (
        (ReadHoldingRegistersRequest, ReadHoldingRegistersResponse)
        if function == 3
        else (ReadInputRegistersRequest, ReadInputRegistersResponse)
    )
    framer = FramerRTU(DecodePDU(is_server=False))
    lines: list[str] = []
    for read in reads:
        words = output.register_map.read(view, function, read.start, read.count)
        assert isinstance(words, list), words
        request: ModbusPDU = request_type(address=read.start, count=read.count, dev_id=output.address)
        answer: ModbusPDU = answer_type(registers=words, dev_id=output.address)
        lines += [framer.buildFrame(request).hex(" "), framer.buildFrame(answer).hex(":")]
    return lines


@pytest.mark.parametrize("name", rs485_profile_names())
def test_hex_of_the_gateways_rs485_frames_decodes_every_frame(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = _output(name)
    lines = _modbus_lines(output) if output.profile.pylontech is None else _pylontech_lines(output)
    frames = [line for line in lines if line and not line.startswith("#")]
    path = tmp_path / f"{name}.hex"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert main(["monitor", "--profile", name, "--hex", str(path)]) == 0
    out, err = capsys.readouterr()
    shown = out.splitlines()
    assert len(shown) == len(frames), out
    assert f": {len(frames)} frames, 0 not decoded" in summary(err)
    requests, answers = shown[0::2], shown[1::2]
    assert all(line.endswith("request") or " request pack=" in line for line in requests), out
    assert all(" inv " in line for line in requests), out
    assert all(" bat " in line and "(" not in line for line in answers), out
    assert [line.split()[0] for line in shown] == [
        f"L{number}" for number, line in enumerate(lines, 1) if line and line[0] != "#"
    ]
    text = " ".join(out.split())
    # The limits the source holds (tests/rs485_fixtures.py), under each profile's own field name.
    assert re.search(r"=55\.2\d* V\b", text), text
    assert re.search(r"=90\.0\d* A\b", text), text


def test_hex_file_problems_are_one_line_and_a_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "frames.hex"
    path.write_text("# a comment\n7E 32 30  # a cut frame: shown raw\n7E 3G 30\n", encoding="utf-8")
    assert main(["monitor", "--profile", "pylontech-rs485", "--hex", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""  # the file is read whole before anything is shown
    message, hint = err.splitlines()
    assert message == f"{ERROR_PREFIX} --hex: {path} line 3: not hex: '7E 3G 30'"
    assert hint.startswith("hint: one frame per line as hex bytes")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--profile", "pylontech-can", "--hex", "f.hex"], "pylontech-can is a CAN profile: --hex decodes RS485"),
        (["--profile", "pylontech-rs485", "--log", "f.log"], "pylontech-rs485 is an RS485 profile: --log decodes"),
        (["--profile", "pylontech-can", "--log", "f.log", "--hex", "f.hex"], "either --log FILE"),
        (["--profile", "pylontech-can", "--log", "f.log", "--interface", "virtual"], "--interface is for a live"),
        (["--profile", "pylontech-rs485", "--hex", "f.hex", "--port", "/dev/x"], "--port is for a live"),
        (["--profile", "pylontech-can", "--log", "missing.log"], "cannot read missing.log"),
    ],
)
def test_offline_bad_arguments_are_one_line_and_status_2(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["monitor", *args]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith(ERROR_PREFIX) and needle in line, line
