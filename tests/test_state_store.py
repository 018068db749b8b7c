"""The state store (atomic JSON files in the state directory) and the limits engines' memory across a restart:
a latch or a learned compensation survives it, a corrupt, foreign, old or other pack's file is ignored."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from limits_fixtures import TUNING, cells_at, reading

from gateway.clock import FakeClock
from gateway.limits import LimitsEngine
from gateway.limits.persist import memory_from_json, memory_to_json
from gateway.packs import PackSet
from gateway.state_store import StateStore, state_directory

KIND = "limits-memory"


def test_the_state_directory_systemd_then_config_then_home(tmp_path: Path) -> None:
    assert state_directory("/srv/x", {"STATE_DIRECTORY": "/var/lib/bms-gateway:/var/lib/other"}) == Path(
        "/var/lib/bms-gateway"
    )
    assert state_directory("/srv/x", {}) == Path("/srv/x")
    assert state_directory(None, {}) == Path("~/.local/state/bms-gateway").expanduser()


def test_save_and_load_round_trip_leave_no_temporary_file(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    store.save(KIND, {"packs": {"a": 1}}, wall_s=1000.0)
    store.save(KIND, {"packs": {"a": 2}}, wall_s=1060.0)
    loaded = store.load(KIND)
    assert loaded is not None and loaded.data == {"packs": {"a": 2}} and loaded.saved_wall_s == 1060.0
    assert [p.name for p in (tmp_path / "state").iterdir()] == [f"{KIND}.json"]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("{not json", "not JSON"),
        (json.dumps({"format": "something-else", "kind": KIND, "data": {}, "saved_wall_s": 1.0}), "not a bms-gateway"),
        (
            json.dumps({"format": "bms-gateway-state", "version": 99, "kind": KIND, "data": {}, "saved_wall_s": 1.0}),
            "format version 99",
        ),
        (json.dumps([1, 2, 3]), "not a bms-gateway"),
    ],
)
def test_a_corrupt_or_foreign_file_is_ignored_with_one_line(
    tmp_path: Path, content: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = StateStore(tmp_path)
    store.path(KIND).write_text(content, encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="gateway.state_store"):
        assert store.load(KIND) is None
    (line,) = [r.getMessage() for r in caplog.records]
    assert why in line and str(store.path(KIND)) in line


def test_no_file_is_no_state_and_no_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert StateStore(tmp_path).load(KIND) is None
    assert caplog.records == []


def _latched_engine() -> tuple[LimitsEngine, float]:
    """An engine whose charge side is cut off and latched (a cell reached the 3.55 V cut-off)."""
    engine = LimitsEngine(TUNING)
    engine.update(reading(cells_at(3.35), now_s=0.0), 0.0)
    engine.update(reading(cells_at(3.35, cell7=3.56), now_s=1.0), 1.0)
    return engine, 1.0


def test_the_memory_round_trips_with_its_times_moved_to_the_new_clock() -> None:
    engine, saved_at = _latched_engine()
    assert engine.memory is not None
    data = json.loads(json.dumps(memory_to_json(engine.memory, saved_at)))
    # The new process's clock reads 5000 s; 90 s have passed since the save.
    restored = memory_from_json(data, 5000.0 - 90.0)
    assert restored is not None
    assert restored.charge.latches == engine.memory.charge.latches
    assert restored.voltage.phase is engine.memory.voltage.phase
    assert restored.voltage.updated_at_s == pytest.approx(engine.memory.voltage.updated_at_s - saved_at + 4910.0)
    assert memory_from_json({"charge": {}}, 0.0) is None


def packset_with(store_dir: Path, clock: FakeClock) -> PackSet:
    packs = PackSet(TUNING, max_age_s=10.0)
    stored = StateStore(store_dir).load(KIND)
    packs.restore(stored, clock.monotonic(), clock.wall(), 3600.0)
    return packs


def _limits(packs: PackSet, cells: tuple[float, ...], now: float) -> float:
    from gateway.battery import aggregate

    battery = aggregate([reading(cells, now_s=now)])
    return packs.limits(battery, frozenset(), now).charge_current_limit_a


def test_a_cut_off_latch_survives_a_restart_and_an_old_file_does_not(tmp_path: Path) -> None:
    clock = FakeClock(start_s=0.0)
    store = StateStore(tmp_path)
    first = packset_with(tmp_path, clock)
    assert _limits(first, cells_at(3.35), 0.0) > 0
    assert _limits(first, cells_at(3.35, cell7=3.56), 1.0) == 0.0  # cut off, latched until below OVPR 3.40 V
    store.save(KIND, first.memory_json(1.0), clock.wall() + 1.0)

    # A new process 30 s later, its monotonic clock from 0 again: the cell is back at 3.45 V, above the release.
    later = FakeClock(start_s=0.0, wall_start_s=clock.wall() + 31.0)
    second = packset_with(tmp_path, later)
    assert _limits(second, cells_at(3.35, cell7=3.45), 0.0) == 0.0  # still latched: restored

    # Without the file (or with one older than an hour) the same reading charges: the latch was the memory's.
    old = FakeClock(start_s=0.0, wall_start_s=clock.wall() + 3601.0 + 1.0)
    third = packset_with(tmp_path, old)
    assert _limits(third, cells_at(3.35, cell7=3.45), 0.0) > 0


def test_another_packs_memory_is_not_used(tmp_path: Path) -> None:
    clock = FakeClock(start_s=0.0)
    first = packset_with(tmp_path, clock)
    _limits(first, cells_at(3.35, cell7=3.56), 0.0)
    memory = first.memory_json(0.0)
    assert list(memory["packs"]) == ["test:pack:16s"]  # type: ignore[call-overload]
    renamed = {"packs": {"other-pack:16s": next(iter(memory["packs"].values()))}}  # type: ignore[attr-defined]
    StateStore(tmp_path).save(KIND, renamed, clock.wall())
    second = packset_with(tmp_path, FakeClock(start_s=0.0, wall_start_s=clock.wall() + 10.0))
    assert _limits(second, cells_at(3.35, cell7=3.45), 0.0) > 0
