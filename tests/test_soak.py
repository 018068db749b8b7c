"""The short soak: 6 simulated hours of the real ControlLoop on a FakeClock with a fault every ~15 min (bench/soak.py).

Bound named: after every fault the loop is back in normal service within RECOVERY_BOUND_S (two polls and one
frame period, simulated); never does the inverter hear a charge current above 0 while the BMS data is stale.
The month-long run is ``make soak``.
"""

from __future__ import annotations

from bench.soak import RECOVERY_BOUND_S, soak


def test_simulated_day_with_hourly_faults_never_sticks() -> None:
    report = soak(0.25, fault_every_s=900.0)  # 6 simulated hours, a fault every ~15 min
    assert sum(report.faults.values()) >= 20
    assert set(report.faults) == {"silent", "bad_frames", "implausible", "can_down"}
    assert report.stuck == [], report.stuck
    assert report.unsafe == [], report.unsafe
    assert report.worst_recovery_s <= RECOVERY_BOUND_S
    assert report.polls >= 21_000
