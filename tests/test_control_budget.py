"""One owner of BMS writes (issue 17, audit M3 and L3): the write interval and a daily budget in one record of
the state store, shared by the service and the CLI and kept across restarts (an unusable record refuses every
write); ``bms-gateway control`` asks a running service over its Unix socket and takes the port itself (locked)
only when none runs."""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from test_control import (
    ERROR_PREFIX,
    READ_ALL,
    REPO,
    RIGHT,
    Bench,
    FakeBms,
    bench,  # noqa: F401 (a fixture)
    config_with,
    one_error_line,
    restore_logging,  # noqa: F401 (an autouse fixture)
    write_config,
)

from gateway.app import open_driver
from gateway.bms.control import Switch
from gateway.cli import main
from gateway.clock import FakeClock
from gateway.config import ControlConfig, load_config, parse_config
from gateway.control import Controller, handle_switch_command
from gateway.control_budget import KIND, WINDOW_S
from gateway.control_socket import SOCKET_NAME, ControlSocketServer, runtime_directory, socket_candidates
from gateway.errors import ConfigError, ControlRefused
from gateway.secret import Secret
from gateway.state_store import StateStore, state_directory
from gateway.telemetry.service import Telemetry

TEN_MINUTES_S = 600.0


def settings(max_writes_per_day: int = 20, min_interval_s: float = 10.0) -> ControlConfig:
    return ControlConfig(
        enabled=True, password=Secret(RIGHT), min_interval_s=min_interval_s, max_writes_per_day=max_writes_per_day
    )


def stored_controller(bms: FakeBms, clock: FakeClock, store: StateStore, **budget: Any) -> Controller:
    return Controller(settings(**budget), bms, clock, readback_attempts=3, readback_delay_s=0.5, store=store)


def toggle(control: Controller, bms: FakeBms, writes: int, clock: FakeClock, every_s: float) -> None:
    """``writes`` verified writes of the charge switch (off, on, off, ...), ``every_s`` of fake time apart."""
    for _ in range(writes):
        on = not bms.reading.settings.charge_mos_switch
        assert control.set_switch(Switch.CHARGE, on, source="mqtt").changed
        clock.advance(every_s)


# ---------------------------------------------------------------------------------------------------------
# The budget and the interval in the state store
# ---------------------------------------------------------------------------------------------------------


def test_the_default_budget_is_20_a_day_and_bounded() -> None:
    assert ControlConfig().max_writes_per_day == 20
    assert load_config(REPO / "config" / "example.yaml").control.max_writes_per_day == 20
    for bad in (0, 1001, 2.5, "20", True):
        with pytest.raises(ConfigError, match=r"^control\.max_writes_per_day: expected an integer from 1 to 1000"):
            parse_config(config_with({"max_writes_per_day": bad}))


