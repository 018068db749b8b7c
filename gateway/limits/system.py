"""The battery's limits from the limits of its packs in parallel. Pure: pack limits in, one Limits out.

Each pack's limits come from its own limits engine (its own settings, cells, temperatures, ramps and
enforcement). The battery may then carry, on each side, **the largest total current for which no pack exceeds
its own limit, given how the current divides** (``limits.current_sharing``):

* ``auto`` (default): ``capacity`` when every pack states its capacity and the largest exceeds the smallest by
  more than 10 %, else ``equal`` (battery-safety audit P6: equal sharing of 100/100/70 Ah packs put 119 A into
  a 100 A pack).
* ``equal``: every pack carries total / n, so the total is **n × the smallest pack limit**. Right for
  identical packs, the usual installation; with packs of different capacity the bigger one takes more than
  its share.
* ``capacity``: pack i carries total × Cᵢ / ΣC (same cells, internal resistance ∝ 1 / capacity), so the total
  is **min over packs of Lᵢ × ΣC / Cᵢ**. Falls back to ``equal`` when a pack states no capacity.

Only the packs that **count** share the current: the packs online that answered the last poll. A pack that
missed it (``uncounted``) may have disconnected, and then the others carry its current, so its share is
withheld at once; its last limits still apply otherwise (blocks, voltage limits, flags: fail closed) until it
goes offline, when the caller leaves it out altogether. Then:

* a side is 0, its enable cleared, as soon as **any** pack online blocks it (its enable is cleared);
* while a known pack does not count (missed the poll, or offline), both currents are multiplied by
  ``limits.offline_current_fraction``. The default 1.0 reduces nothing beyond the lost share: the total is
  already n_counted × the smallest limit among the counted packs, so each carries at most its own limit even
  if the missing pack carries nothing (and less if it still carries some). A fraction below 1 buys margin for
  uneven sharing while a pack is away;
* the user's caps (``limits.max_*_current_a``) bound the battery's total, not each pack;
* CVL is the lowest pack CVL, DVL the highest pack DVL (the packs share one voltage: the first to reach its
  limit decides); force charge and full-charge request are asked for when any pack asks; the SOC reported
  is the capacity-weighted mean of the packs' reported SOCs.

Every reason names the pack that set the value, e.g. ``pack #2: cell 7 at 3.52 V, taper to 0 A at 3.55 V (4
packs × 35.0 A)``. A battery of one pack with none absent gets that pack's limits unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.limits.rounding import round_down
from gateway.limits.settings import AUTO_CAPACITY_SPREAD, CurrentSharing, LimitsSettings
from gateway.model import LimitReason, Limits, PackReading, Side


@dataclass(frozen=True, slots=True)
class PackLimits:
    """One pack's limits as its own engine computed them, with the reading they derive from."""

    label: str
    """How reasons name the pack, e.g. ``pack #2``."""
    reading: PackReading
    limits: Limits


def _reason(pack: PackLimits, name: str, suffix: str = "") -> LimitReason:
    own = pack.limits.reasons.get(name) or LimitReason("pack", "no reason given")
    return LimitReason(own.limiter, f"{pack.label}: {own.reason}{suffix}")


def _capacities(packs: Sequence[PackLimits]) -> list[float] | None:
    capacities = [p.reading.settings.capacity_ah for p in packs]
    if all(c is not None and c > 0 for c in capacities):
        return [float(c) for c in capacities if c is not None]
    return None


def sharing_in_force(packs: Sequence[PackLimits], tuning: LimitsSettings) -> CurrentSharing:
    """``equal`` or ``capacity``: the configured one, or what ``auto`` decides from the packs' capacities."""
    if tuning.current_sharing is not CurrentSharing.AUTO:
        return tuning.current_sharing
    capacities = _capacities(packs)
    if capacities and max(capacities) > (1.0 + AUTO_CAPACITY_SPREAD) * min(capacities):
        return CurrentSharing.CAPACITY
    return CurrentSharing.EQUAL


