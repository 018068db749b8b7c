"""A charge-cycle scenario run: simulated packs and inverter around the gateway's own control loop.

``bms-gateway simulate charge-cycle --scenario-file FILE``. What runs is the service's code: every poll, each
pack's reading goes through the JK NW codec (encode a reply frame, decode it) into the real
:class:`~gateway.runtime.ControlLoop` (per-pack limits engines, system limits, fail-safe states, the profile's
frames); the simulated inverter decodes the frames the loop sent, as a real one would. Simulated are the packs
(:mod:`gateway.sim.cell_model`), their BMSs (:mod:`gateway.sim.bms_model`, every protection with its delay
and recovery), the temperatures, and the inverter and DC bus (:mod:`gateway.sim.inverter_model`).

Time is a :class:`~gateway.clock.FakeClock` advanced in steps of ``dt_s``: no sleeping. Schedule: charge from
the scenario's start SOC until the battery's limits reach float; hold float; with ``discharge_after_float``,
after :data:`FLOAT_HOLD_S` in float the inverter draws its load until it stops (DCL 0, discharge disabled, the
bus at DVL, or the BMS opening its MOS), then rests until the scenario's duration. A BMS that is silent or
misses polls is not polled successfully (the loop hears the error); ``restart_every_s`` replaces the control
loop by a new one, as a crash would: only its state directory survives (a temporary one per run).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from gateway.bms import jk_nw
from gateway.clock import FakeClock
from gateway.errors import GatewayError, LinkTimeout
from gateway.model import BatteryState, DeviceInfo, PackReading, ProtectionSettings
from gateway.profiles import Profile, load_profile
from gateway.runtime import ControlLoop, LoopSettings
from gateway.sim.bms_model import Protection, protect, simulated_bms_settings
from gateway.sim.cell_model import Balancing, PackModel, balance_decision, make_pack
from gateway.sim.cycle_summary import PackTrip, ScenarioSummary
from gateway.sim.inverter import named_values
from gateway.sim.inverter_model import Bus, Heard, Inverter, split_current
from gateway.sim.scenario_file import ChargeCycleScenario, PackScenario
from gateway.state_store import StateStore
from gateway.values import Value

PROFILE: Final = "pylontech-can"
"""The inverter protocol of the run: the most common one; every profile carries the same limits."""
POLL_INTERVAL_S: Final = 1.0
BMS_TIMEOUT_S: Final = 10.0
"""The config's default ``failsafe.bms_timeout_s``."""
INVERTER_TIMEOUT_S: Final = 30.0
"""The simulated inverter stops (0 A) after this long without the battery's frames, s. unverified: inverters
state 10 s to a few minutes; 30 s is in between."""
FLOAT_HOLD_S: Final = 1200.0
"""With ``discharge_after_float``, the load starts this long after float was reached, s."""
CELL_RESISTANCE_OHM: Final = 0.0006
"""A cell's internal resistance unless the scenario gives it (a 100 Ah prismatic LiFePO4 cell), Ω."""
THERMAL_CAPACITY_J_PER_K_AH: Final = 20.0
"""Heat capacity per Ah of cell capacity per cell, J/K (about 2 kg of cell per 100 Ah at 1 kJ/(kg·K)).
unverified: a round figure for the self-heating model, not a measured pack."""
COOLING_TIME_CONSTANT_S: Final = 2 * 3600.0
"""Self-heating: the pack cools towards the ambient with this time constant, s. unverified, as above."""
PACK_ID_FORMAT: Final = "jk-modbus:sim#{number}"
"""Pack ids as one bus of JK-PB packs would have them, so the loop's messages name them ``pack #n``."""

log = logging.getLogger(__name__)