def test_a_new_controller_on_the_same_state_directory_refuses_the_21st_write_within_24_h(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    bms, clock = FakeBms(), FakeClock()
    first_wall_s = clock.wall()
    toggle(stored_controller(bms, clock, store), bms, 20, clock, TEN_MINUTES_S)
    assert len(bms.writes) == 20

    # A restart: a new process, a new monotonic clock, the same wall clock running on, the same directory.
    restarted = FakeClock(start_s=5.0, wall_start_s=clock.wall())
    again = stored_controller(bms, restarted, StateStore(tmp_path / "state"))
    reads = bms.reads
    with pytest.raises(ControlRefused) as caught:
        again.set_switch(Switch.CHARGE, not bms.reading.settings.charge_mos_switch, source="cli")
    assert caught.value.reason == "daily budget"
    # 20 writes 10 min apart: the first ages out of the window 24 h after it was made, 20 h 40 min from now.
    assert str(caught.value).startswith(
        "refused: 20 BMS writes in the last 24 h, control.max_writes_per_day is 20 "
        "(the next is possible in 20 h 40 min, at "
    )
    assert bms.reads == reads and len(bms.writes) == 20  # refused before the BMS was touched

    restarted.advance(first_wall_s + WINDOW_S - restarted.wall())  # the first write leaves the window
    assert again.set_switch(Switch.CHARGE, not bms.reading.settings.charge_mos_switch, source="cli").changed
    restarted.advance(10)  # past the interval; the second write leaves the window 590 s from now
    with pytest.raises(ControlRefused, match="the next is possible in 10 min"):
        again.set_switch(Switch.CHARGE, not bms.reading.settings.charge_mos_switch, source="cli")
    assert len(bms.writes) == 21


def test_the_interval_holds_across_a_restart(tmp_path: Path) -> None:
    bms, clock = FakeBms(), FakeClock()
    stored_controller(bms, clock, StateStore(tmp_path)).set_switch(Switch.DISCHARGE, False, source="mqtt")
    restarted = FakeClock(start_s=1.0, wall_start_s=clock.wall() + 4)
    with pytest.raises(ControlRefused) as caught:
        stored_controller(bms, restarted, StateStore(tmp_path)).set_switch(Switch.DISCHARGE, True, source="cli")
    assert caught.value.reason == "rate limited"
    assert str(caught.value) == (
        "refused: the last BMS write was 4.0 s ago, control.min_interval_s is 10 s (try again in 6.0 s)"
    )
    assert bms.writes == [(Switch.DISCHARGE, False)]


def test_a_write_recorded_in_the_future_counts_as_made_now(tmp_path: Path) -> None:
    """A wall clock that went back (no RTC, before NTP) must not let writes through: it refuses instead."""
    clock = FakeClock()
    store = StateStore(tmp_path)
    store.write(KIND, {"writes_wall_s": [clock.wall() + 3600.0]}, clock.wall())
    bms = FakeBms()
    control = stored_controller(bms, clock, store)
    with pytest.raises(ControlRefused, match=r"the last BMS write was 0\.0 s ago"):
        control.set_switch(Switch.CHARGE, False, source="cli")
    clock.advance(10)
    assert control.set_switch(Switch.CHARGE, False, source="cli").changed
    stored = store.read(KIND)
    assert stored is not None and max(stored.data["writes_wall_s"]) == clock.wall()  # nothing left in the future


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        ("{not json", "not JSON"),
        (json.dumps({"format": "someone-else", "kind": KIND, "data": {}, "saved_wall_s": 1.0}), "not a bms-gateway"),
        (
            json.dumps(
                {
                    "format": "bms-gateway-state",
                    "version": 1,
                    "kind": KIND,
                    "data": {"writes_wall_s": "x"},
                    "saved_wall_s": 1.0,
                }
            ),
            "no list of write times",
        ),
        (None, "cannot read it"),
    ],
)
def test_an_unusable_write_record_refuses_every_write(
    tmp_path: Path, damage: str | None, why: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store = StateStore(state_directory())
    store.directory.mkdir(parents=True, exist_ok=True)
    record = store.path(KIND)
    if damage is None:
        record.mkdir()  # unreadable as a file (a permission problem is not testable as root)
    else:
        record.write_text(damage, encoding="utf-8")
    bms = FakeBms()
    with pytest.raises(ControlRefused) as caught:
        stored_controller(bms, FakeClock(), store).set_switch(Switch.CHARGE, False, source="mqtt")
    message = str(caught.value)
    assert caught.value.reason == "state unreadable"
    assert message.startswith(f"refused: the BMS write record {record} is unusable (") and why in message
    assert message.endswith(f"; hint: check the file, or delete it to reset the BMS write budget (rm {record})")
    assert bms.reads == 0 and bms.writes == []

    # The CLI (no service running) says the same in one line, and never opens the port.
    path = write_config(tmp_path / "c.yaml", config_with({"enabled": True, "password": RIGHT}, port="/dev/nothing"))
    assert main(["control", "-c", str(path), "charge", "off"]) == 1
    assert one_error_line(capsys.readouterr().err) == f"{ERROR_PREFIX} {message}"


class FullDisk(StateStore):
    """A state directory that reads but cannot be written (a full or read-only SD card)."""

    def write(self, kind: str, data: Mapping[str, Any], wall_s: float) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_write_that_cannot_be_recorded_is_not_made(tmp_path: Path) -> None:
    bms = FakeBms()
    store = FullDisk(tmp_path)
    with pytest.raises(ControlRefused) as caught:
        stored_controller(bms, FakeClock(), store).set_switch(Switch.CHARGE, False, source="cli")
    assert caught.value.reason == "state unwritable"
    assert str(caught.value) == (
        f"refused: cannot record the write in {store.path(KIND)} (No space left on device), so it would not count "
        f"against control.max_writes_per_day; hint: the directory {tmp_path} must be writable by this user"
    )
    assert bms.writes == []


# ---------------------------------------------------------------------------------------------------------
# One owner: the CLI asks the running service over its socket
# ---------------------------------------------------------------------------------------------------------


def serve(controller: Controller, **options: Any) -> ControlSocketServer:
    server = ControlSocketServer(controller, runtime_directory() / SOCKET_NAME, **options)
    server.start()
    return server


def cli_through(server: ControlSocketServer, config: Path, switch: str, state: str) -> subprocess.CompletedProcess[str]:
    """``bms-gateway control`` in its own process while this test plays the service's poller thread."""
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "control", "-c", str(config), switch, state],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.request_waiting.wait(60), "the CLI never asked the service"
        server.run_pending()
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_the_cli_asks_the_running_service_and_both_count_against_one_budget(tmp_path: Path) -> None:
    bms, clock = FakeBms(), FakeClock()
    service = stored_controller(bms, clock, StateStore(state_directory()), max_writes_per_day=3)
    server = serve(service)
    # The CLI's own config: a port it could not open, a budget it does not enforce: the service's rules apply.
    config = write_config(tmp_path / "c.yaml", config_with({"enabled": True, "password": RIGHT}, port="/dev/nothing"))
    try:
        assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o660  # the group may control, others may not
        toggle(service, bms, 2, clock, 60)  # two writes the service made itself (Home Assistant)

        done = cli_through(server, config, "balancer", "off")
        assert done.returncode == 0, done.stderr
        assert done.stdout == "balancer switch off: written and verified by reading the BMS back\n"
        assert bms.writes[-1] == (Switch.BALANCER, False)

        clock.advance(60)
        refused = cli_through(server, config, "balancer", "on")
        assert refused.returncode == 1 and refused.stdout == ""
        assert one_error_line(refused.stderr).startswith(
            f"{ERROR_PREFIX} refused: 3 BMS writes in the last 24 h, control.max_writes_per_day is 3 "
            "(the next is possible in 23 h 57 min, at "
        )
        outcome = handle_switch_command(service, "charge", "OFF")  # and the service itself is refused too
        assert not outcome.ok and "control.max_writes_per_day is 3" in outcome.message
        assert len(bms.writes) == 3 and server.requests_served == 2
    finally:
        server.stop()
    assert not server.path.exists()