def _side_limit(
    side: Side,
    packs: Sequence[PackLimits],
    uncounted: Sequence[PackLimits],
    tuning: LimitsSettings,
    absent: Sequence[str],
    latched: Sequence[PackLimits] = (),
) -> tuple[float, LimitReason]:
    """(battery limit A, reason) for one side."""
    word = "charge" if side is Side.CHARGE else "discharge"
    name = f"{word}_current_limit_a"
    blocking = next((p for p in (*packs, *uncounted, *latched) if not getattr(p.limits, f"{word}_enable")), None)
    if blocking is not None:
        return 0.0, _reason(blocking, f"{word}_enable")

    def limit(p: PackLimits) -> float:
        value: float = getattr(p.limits, name)
        return value

    capacities = _capacities(packs) if sharing_in_force(packs, tuning) is CurrentSharing.CAPACITY else None
    if capacities is None:
        # A silent pack still on the bus takes its share too: its last limit caps it (latched).
        winner = min((*packs, *latched), key=limit)
        total = len(packs) * limit(winner)
        how = f" ({len(packs)} packs × {limit(winner):.1f} A)" if len(packs) > 1 else ""
    else:
        whole = sum(capacities)
        # Pack i reaches its limit when the total is Lᵢ × ΣC / Cᵢ: the smallest such total is the battery's.
        totals = [limit(p) * whole / c for p, c in zip(packs, capacities, strict=True)]
        index = min(range(len(packs)), key=totals.__getitem__)
        winner, total = packs[index], totals[index]
        how = f" ({limit(winner):.1f} A at {capacities[index]:g} of {whole:g} Ah)"
    reason = _reason(winner, name, how)
    if absent:
        fraction = tuning.offline_current_fraction
        away = ", ".join(absent)
        if fraction < 1.0:
            total *= fraction
            reason = LimitReason(reason.limiter, f"{reason.reason}; × {fraction:g} without {away}")
        else:
            reason = LimitReason(reason.limiter, f"{reason.reason}; without {away}")
    cap = tuning.max_charge_current_a if side is Side.CHARGE else tuning.max_discharge_current_a
    if total > cap:
        reason = LimitReason("user_cap", f"user cap {cap:g} A for the battery (packs allow {total:.1f} A)")
        total = cap
    return round_down(max(0.0, total), 2), reason


def _pick(packs: Sequence[PackLimits], value: Callable[[PackLimits], float], lowest: bool) -> PackLimits:
    return min(packs, key=value) if lowest else max(packs, key=value)


def system_limits(
    packs: Sequence[PackLimits],
    tuning: LimitsSettings,
    *,
    uncounted: Sequence[PackLimits] = (),
    offline: Sequence[str] = (),
    latched: Sequence[PackLimits] = (),
) -> Limits:
    """The battery's limits from those of its packs online; see the module docs.

    :param packs: the packs that count (at least one): online, and answered the last poll.
    :param uncounted: the packs online that missed the last poll: no current share, everything else applies.
    :param offline: labels of the known packs offline, for the reasons and the offline fraction.
    :param latched: offline packs whose last limits stay latched (a silent BMS, its pack still on the bus):
        their blocks and voltage limits apply and their current limit caps the per-pack share; no share.
    :raises ValueError: no pack counts.
    """
    if not packs:
        raise ValueError("system limits need at least one pack")
    if len(packs) == 1 and not uncounted and not offline:
        return packs[0].limits
    online = (*packs, *uncounted)
    # A latched pack's voltage limits still apply; its SOC and requests are stale and left out.
    bounding = (*online, *latched)
    absent = (*(p.label for p in uncounted), *offline)
    ccl, charge_reason = _side_limit(Side.CHARGE, packs, uncounted, tuning, absent, latched)
    dcl, discharge_reason = _side_limit(Side.DISCHARGE, packs, uncounted, tuning, absent, latched)
    charge_enable, discharge_enable = ccl > 0.0, dcl > 0.0

    cvl_pack = _pick(bounding, lambda p: p.limits.charge_voltage_limit_v, lowest=True)
    dvl_pack = _pick(bounding, lambda p: p.limits.discharge_voltage_limit_v, lowest=False)
    forcing = next((p for p in online if p.limits.force_charge), None)
    calibrating = next((p for p in online if p.limits.full_charge_request), None)
    force = forcing is not None and charge_enable

    weights = _capacities(online) or [1.0] * len(online)
    socs = [p.reading.state.soc_pct if p.limits.soc_pct is None else p.limits.soc_pct for p in online]
    soc = round(sum(s * w for s, w in zip(socs, weights, strict=True)) / sum(weights), 2)
    weighting = "capacity-weighted" if len(set(weights)) > 1 else "mean"

    reasons = {
        "charge_current_limit_a": charge_reason,
        "discharge_current_limit_a": discharge_reason,
        "charge_enable": charge_reason,
        "discharge_enable": discharge_reason,
        "charge_voltage_limit_v": _reason(cvl_pack, "charge_voltage_limit_v"),
        "discharge_voltage_limit_v": _reason(dvl_pack, "discharge_voltage_limit_v"),
        "soc_pct": LimitReason(
            "soc", f"{weighting} SOC of {len(online)} packs ({', '.join(f'{s:g} %' for s in socs)})"
        ),
    }
    if force and forcing is not None:
        reasons["force_charge"] = _reason(forcing, "force_charge")
    if calibrating is not None:
        reasons["full_charge_request"] = _reason(calibrating, "full_charge_request")
    return Limits(
        computed_at_s=min(p.limits.computed_at_s for p in online),
        charge_voltage_limit_v=cvl_pack.limits.charge_voltage_limit_v,
        charge_current_limit_a=ccl,
        discharge_current_limit_a=dcl,
        discharge_voltage_limit_v=dvl_pack.limits.discharge_voltage_limit_v,
        charge_enable=charge_enable,
        discharge_enable=discharge_enable,
        force_charge=force,
        full_charge_request=calibrating is not None,
        reasons=reasons,
        soc_pct=soc,
        charge_phase=cvl_pack.limits.charge_phase,
        cell_deeply_discharged=any(p.limits.cell_deeply_discharged for p in bounding),
    )
