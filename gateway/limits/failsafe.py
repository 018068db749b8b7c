"""The limits sent when BMS data cannot be used: both currents 0, both enables cleared."""

from __future__ import annotations

from gateway.model import LimitReason, Limits


def failsafe_limits(last: Limits | None, now_s: float, why: str) -> Limits:
    """Zero currents, enables cleared; voltage limits kept from ``last`` (they derive from settings)."""
    reason = LimitReason("failsafe", why)
    return Limits(
        computed_at_s=now_s,
        charge_voltage_limit_v=last.charge_voltage_limit_v if last else 0.0,
        charge_current_limit_a=0.0,
        discharge_current_limit_a=0.0,
        discharge_voltage_limit_v=last.discharge_voltage_limit_v if last else 0.0,
        charge_enable=False,
        discharge_enable=False,
        reasons={
            "charge_current_limit_a": reason,
            "discharge_current_limit_a": reason,
            "charge_enable": reason,
            "discharge_enable": reason,
        },
        soc_pct=last.soc_pct if last else None,
    )