def test_without_a_service_or_with_a_stale_socket_the_cli_takes_the_port(
    bench: Bench,  # noqa: F811 (the fixture imported above)
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A crashed service's socket file: nobody listens.
    stale = runtime_directory() / SOCKET_NAME
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as crashed:
        crashed.bind(str(stale))
    assert stat.S_ISSOCK(os.stat(stale).st_mode)
    path = bench.config({"enabled": True, "password": RIGHT})
    assert main(["control", "-c", str(path), "discharge", "off"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("discharge switch off: written and verified") and err == ""
    assert bench.simulator.switch_overrides() == {Switch.DISCHARGE: False}
    # And the write went into the shared record.
    stored = StateStore(state_directory()).read(KIND)
    assert stored is not None and len(stored.data["writes_wall_s"]) == 1

    # A service starting over the stale file replaces it.
    server = serve(Controller(settings(), FakeBms(), FakeClock()))
    try:
        assert stat.S_ISSOCK(os.stat(stale).st_mode) and socket_candidates()[0] == stale
    finally:
        server.stop()


def test_the_cli_never_shares_the_port_with_a_service_that_holds_it(
    bench: Bench,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = bench.config({"enabled": True, "password": RIGHT})
    service_driver = open_driver(load_config(path).bms, bench.clock, exclusive=True)  # as build_gateway opens it
    try:
        service_driver.read()  # the service's port is open (and locked) between its polls
        commands = bench.wire.commands()
        assert main(["control", "-c", str(path), "charge", "off"]) == 1
        # The port lock names its holder (here this test process) and says what to do.
        error, hint = capsys.readouterr().err.splitlines()
        assert error.startswith(f"bms-gateway: error: port {bench.port} is in use by pid {os.getpid()}")
        assert hint.startswith("hint: ")
        assert bench.wire.commands() == commands == [READ_ALL]  # not one frame of the CLI's on the wire
        assert bench.simulator.switch_overrides() == {}
    finally:
        service_driver.close()


def send_raw(path: Path, data: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(30)
        conn.connect(str(path))
        conn.sendall(data)
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = conn.recv(4096)
            assert chunk, "closed without an answer"
            answer += chunk
    document: dict[str, Any] = json.loads(answer)
    return document


@pytest.mark.parametrize(
    ("request_bytes", "problem"),
    [
        (b"hello\n", "bad request: not a JSON line"),
        (b'{"switch": "heater", "on": false}\n', "bad request: no switch 'heater'"),
        (b'{"switch": "charge", "on": "off"}\n', 'bad request: "on" must be true or false'),
        (b'{"switch": "charge", "on": false, "x": 1}\n', 'bad request: expected {"switch": ..., "on": true|false}'),
        (b"\xff\xfe\n", "bad request: not a JSON line"),
        (b"x" * 5000, "bad request: longer than 256 bytes"),
        (b'{"switch": "charge"', "bad request: no whole request line within 0.2 s"),
    ],
)
def test_a_bad_client_gets_one_line_and_the_socket_serves_on(
    request_bytes: bytes, problem: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    bms = FakeBms()
    server = serve(Controller(settings(), bms, FakeClock()), request_timeout_s=0.2)
    try:
        assert send_raw(server.path, request_bytes) == {"ok": False, "error": "bad request", "message": problem}
        assert not server.request_waiting.is_set() and bms.writes == []
        # A client that connects and leaves at once costs nothing either; the next one is served.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as gone:
            gone.connect(str(server.path))
        answers: list[dict[str, Any]] = []
        client = threading.Thread(
            target=lambda: answers.append(send_raw(server.path, b'{"switch": "balancer", "on": false}\n'))
        )
        client.start()
        assert server.request_waiting.wait(30)
        server.run_pending()
        client.join(30)
        assert answers == [{"ok": True, "message": "balancer switch off: written and verified by reading the BMS back"}]
        assert server.bad_requests == 2 and bms.writes == [(Switch.BALANCER, False)]
    finally:
        server.stop()
    assert not any(r.exc_info for r in caplog.records)
    assert "Traceback" not in caplog.text


def test_the_service_offers_the_socket_only_with_control_on(tmp_path: Path) -> None:
    off = parse_config({**config_with(), "status": {"enabled": False}})
    telemetry = Telemetry.from_config(off, FakeClock(), {})
    telemetry.start()
    assert telemetry.control_socket is None
    telemetry.stop()

    on = parse_config({**config_with({"enabled": True, "password": RIGHT}), "status": {"enabled": False}})
    bms = FakeBms()
    telemetry = Telemetry.from_config(on, FakeClock(), {}, controller=Controller(settings(), bms, FakeClock()))
    telemetry.start()
    try:
        assert telemetry.control_socket is not None
        assert telemetry.control_socket.path == runtime_directory() / SOCKET_NAME
        config = write_config(tmp_path / "c.yaml", config_with({"enabled": True, "password": RIGHT}, port="/dev/x"))
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway", "control", "-c", str(config), "balancer", "off"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert telemetry.control_socket.request_waiting.wait(60)
        telemetry.between_polls()  # the poller's hook runs the request
        out, err = process.communicate(timeout=60)
        assert process.returncode == 0, err
        assert out == "balancer switch off: written and verified by reading the BMS back\n"
        assert bms.writes == [(Switch.BALANCER, False)]
    finally:
        telemetry.stop()
    assert not (runtime_directory() / SOCKET_NAME).exists()
