"""The charge-cycle scenario file: packs, their BMSs and an inverter, as YAML validated like the config.

``bms-gateway simulate charge-cycle --scenario-file FILE`` reads it (:func:`load_scenario`); every key, its
default and its unit are in ``docs/charge-cycle.md``. Unknown keys are refused with the closest known one, bad
values name their dotted key (``packs[1].weak_cells.17: ...``), as in the config (:mod:`gateway.yaml_schema`).
The ``limits`` and ``charging`` sections are the config's own, so a user's tuning can be copied in unchanged.
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Final

from gateway.config import ChargingConfig, LimitsConfig, limits_tuning
from gateway.errors import ConfigError
from gateway.limits.settings import LimitsSettings
from gateway.model import Chemistry, ProtectionSettings
from gateway.yaml_schema import (
    _MORE_KEYS,
    _choice,
    _flag,
    _integer,
    _integer_from,
    _Invalid,
    _join,
    _number,
    _optional,
    _parse_section,
    _Section,
    _section_of,
    _setting,
    _show,
    read_yaml_file,
)

CHEMISTRY_NAMES: Final = tuple(chemistry.value for chemistry in Chemistry)
DEFAULT_CELLS: Final[Mapping[Chemistry, int]] = MappingProxyType(
    {Chemistry.LIFEPO4: 16, Chemistry.LI_ION: 14, Chemistry.LTO: 20}
)
"""Cells in series when a pack does not say: the 48 V pack of each chemistry."""
OBEYABLE: Final = ("ccl", "dcl", "cvl", "dvl", "enable")
"""What an inverter may follow: the current limits, the voltage limits, the enable bits (both sides)."""
MAX_CELLS: Final = 32

_SETTING_NAMES: Final = tuple(f.name for f in fields(ProtectionSettings) if f.name != "measured_at_s")
_BOOLEAN_SETTINGS: Final = frozenset({"balancer_enabled", "charge_mos_switch", "discharge_mos_switch"})


@dataclass(frozen=True, slots=True)
class Temperature:
    """A pack's temperature over the run: constant, a schedule, or warmed by its own current."""

    constant_c: float | None = None
    schedule: tuple[tuple[float, float], ...] = ()
    """(time s, °C) points, interpolated linearly between them and held beyond the ends."""
    ambient_c: float | None = None
    """Self-heating: the pack starts at this ambient and warms by I² × R, cooling towards the ambient."""

    def at(self, time_s: float) -> float:
        """The scheduled or constant temperature at ``time_s`` (self-heating is stepped by the run), °C."""
        if self.constant_c is not None:
            return self.constant_c
        if self.ambient_c is not None:
            return self.ambient_c
        points = self.schedule
        if time_s <= points[0][0]:
            return points[0][1]
        for (t0, c0), (t1, c1) in itertools.pairwise(points):
            if time_s <= t1:
                return c0 + (c1 - c0) * (time_s - t0) / (t1 - t0) if t1 > t0 else c1
        return points[-1][1]


ROOM_TEMPERATURE: Final = Temperature(constant_c=25.0)
"""A pack's temperature when the scenario does not say."""


def _temperature(value: object) -> Temperature:
    """``25``; ``[[0, -5], [10800, 15]]``; or ``{self_heating: true, ambient_c: 25}``."""
    wanted = "a number (°C), a list of [time s, °C] pairs, or {self_heating: true, ambient_c: <°C>}"
    celsius = _number(at_least=-60, at_most=120)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Temperature(constant_c=celsius(value))
    if isinstance(value, list) and value:
        points: list[tuple[float, float]] = []
        for item in value:
            if not isinstance(item, list) or len(item) != 2:
                raise _Invalid(f"expected {wanted}, got {_show(item)} in the list")
            time_s, at_c = _number(at_least=0)(item[0]), celsius(item[1])
            if points and time_s < points[-1][0]:
                raise _Invalid(f"the times must not decrease, got {item[0]} after {points[-1][0]:g}")
            points.append((time_s, at_c))
        return Temperature(schedule=tuple(points))
    if isinstance(value, Mapping):
        unknown = sorted(str(key) for key in value if key not in ("self_heating", "ambient_c"))
        if unknown:
            raise _Invalid(f"unknown key {unknown[0]!r} (known keys: self_heating, ambient_c)")
        if value.get("self_heating") is not True:
            raise _Invalid("a mapping here needs self_heating: true")
        return Temperature(ambient_c=celsius(value.get("ambient_c", 25.0)))
    raise _Invalid(f"expected {wanted}, got {_show(value)}")


