"""The null-modem test tool: transparent relay, faults, pacing, unplug/replug, fd hygiene."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import serial

from gateway.sim.nullmodem import A_TO_B, B_TO_A, NullModem

ALL_BYTES = bytes(range(256))


def open_port(path: Path) -> serial.Serial:
    return serial.Serial(str(path), 115200, timeout=0.05)


def read_exactly(port: serial.Serial, n: int, within_s: float = 5.0) -> bytes:
    """Read ``n`` bytes, giving up after ``within_s`` s (returns what arrived)."""
    deadline = time.monotonic() + within_s
    got = bytearray()
    while len(got) < n and time.monotonic() < deadline:
        got += port.read(n - len(got))
    return bytes(got)


def assert_quiet(port: serial.Serial) -> None:
    """Nothing more arrives (the relay has had time to forward anything pending)."""
    time.sleep(0.1)
    assert port.read(64) == b""


def wait_for(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def modem(tmp_path: Path) -> Iterator[NullModem]:
    with NullModem(tmp_path) as nm:
        yield nm


@pytest.fixture
def ports(modem: NullModem) -> Iterator[tuple[serial.Serial, serial.Serial]]:
    a, b = open_port(modem.a_path), open_port(modem.b_path)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_paths_are_symlinks_to_ptys(modem: NullModem, tmp_path: Path) -> None:
    assert modem.a_path == tmp_path / "bms"
    assert modem.b_path == tmp_path / "gateway"
    for path in (modem.a_path, modem.b_path):
        assert path.is_symlink()
        assert os.readlink(path).startswith("/dev/pts/")
    assert os.readlink(modem.a_path) != os.readlink(modem.b_path)


def test_every_byte_value_passes_both_ways(modem: NullModem, ports: tuple[serial.Serial, serial.Serial]) -> None:
    a, b = ports
    payload = ALL_BYTES * 8  # includes CR, LF, XON/XOFF, ^C, ^D, ^Z, DEL, 0xFF
    a.write(payload)
    assert read_exactly(b, len(payload)) == payload
    reverse = payload[::-1]
    b.write(reverse)
    assert read_exactly(a, len(reverse)) == reverse
    assert modem.bytes_relayed == {A_TO_B: len(payload), B_TO_A: len(reverse)}
    # No echo: nothing a program writes comes back to itself.
    assert_quiet(a)
    assert_quiet(b)


def test_relay_survives_nobody_listening(modem: NullModem) -> None:
    a = open_port(modem.a_path)
    try:
        a.write(b"into the void")  # B's path is not open by anyone
        wait_for(lambda: modem.bytes_relayed[A_TO_B] == 13)
        b = open_port(modem.b_path)
        try:
            assert_quiet(b)  # pyserial flushes what queued up while the path was closed
            b.write(b"hello")
            assert read_exactly(a, 5) == b"hello"
        finally:
            b.close()
    finally:
        a.close()


def test_inject_adds_noise(modem: NullModem, ports: tuple[serial.Serial, serial.Serial]) -> None:
    a, b = ports
    modem.inject(B_TO_A, b"\x00noise\xff")
    assert read_exactly(a, 7) == b"\x00noise\xff"
    assert_quiet(b)
    assert modem.bytes_relayed[B_TO_A] == 7


def test_drop_next_discards_exactly_count(modem: NullModem, ports: tuple[serial.Serial, serial.Serial]) -> None:
    a, b = ports
    modem.drop_next(A_TO_B, 3)
    a.write(b"abcdefgh")
    assert read_exactly(b, 5) == b"defgh"
    a.write(b"xyz")  # the drop is used up
    assert read_exactly(b, 3) == b"xyz"
    assert_quiet(b)
    assert modem.bytes_relayed[A_TO_B] == 8


def test_transform_rewrites_one_direction(modem: NullModem, ports: tuple[serial.Serial, serial.Serial]) -> None:
    a, b = ports
    modem.set_transform(A_TO_B, lambda chunk: bytes(x ^ 0xFF for x in chunk))
    a.write(b"\x00\x0f\xf0")
    assert read_exactly(b, 3) == b"\xff\xf0\x0f"
    b.write(b"\x00\x0f\xf0")  # the other direction is untouched
    assert read_exactly(a, 3) == b"\x00\x0f\xf0"
    modem.set_transform(A_TO_B, None)
    a.write(b"plain")
    assert read_exactly(b, 5) == b"plain"


def test_transform_may_change_length(modem: NullModem, ports: tuple[serial.Serial, serial.Serial]) -> None:
    a, b = ports
    modem.set_transform(B_TO_A, lambda chunk: chunk + b"!")
    b.write(b"x")
    assert read_exactly(a, 2) == b"x!"


def test_bad_arguments_are_rejected(modem: NullModem, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        modem.inject("sideways", b"x")
    with pytest.raises(ValueError):
        modem.drop_next(A_TO_B, -1)
    with pytest.raises(ValueError):
        NullModem(tmp_path, names=("same", "same"))
    with pytest.raises(RuntimeError):
        modem.reappear()  # still present


def test_pacing_holds_the_wire_rate(tmp_path: Path) -> None:
    with NullModem(tmp_path, baudrate=9600) as modem:
        a, b = open_port(modem.a_path), open_port(modem.b_path)
        try:
            payload = bytes(i % 256 for i in range(1000))
            started = time.monotonic()
            a.write(payload)
            assert read_exactly(b, len(payload), within_s=10.0) == payload
            elapsed = time.monotonic() - started
        finally:
            a.close()
            b.close()
    # 1000 bytes * 10 bits / 9600 bit/s = 1.04 s; generous lower bound only.
    assert elapsed >= 0.9


def test_vanish_breaks_open_ports_and_reappear_restores_paths(
    modem: NullModem, ports: tuple[serial.Serial, serial.Serial]
) -> None:
    a, b = ports
    old_target = os.readlink(modem.a_path)
    modem.vanish()
    assert not modem.present
    assert not os.path.lexists(modem.a_path)
    assert not os.path.lexists(modem.b_path)
    # pyserial: read sees EOF -> SerialException; write sees EIO -> SerialException (an OSError).
    with pytest.raises((serial.SerialException, OSError)):
        a.read(1)
    with pytest.raises((serial.SerialException, OSError)):
        b.write(b"x")
    with pytest.raises((serial.SerialException, OSError)):
        open_port(modem.a_path)
    modem.vanish()  # already gone: harmless

    modem.reappear()
    assert modem.present
    assert modem.a_path.is_symlink()
    assert os.readlink(modem.a_path) != old_target  # the old slave is still held by the stale port
    a2, b2 = open_port(modem.a_path), open_port(modem.b_path)
    try:
        a2.write(b"back again")
        assert read_exactly(b2, 10) == b"back again"
        b2.write(ALL_BYTES)
        assert read_exactly(a2, 256) == ALL_BYTES
    finally:
        a2.close()
        b2.close()


def test_faults_persist_across_vanish(modem: NullModem) -> None:
    modem.set_transform(A_TO_B, bytes.upper)
    modem.vanish()
    modem.reappear()
    a, b = open_port(modem.a_path), open_port(modem.b_path)
    try:
        a.write(b"abc")
        assert read_exactly(b, 3) == b"ABC"
    finally:
        a.close()
        b.close()


def test_stop_closes_every_fd_and_is_idempotent(tmp_path: Path) -> None:
    before = fd_count()
    modem = NullModem(tmp_path / "cable", baudrate=115200)
    modem.start()
    a, b = open_port(modem.a_path), open_port(modem.b_path)
    a.write(b"ping")
    assert read_exactly(b, 4) == b"ping"
    modem.vanish()
    modem.reappear()
    a.close()
    b.close()
    modem.stop()
    assert fd_count() == before
    assert not modem.running
    assert not os.path.lexists(modem.a_path)
    assert not os.path.lexists(modem.b_path)
    modem.stop()  # harmless
    assert fd_count() == before


def test_stop_is_prompt(tmp_path: Path) -> None:
    modem = NullModem(tmp_path)
    modem.start()
    started = time.monotonic()
    modem.stop()
    assert time.monotonic() - started < 1.0