class _Sink:
    """Where the control loop's frames go: the newest payload of each id, with its time."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self.latest: dict[int, tuple[float, bytes]] = {}

    def send(self, can_id: int, data: bytes) -> bool:
        self.latest[can_id] = (self._clock.monotonic(), bytes(data))
        return True


@dataclass
class _Pack:
    """One simulated pack and its BMS, as the run steps it."""

    number: int
    spec: PackScenario
    settings: ProtectionSettings
    model: PackModel
    temperature_c: float
    protection: Protection = field(default_factory=Protection)
    current_a: float = 0.0
    balancing: Balancing | None = None

    @property
    def pack_id(self) -> str:
        return PACK_ID_FORMAT.format(number=self.number)

    def answers(self, poll: int, now_s: float) -> bool:
        silent = self.spec.silent_from_s is not None and now_s >= self.spec.silent_from_s
        missed = self.spec.miss_every is not None and poll % self.spec.miss_every == self.spec.miss_every - 1
        return not silent and not missed

    def heat(self, now_s: float, dt_s: float) -> None:
        """The pack's temperature after ``dt_s`` more: scheduled, constant, or warmed by its own current."""
        temperature = self.spec.temperature_c
        if temperature.ambient_c is None:
            self.temperature_c = temperature.at(now_s)
            return
        heat_w = self.current_a**2 * self.model.resistance_ohm
        capacity_j_per_k = THERMAL_CAPACITY_J_PER_K_AH * self.model.capacity_ah
        cooling_w = capacity_j_per_k / COOLING_TIME_CONSTANT_S * (self.temperature_c - temperature.ambient_c)
        self.temperature_c += (heat_w - cooling_w) * dt_s / capacity_j_per_k


def _make_pack(number: int, spec: PackScenario, start_soc_pct: float) -> _Pack:
    cells = spec.cell_count
    overrides: dict[str, Any] = dict(spec.settings or {})  # names and types checked by the scenario file
    settings = replace(simulated_bms_settings(spec.chemistry_kind, cells, spec.capacity_ah), **overrides)
    model = make_pack(
        cell_count=cells,
        capacity_ah=spec.capacity_ah,
        runner=None,
        soc_pct=start_soc_pct,
        resistance_ohm=CELL_RESISTANCE_OHM,
        seed=number,
        chemistry=spec.chemistry_kind,
        weak_cells=spec.weak_cells,
        resistances_ohm={cell: mohm / 1000 for cell, mohm in (spec.resistance_mohm or {}).items()},
    )
    return _Pack(number, spec, settings, model, spec.temperature_c.at(0.0))


def _reading(pack: _Pack, cells_v: tuple[float, ...], now_s: float) -> PackReading:
    """What the pack's BMS reports, after the JK NW wire (mV cells, 10 mA current, whole °C, integer SOC)."""
    state = BatteryState(
        measured_at_s=now_s,
        cell_voltages_v=tuple(round(v, 3) for v in cells_v),
        pack_voltage_v=round(sum(cells_v), 2),
        current_a=round(pack.current_a, 2),
        soc_pct=min(100.0, max(0.0, pack.model.soc_pct)),
        cycle_count=3,
        cycle_capacity_ah=300.0,
        mos_temperature_c=_mos_temperature_c(pack),
        battery_temperatures_c=(pack.temperature_c, pack.temperature_c),
        charge_mos_on=not pack.protection.charge_off(now_s),
        discharge_mos_on=not pack.protection.discharge_off(now_s),
        balancer_on=pack.balancing is not None,
        balance_current_a=pack.balancing.current_a if pack.balancing is not None else 0.0,
        alarms=pack.protection.alarms(now_s),
        runtime_s=3_600_000.0 + now_s,
    )
    sent = PackReading(pack.pack_id, state, pack.settings, DeviceInfo(model="bms-gateway scenario sim"))
    frame = jk_nw.encode_reply(jk_nw.from_reading(sent))
    return jk_nw.to_reading(jk_nw.decode_reply(frame), now_s, pack.pack_id)


def _mos_temperature_c(pack: _Pack) -> float:
    return pack.temperature_c + 3.0 + 0.03 * abs(pack.current_a)


def _heard(profile: Profile, sink: _Sink, now_s: float) -> Heard | None:
    """The limits the inverter hears now; None when it has not heard them for :data:`INVERTER_TIMEOUT_S`."""
    frames = [sink.latest.get(0x351), sink.latest.get(0x35C)]
    if any(f is None or now_s - f[0] > INVERTER_TIMEOUT_S for f in frames):
        return None
    values: dict[str, Value] = {}
    for can_id in (0x351, 0x35C):
        values.update(named_values(profile.frame(can_id), sink.latest[can_id][1]))
    return Heard.of(values)


@dataclass(frozen=True, slots=True)
class ScenarioRow:
    """One step of a scenario run, for the CSV trace."""

    time_s: float
    stage: str
    heard: Heard | None
    current_a: float
    bus_v: float
    pack_currents_a: tuple[float, ...]
    pack_max_cell_v: tuple[float, ...]
    pack_min_cell_v: tuple[float, ...]
    pack_temperatures_c: tuple[float, ...]
    pack_soc_pct: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class ScenarioRun:
    summary: ScenarioSummary
    rows: tuple[ScenarioRow, ...]


