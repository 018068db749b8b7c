"""Fuzzing the Modbus request handling of every register map: any function code, address and count gets either
words of the map or a Modbus exception, never anything else; only a map's declared handshake write is accepted.
``BMS_FUZZ_EXAMPLES`` (``make fuzz``) raises the example count."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rs485_fixtures import limits, reading

from gateway.rs485.modbus_map import ModbusException, RegisterMap
from gateway.rs485.profile import load_rs485_profile, rs485_profile_names
from gateway.rs485.values import battery_view

MAPS = {
    name: RegisterMap(profile.registers)
    for name in rs485_profile_names()
    if (profile := load_rs485_profile(name)).registers is not None
}
VIEW = battery_view([reading()], limits(), comm_alarm=False)
FUZZ = settings(
    max_examples=int(os.environ.get("BMS_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_every_modbus_profile_has_a_map() -> None:
    assert {"growatt-rs485", "voltronic-rs485", "modbus-battery"} <= set(MAPS)


@FUZZ
@given(
    st.sampled_from(sorted(MAPS)),
    st.integers(0, 255),
    st.integers(0, 0xFFFF),
    st.integers(-5, 300),
)
def test_any_read_gets_words_or_an_exception(name: str, function: int, address: int, count: int) -> None:
    answer = MAPS[name].read(VIEW, function, address, count)
    if isinstance(answer, ModbusException):
        return
    assert len(answer) == count
    assert all(isinstance(w, int) and 0 <= w <= 0xFFFF for w in answer)


@FUZZ
@given(st.sampled_from(sorted(MAPS)), st.integers(0, 255), st.integers(0, 0xFFFF), st.integers(-5, 300))
def test_only_a_declared_write_is_accepted(name: str, function: int, address: int, count: int) -> None:
    register_map = MAPS[name]
    answer = register_map.write(function, address, count)
    declared = {(w.function, w.address, w.count) for w in register_map.spec.writes}
    if (function, address, count) in declared:
        assert answer is None
    else:
        assert answer is ModbusException.ILLEGAL_FUNCTION