def _per_cell(what: str, low: float, high: float | None) -> Callable[[object], Mapping[int, float]]:
    """A mapping of cell number (1-based) → a number in (low, high]."""
    parse = _number(above=low, at_most=high) if high is not None else _number(above=low)

    def parse_map(value: object) -> Mapping[int, float]:
        if value is None:
            return MappingProxyType({})
        if not isinstance(value, Mapping):
            raise _Invalid(f"expected a mapping of cell number (1-{MAX_CELLS}) to {what}, got {_show(value)}")
        out: dict[int, float] = {}
        for key, item in value.items():
            if isinstance(key, bool) or not isinstance(key, int) or not 1 <= key <= MAX_CELLS:
                raise _Invalid(f"expected cell numbers from 1 to {MAX_CELLS} as keys, got {_show(key)}")
            try:
                out[key] = parse(item)
            except _Invalid as invalid:
                raise _Invalid(f"cell {key}: {invalid}") from None
        return MappingProxyType(out)

    return parse_map


def _bms_settings(value: object) -> Mapping[str, object]:
    """Overrides of the simulated BMS's settings, by :class:`~gateway.model.ProtectionSettings` field name."""
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise _Invalid(f"expected a mapping of BMS setting names to values, got {_show(value)}")
    out: dict[str, object] = {}
    for key, item in value.items():
        name = str(key)
        if name not in _SETTING_NAMES:
            close = difflib.get_close_matches(name, _SETTING_NAMES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else " (see docs/charge-cycle.md for the names)"
            raise _Invalid(f"unknown BMS setting {name!r}{hint}")
        try:
            if name in _BOOLEAN_SETTINGS:
                out[name] = _flag(item)
            elif name == "battery_type":
                out[name] = Chemistry(_choice(CHEMISTRY_NAMES)(item))
            elif name == "cell_count":
                out[name] = _integer_from(1, MAX_CELLS)(item)
            else:
                out[name] = _optional(_number(at_least=-60))(item)
        except _Invalid as invalid:
            raise _Invalid(f"{name}: {invalid}") from None
    return MappingProxyType(out)


def _obeys(value: object) -> tuple[str, ...]:
    """A list of what the inverter follows, each one of :data:`OBEYABLE` (empty: it ignores everything)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _Invalid(f"expected a list of {', '.join(OBEYABLE)}, got {_show(value)}")
    out = tuple(_choice(OBEYABLE)(item) for item in value)
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True, slots=True, kw_only=True)
class PackScenario(_Section):
    """One pack and its BMS (``packs[i]``)."""

    chemistry: str = _setting(_choice(CHEMISTRY_NAMES), Chemistry.LIFEPO4.value)
    cells: int | None = _setting(_optional(_integer_from(1, MAX_CELLS)), None)
    """Cells in series; None: the chemistry's :data:`DEFAULT_CELLS`."""
    capacity_ah: float = _setting(_number(above=0), 100.0)
    weak_cells: Mapping[int, float] | None = _setting(_per_cell("a capacity fraction", 0.0, 1.0), None)
    """Cell number → its capacity as a fraction of the pack's."""
    resistance_mohm: Mapping[int, float] | None = _setting(_per_cell("a resistance in mΩ", 0.0, None), None)
    """Cell number → its internal resistance, mΩ; the others the cell model's default (0.6 mΩ)."""
    settings: Mapping[str, object] | None = _setting(_bms_settings, None)
    """Overrides of the chemistry's simulated BMS settings (:func:`gateway.sim.bms_defaults.bms_settings`)."""
    # _setting returns a dataclasses.field; the default is a frozen Temperature.
    temperature_c: Temperature = _setting(_temperature, ROOM_TEMPERATURE)  # noqa: RUF009
    silent_from_s: float | None = _setting(_optional(_number(at_least=0)), None)
    """From this time on the BMS does not answer (the pack stays on the bus), s."""
    miss_every: int | None = _setting(_optional(_integer(2)), None)
    """The BMS misses every n-th poll."""

    @property
    def chemistry_kind(self) -> Chemistry:
        return Chemistry(self.chemistry)

    @property
    def cell_count(self) -> int:
        return self.cells if self.cells is not None else DEFAULT_CELLS[self.chemistry_kind]

    def _validate(self, path: str) -> None:
        for key in ("weak_cells", "resistance_mohm"):
            beyond = [cell for cell in getattr(self, key) or {} if cell > self.cell_count]
            if beyond:
                raise ConfigError(_join(path, key), f"cell {beyond[0]} beyond the pack's {self.cell_count} cells")


@dataclass(frozen=True, slots=True, kw_only=True)
class InverterScenario(_Section):
    """The inverter (``inverter``): what it follows and what it can do."""

    obeys: tuple[str, ...] = _setting(_obeys, OBEYABLE)
    overshoot: float = _setting(_number(above=0, at_most=5), 1.0)
    """It takes up to this × CCL (× DCL) when it follows them."""
    response_s: float = _setting(_number(at_least=0, at_most=600), 0.0)
    """Time constant of its first-order response to a new target, s (0: at once)."""
    charge_power_w: float = _setting(_number(above=0), 10_000.0)
    """What the PV or the charger can give, W."""
    load_a: float = _setting(_number(at_least=0), 50.0)
    """The house load it draws from the battery once discharging, A."""

    def follows(self, what: str) -> bool:
        return what in self.obeys


@dataclass(frozen=True, slots=True, kw_only=True)
class ChargeCycleScenario(_Section):
    """A whole scenario file."""

    duration_h: float = _setting(_number(above=0, at_most=72), 8.0)
    start_soc_pct: float = _setting(_number(at_least=0, at_most=100), 20.0)
    discharge_after_float: bool = _setting(_flag, False)
    restart_every_s: float | None = _setting(_optional(_number(at_least=10)), None)
    packs: PackScenario = field(default_factory=PackScenario, metadata=_section_of(PackScenario, more="more_packs"))
    more_packs: tuple[PackScenario, ...] = field(default=(), metadata=_MORE_KEYS)
    inverter: InverterScenario = field(default_factory=InverterScenario, metadata=_section_of(InverterScenario))
    limits: LimitsConfig = field(default_factory=LimitsConfig, metadata=_section_of(LimitsConfig))
    charging: ChargingConfig = field(default_factory=ChargingConfig, metadata=_section_of(ChargingConfig))

    @property
    def all_packs(self) -> tuple[PackScenario, ...]:
        return (self.packs, *self.more_packs)

    @property
    def tuning(self) -> LimitsSettings:
        return limits_tuning(self.limits, self.charging)

    @property
    def duration_s(self) -> float:
        return self.duration_h * 3600.0


def parse_scenario(data: object, source: str = "<scenario>") -> ChargeCycleScenario:
    """Validate YAML data into a scenario; ``None`` (an empty file) is every default.

    :raises ConfigError: naming the dotted key and the problem.
    """
    if data is not None and not isinstance(data, Mapping):
        raise ConfigError("", f"scenario file {source}: expected a mapping of keys, got {_show(data)}")
    try:
        return _parse_section(ChargeCycleScenario, data or {}, "", set())
    except ConfigError as error:
        raise ConfigError(error.key, f"{error.problem} (scenario file {source})") from None


def load_scenario(path: Path) -> ChargeCycleScenario:
    """Read and validate the scenario file at ``path``. :raises ConfigError: anything wrong, in one line."""
    return parse_scenario(read_yaml_file(path, "scenario file"), str(path))


def scenario_to_json(scenario: ChargeCycleScenario) -> dict[str, object]:
    """Every key in force, defaults included (for ``--json`` output and the docs)."""
    out = scenario.to_json()
    out["packs"] = [pack.to_json() for pack in scenario.all_packs]
    out.pop("more_packs", None)
    for pack in out["packs"]:
        assert isinstance(pack, dict)
        settings = pack["settings"] or {}
        pack["settings"] = {k: (v.value if isinstance(v, Chemistry) else v) for k, v in settings.items()}
        pack["weak_cells"] = dict(pack["weak_cells"] or {})
        pack["resistance_mohm"] = dict(pack["resistance_mohm"] or {})
        temperature = pack["temperature_c"]
        pack["temperature_c"] = _temperature_json(temperature) if isinstance(temperature, Temperature) else temperature
    return out


def _temperature_json(temperature: Temperature) -> object:
    if temperature.constant_c is not None:
        return temperature.constant_c
    if temperature.ambient_c is not None:
        return {"self_heating": True, "ambient_c": temperature.ambient_c}
    return [list(point) for point in temperature.schedule]


__all__ = [
    "CHEMISTRY_NAMES",
    "DEFAULT_CELLS",
    "OBEYABLE",
    "ChargeCycleScenario",
    "InverterScenario",
    "PackScenario",
    "Temperature",
    "load_scenario",
    "parse_scenario",
    "scenario_to_json",
]
