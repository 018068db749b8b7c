"""The poll-cycle bench runs (16 packs at 115200 baud through the simulator) and reports per pack beside the wire
time. Timings are for people to read: nothing here asserts on them."""

from __future__ import annotations

import pytest

from gateway.bench.poll_cycle import PollCycleTiming, main, time_poll_cycle


def test_one_full_poll_of_16_packs_is_timed() -> None:
    timing = time_poll_cycle(16, 115200)
    assert timing.packs == 16 and timing.baudrate == 115200
    assert timing.bytes_out > 0 and timing.bytes_back > timing.bytes_out
    report = timing.report()
    assert "one poll of 16 JK-PB packs at 115200 baud" in report
    assert "per pack" in report and "wire time" in report


def test_wire_time_is_ten_bits_per_byte() -> None:
    timing = PollCycleTiming(packs=2, baudrate=115200, cycle_s=0.1, bytes_out=16, bytes_back=400)
    assert timing.wire_s == pytest.approx(416 * 10 / 115200)
    assert timing.wire_per_pack_s == pytest.approx(timing.wire_s / 2)


def test_main_prints_the_report(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--packs", "2"]) == 0
    assert "one poll of 2 JK-PB packs" in capsys.readouterr().out
    assert main(["--packs", "0"]) == 1