def _new_loop(
    profile: Profile,
    sink: _Sink,
    clock: FakeClock,
    scenario: ChargeCycleScenario,
    ids: list[str],
    store: StateStore,
) -> ControlLoop:
    settings = LoopSettings(
        poll_interval_s=POLL_INTERVAL_S,
        bms_timeout_s=BMS_TIMEOUT_S,
        silence_after_s=profile.silence_after_s,
        limits=scenario.tuning,
    )
    loop = ControlLoop(profile, sink, clock, settings, store=store)
    loop.expect_packs(ids)
    return loop


def run_scenario(scenario: ChargeCycleScenario, *, dt_s: float = 1.0, keep_rows: bool = False) -> ScenarioRun:
    """Run ``scenario`` to its duration; see the module docstring. ``keep_rows``: keep a trace row per step."""
    started = time.perf_counter()
    profile = load_profile(PROFILE)
    clock = FakeClock(start_s=0.0)
    sink = _Sink(clock)
    packs = [_make_pack(number, spec, scenario.start_soc_pct) for number, spec in enumerate(scenario.all_packs, 1)]
    ids = [p.pack_id for p in packs]
    # The gateway's state directory: what survives its restarts (a crash: the last periodic save, not a stop).
    state_dir = tempfile.TemporaryDirectory(prefix="bms-gateway-sim-")
    store = StateStore(Path(state_dir.name))
    loop = _new_loop(profile, sink, clock, scenario, ids, store)
    inverter = Inverter(
        overshoot=scenario.inverter.overshoot,
        response_s=scenario.inverter.response_s,
        charge_power_w=scenario.inverter.charge_power_w,
        load_a=scenario.inverter.load_a,
        obeys=frozenset(scenario.inverter.obeys),
    )
    margin_c = scenario.tuning.temperature_margin_c

    trips: list[PackTrip] = []
    rows: list[ScenarioRow] = []
    max_cell, min_cell = -math.inf, math.inf
    over_limit = [0.0] * len(packs)
    outside_ah = [0.0] * len(packs)
    ccl_changes: list[float] = []
    cvl_changes: list[float] = []
    cvl_rises: list[float] = []
    toggles = 0
    previous: Heard | None = None
    float_at: float | None = None
    stage = "charge"
    total_a = 0.0
    poll = 0
    last_restart = 0.0
    now_s = 0.0
    while now_s <= scenario.duration_s:
        # The packs carry the inverter's current as the bus shares it; their BMSs protect them.
        for pack in packs:
            pack.heat(now_s, dt_s)
        ocvs = [p.model.ocv_v for p in packs]
        resistances = [p.model.resistance_ohm for p in packs]
        currents = split_current(
            total_a,
            ocvs,
            resistances,
            [not p.protection.charge_off(now_s) for p in packs],
            [not p.protection.discharge_off(now_s) for p in packs],
        )
        cells_now: list[tuple[float, ...]] = []
        for index, (pack, amps) in enumerate(zip(packs, currents, strict=True)):
            pack.current_a = amps
            cells_v = pack.model.cell_voltages_v(amps)
            cells_now.append(cells_v)
            pack.protection, new_trips = protect(
                pack.protection,
                cells_v,
                amps,
                now_s,
                pack.settings,
                battery_temperature_c=pack.temperature_c,
                mos_temperature_c=_mos_temperature_c(pack),
            )
            trips += [PackTrip(pack.number, trip) for trip in new_trips]
            bms = pack.settings
            pack.balancing = balance_decision(
                cells_v,
                start_v=bms.balance_start_v or math.inf,
                trigger_v=bms.balance_trigger_v or 0.0,
                max_current_a=(bms.max_balance_current_a or 0.0) if bms.balancer_enabled else 0.0,
            )
            max_cell, min_cell = max(max_cell, *cells_v), min(min_cell, *cells_v)
            over = max(amps - bms.max_charge_current_a, -amps - bms.max_discharge_current_a, 0.0)
            over_limit[index] = max(over_limit[index], over)
            low = (bms.charge_utp_c if bms.charge_utp_c is not None else -math.inf) + margin_c
            high = (bms.charge_otp_c if bms.charge_otp_c is not None else math.inf) - margin_c
            if amps > 0 and not low < pack.temperature_c < high:
                outside_ah[index] += amps * dt_s / 3600.0

        # The gateway polls, decides and sends.
        if scenario.restart_every_s is not None and now_s - last_restart >= scenario.restart_every_s:
            loop, last_restart = _new_loop(profile, sink, clock, scenario, ids, store), now_s
        readings = tuple(
            _reading(p, cells, now_s) for p, cells in zip(packs, cells_now, strict=True) if p.answers(poll, now_s)
        )
        poll += 1
        errors: Mapping[str, GatewayError] = {
            p.pack_id: LinkTimeout(f"{p.pack_id}: no reply") for p in packs if not p.answers(poll - 1, now_s)
        }
        if readings:
            loop.on_readings(readings, errors)
        else:
            loop.on_poll_failed(LinkTimeout("no pack answered"))
        loop.tick()

        # The inverter hears the frames and acts.
        heard = _heard(profile, sink, now_s)
        if heard is not None and previous is not None:
            if heard.ccl_a != previous.ccl_a:
                ccl_changes.append(now_s)
            if heard.cvl_v != previous.cvl_v:
                cvl_changes.append(now_s)
                if heard.cvl_v > previous.cvl_v:
                    cvl_rises.append(now_s)
            if heard.charge_enable != previous.charge_enable:
                toggles += 1
        previous = heard if heard is not None else previous
        if float_at is None:
            limits = loop.snapshot().limits
            if limits is not None and limits.charge_phase == "float":
                float_at = now_s
                if stage == "charge":
                    stage = "float"
        holding = stage == "float" and scenario.discharge_after_float and float_at is not None
        if holding and float_at is not None and now_s - float_at >= FLOAT_HOLD_S:
            stage = "discharge"
        bus_v = _bus_v(packs, currents)
        if stage in ("charge", "float"):
            open_packs = [i for i, p in enumerate(packs) if not p.protection.charge_off(now_s)]
            bus = Bus.of([ocvs[i] for i in open_packs], [resistances[i] for i in open_packs])
            target = inverter.charge_target_a(heard, bus, bus_v)
        elif stage == "discharge":
            target = -inverter.discharge_target_a(heard, bus_v)
            if target == 0.0 or all(p.protection.discharge_off(now_s) for p in packs):
                stage, target = "rest", 0.0
        else:
            target = 0.0
        if keep_rows:
            rows.append(
                ScenarioRow(
                    time_s=now_s,
                    stage=stage,
                    heard=heard,
                    current_a=sum(currents),
                    bus_v=bus_v,
                    pack_currents_a=tuple(currents),
                    pack_max_cell_v=tuple(max(c) for c in cells_now),
                    pack_min_cell_v=tuple(min(c) for c in cells_now),
                    pack_temperatures_c=tuple(p.temperature_c for p in packs),
                    pack_soc_pct=tuple(round(p.model.soc_pct, 3) for p in packs),
                )
            )
        for pack in packs:
            pack.model = pack.model.step(pack.current_a, dt_s, pack.balancing)
        total_a = inverter.respond(total_a, target, dt_s)
        clock.advance(dt_s)
        now_s += dt_s

    state_dir.cleanup()
    summary = ScenarioSummary(
        trips=tuple(trips),
        max_cell_v=max_cell,
        min_cell_v=min_cell,
        float_reached_s=float_at,
        ccl_change_times_s=tuple(ccl_changes),
        cvl_change_times_s=tuple(cvl_changes),
        cvl_rise_times_s=tuple(cvl_rises),
        enable_toggles=toggles,
        max_pack_current_over_bms_limit_a=tuple(over_limit),
        charge_outside_window_ah=tuple(outside_ah),
        capacities_ah=tuple(p.spec.capacity_ah for p in packs),
        seconds_simulated=min(now_s - dt_s, scenario.duration_s),
        wall_s=time.perf_counter() - started,
    )
    return ScenarioRun(summary, tuple(rows))


def _bus_v(packs: list[_Pack], currents: tuple[float, ...]) -> float:
    """The bus voltage: the terminal voltage of a pack that carries current (all are equal), else the highest OCV."""
    for pack, amps in zip(packs, currents, strict=True):
        if amps != 0.0:
            return pack.model.ocv_v + amps * pack.model.resistance_ohm
    return max(p.model.ocv_v for p in packs)
