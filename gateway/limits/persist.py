"""The limits engine's memory as plain JSON data and back (pure), so that it survives a restart.

What is kept: the latches (a cut-off stays cut off), the enforcement state (a compensation learned stays
learned), the ramps, the charge phase and its timers, force charge, the blocked CVL/DVL. Times are monotonic
seconds, which mean nothing to the next process: they are saved relative to the moment of saving, and made
absolute again on the new clock (:func:`memory_from_json` takes the time that has passed). Durations (the time
balanced in absorption) are kept as they are. Anything malformed gives None: the engine then starts afresh.
"""

from __future__ import annotations

import math
from typing import Any, Final

from gateway.limits.charge_voltage import ChargePhase, VoltageState
from gateway.limits.dynamics import RampState
from gateway.limits.enforcement import Enforcement, EnforcementState
from gateway.limits.engine import EngineMemory, SideMemory

TIME_FIELDS: Final = frozenset(
    {
        "hold_until_s",
        "updated_at_s",
        "over_since_s",
        "obeyed_since_s",
        "blocked_since_s",
        "measured_at_s",
        "follow_until_s",
        "grace_until_s",
        "phase_since_s",
        "last_float_s",
        "blocked_cvl_at_s",
    }
)
"""Fields that hold a monotonic time (saved relative to the save); every other number is kept as it is."""


def _times_out(values: dict[str, Any], now_s: float) -> dict[str, Any]:
    return {
        k: (v - now_s if k in TIME_FIELDS and isinstance(v, float | int) and math.isfinite(v) else v)
        for k, v in values.items()
    }


def _times_in(values: dict[str, Any], now_s: float) -> dict[str, Any]:
    return {k: (v + now_s if k in TIME_FIELDS and isinstance(v, float | int) else v) for k, v in values.items()}


def _ramp_out(ramp: RampState | None, now_s: float) -> dict[str, Any] | None:
    if ramp is None:
        return None
    return _times_out(
        {"output_a": ramp.output_a, "hold_until_s": ramp.hold_until_s, "updated_at_s": ramp.updated_at_s,
         "rising": ramp.rising},
        now_s,
    )  # fmt: skip


def _enforcement_out(state: EnforcementState, now_s: float) -> dict[str, Any]:
    return _times_out(
        {
            "stage": state.stage.value,
            "factor": state.factor,
            "over_since_s": state.over_since_s,
            "obeyed_since_s": state.obeyed_since_s,
            "blocked_since_s": state.blocked_since_s,
            "limit_a": state.limit_a,
            "grace_limit_a": state.grace_limit_a,
            "grace_until_s": state.grace_until_s,
            "excess_a": state.excess_a,
            "measured_a": state.measured_a,
            "measured_at_s": state.measured_at_s,
            "follow_until_s": state.follow_until_s,
        },
        now_s,
    )


def _side_out(side: SideMemory, now_s: float) -> dict[str, Any]:
    return {
        "ramp": _ramp_out(side.ramp, now_s),
        "enforcement": _enforcement_out(side.enforcement, now_s),
        "latches": [list(pair) for pair in side.latches],
    }


def memory_to_json(memory: EngineMemory, now_s: float) -> dict[str, Any]:
    """``memory`` as JSON data, its times relative to ``now_s`` (monotonic, s)."""
    voltage = memory.voltage
    return {
        "charge": _side_out(memory.charge, now_s),
        "discharge": _side_out(memory.discharge, now_s),
        "voltage": _times_out(
            {
                "phase": voltage.phase.value,
                "phase_since_s": voltage.phase_since_s,
                "balanced_s": voltage.balanced_s,
                "output_v": voltage.output_v,
                "hold_until_s": voltage.hold_until_s,
                "updated_at_s": voltage.updated_at_s,
                "last_float_s": voltage.last_float_s,
                "float_delta_v": voltage.float_delta_v,
            },
            now_s,
        ),
        **_times_out(
            {
                "discharge_voltage_v": memory.discharge_voltage_v,
                "force_charge": memory.force_charge,
                "blocked_cvl_v": memory.blocked_cvl_v,
                "blocked_cvl_at_s": memory.blocked_cvl_at_s,
                "blocked_dvl_v": memory.blocked_dvl_v,
            },
            now_s,
        ),
    }


def _ramp_in(data: Any, now_s: float) -> RampState | None:
    if data is None:
        return None
    values = _times_in(dict(data), now_s)
    return RampState(
        float(values["output_a"]), float(values["hold_until_s"]), float(values["updated_at_s"]), bool(values["rising"])
    )


def _optional(value: Any) -> float | None:
    return None if value is None else float(value)


def _enforcement_in(data: Any, now_s: float) -> EnforcementState:
    values = _times_in(dict(data), now_s)
    return EnforcementState(
        stage=Enforcement(values["stage"]),
        factor=float(values["factor"]),
        over_since_s=_optional(values["over_since_s"]),
        obeyed_since_s=_optional(values["obeyed_since_s"]),
        blocked_since_s=_optional(values["blocked_since_s"]),
        limit_a=_optional(values["limit_a"]),
        grace_limit_a=_optional(values["grace_limit_a"]),
        grace_until_s=float(values["grace_until_s"]),
        excess_a=float(values["excess_a"]),
        measured_a=_optional(values.get("measured_a")),
        measured_at_s=_optional(values.get("measured_at_s")),
        follow_until_s=float(values.get("follow_until_s", 0.0)),
    )


def _side_in(data: Any, now_s: float) -> SideMemory:
    latches = tuple((str(limiter), str(latch)) for limiter, latch in data["latches"])
    return SideMemory(_ramp_in(data["ramp"], now_s), _enforcement_in(data["enforcement"], now_s), latches)


def memory_from_json(data: Any, now_s: float) -> EngineMemory | None:
    """The memory saved by :func:`memory_to_json`, its times made absolute at ``now_s`` (the new clock's time,
    minus the time that passed since the save); None when ``data`` is not such a memory."""
    try:
        voltage = _times_in(dict(data["voltage"]), now_s)
        top = _times_in(dict(data), now_s)
        return EngineMemory(
            charge=_side_in(data["charge"], now_s),
            discharge=_side_in(data["discharge"], now_s),
            voltage=VoltageState(
                phase=ChargePhase(voltage["phase"]),
                phase_since_s=float(voltage["phase_since_s"]),
                balanced_s=float(voltage["balanced_s"]),
                output_v=float(voltage["output_v"]),
                hold_until_s=float(voltage["hold_until_s"]),
                updated_at_s=float(voltage["updated_at_s"]),
                last_float_s=float(voltage["last_float_s"]),
                float_delta_v=float(voltage.get("float_delta_v", 0.0)),
            ),
            discharge_voltage_v=float(top["discharge_voltage_v"]),
            force_charge=bool(top["force_charge"]),
            blocked_cvl_v=_optional(top["blocked_cvl_v"]),
            blocked_cvl_at_s=float(top["blocked_cvl_at_s"]),
            blocked_dvl_v=_optional(top["blocked_dvl_v"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
