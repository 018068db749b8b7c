"""The charge-cycle scenarios of ``tests/data/scenarios/`` as bench figures: the worst ``trip_count`` over all of
them (target 0: the bar is that the BMS never trips, whatever the inverter does) and the obedient baseline's time
to float (target: no later than the audited engine's 156.5 min, battery-safety audit case 01)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from gateway.sim.cycle_run import run_scenario
from gateway.sim.scenario_file import load_scenario

SCENARIOS = Path(__file__).resolve().parents[1] / "tests" / "data" / "scenarios"
BASELINE = "01-baseline-obeys"
AUDITED_FLOAT_S = 156.5 * 60
"""The baseline's time to float with the audited engine (975781a), s."""


def measure(quick: bool = False) -> dict[str, Any]:
    """Run every scenario (``quick``: the baseline and the first three safety cases only)."""
    paths = sorted(SCENARIOS.glob("*.yaml"))
    if quick:
        paths = paths[:1] + [p for p in paths if p.stem.startswith("p")][:3]
    started = time.monotonic()
    # The scenarios log what the gateway would (latched packs, clamped cut-offs): not bench output.
    gateway_log = logging.getLogger("gateway")
    level = gateway_log.level
    gateway_log.setLevel(logging.CRITICAL)
    trips: dict[str, int] = {}
    float_s: float | None = None
    try:
        for path in paths:
            summary = run_scenario(load_scenario(path)).summary
            trips[path.stem] = summary.trip_count
            if path.stem == BASELINE:
                float_s = summary.float_reached_s
    finally:
        gateway_log.setLevel(level)
    worst = max(trips, key=trips.__getitem__)
    return {
        "scenarios": len(paths),
        "trips": trips,
        "worst_trip_count": trips[worst],
        "worst_scenario": worst,
        "baseline_float_s": float_s,
        "audited_float_s": AUDITED_FLOAT_S,
        "elapsed_s": round(time.monotonic() - started, 1),
    }
