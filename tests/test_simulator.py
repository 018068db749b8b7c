"""The simulated JK BMS's answers (JkUartSimulator.respond), scenario by scenario, under a fake clock."""

from __future__ import annotations

import pytest
from jk_frames import REPLIES, REQUESTS, sum16, wrap

from gateway.bms import jk_nw
from gateway.clock import FakeClock
from gateway.errors import FrameError
from gateway.model import Alarm, PackReading
from gateway.sim.jk_uart import JkUartSimulator
from gateway.sim.scenarios import SCENARIOS, Behaviour


def with_command(request: bytes, command: int, payload: bytes = b"\x00") -> bytes:
    """``request`` with another command byte and payload; length and checksum redone by the test helper."""
    frame = bytearray(request)
    frame[8] = command
    return wrap(payload, header_from=bytes(frame))


READ_REGISTER_0 = with_command(REQUESTS[0].frame, 0x03)
READ_ALL_REQUESTS = {
    "read-all-pc": REQUESTS[0].frame,
    "read-all-gps": REQUESTS[1].frame,
    "read-register-0": READ_REGISTER_0,
}


def simulator_at(scenario: str, t_s: float) -> JkUartSimulator:
    """A simulator (not serving) whose scenario time is ``t_s``."""
    clock = FakeClock()
    simulator = JkUartSimulator(SCENARIOS[scenario], clock, port="unused")
    clock.advance(t_s)
    return simulator


def reading_at(scenario: str, t_s: float, request: bytes = REQUESTS[0].frame) -> PackReading:
    answer = simulator_at(scenario, t_s).respond(request)
    assert answer is not None, f"{scenario} gave no answer at {t_s} s"
    return jk_nw.to_reading(jk_nw.decode_reply(answer), 0.0, "sim")


def answering_times(scenario: str) -> list[float]:
    times = [0.5, 2.5, 3.5, 10.0, 19.5, 55.0, 80.0, 100.0, 170.0, 1234.5]
    return [t for t in times if SCENARIOS[scenario].step(t).behaviour is Behaviour.ANSWER]


def test_the_checked_requests_are_well_formed() -> None:
    # The test's own request frames, checked with the test helper's arithmetic, not the codec's.
    for frame in READ_ALL_REQUESTS.values():
        assert frame[:2] == b"\x4e\x57"
        assert int.from_bytes(frame[2:4], "big") == len(frame) - 2
        assert int.from_bytes(frame[-4:], "big") == sum16(frame[:-4])
    assert READ_REGISTER_0[8] == 0x03


@pytest.mark.parametrize("request_name", sorted(READ_ALL_REQUESTS))
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_scenario_answers_read_requests_with_its_reading(scenario: str, request_name: str) -> None:
    request = READ_ALL_REQUESTS[request_name]
    times = answering_times(scenario)
    assert times, f"no answering time for {scenario}"
    for t in times:
        answer = simulator_at(scenario, t).respond(request)
        assert answer is not None
        reply = jk_nw.decode_reply(answer)
        assert answer[8] == request[8]  # the reply echoes the request's command
        assert answer[10] == 0x01  # frame type: reply
        assert int.from_bytes(answer[-4:], "big") == sum16(answer[:-4])
        reading = jk_nw.to_reading(reply, 0.0, "sim")
        expected = SCENARIOS[scenario].step(t).reading
        assert reading.state.cell_voltages_v == pytest.approx(expected.state.cell_voltages_v, abs=0.0005)
        assert reading.state.pack_voltage_v == pytest.approx(expected.state.pack_voltage_v, abs=0.005)
        assert reading.state.current_a == pytest.approx(expected.state.current_a, abs=0.005)
        assert reading.state.soc_pct == expected.state.soc_pct
        assert reading.state.alarms == expected.state.alarms
        assert reading.state.charge_mos_on == expected.state.charge_mos_on
        assert reading.state.discharge_mos_on == expected.state.discharge_mos_on
        assert reading.state.battery_temperatures_c == expected.state.battery_temperatures_c
        assert_same_settings(reading, expected)
        assert len(reading.state.cell_voltages_v) == reading.settings.cell_count == 16


def assert_same_settings(got: PackReading, expected: PackReading) -> None:
    have = got.settings.to_json()
    for key, value in expected.settings.to_json().items():
        assert have[key] == (pytest.approx(value, abs=0.0005) if isinstance(value, float) else value), key


def test_silent_scenario_says_nothing_in_its_silent_window() -> None:
    clock = FakeClock()
    simulator = JkUartSimulator(SCENARIOS["silent"], clock, port="unused")
    request = REQUESTS[0].frame
    answers: dict[float, bool] = {}
    t = 0.0
    for target in (0.0, 19.5, 20.5, 30.0, 44.5, 45.5, 64.5, 65.5):
        clock.advance(target - t)
        t = target
        answers[target] = simulator.respond(request) is not None
    # Answers 20 s, silent 25 s, answers again: the 45 s cycle its description states.
    assert answers == {
        0.0: True,
        19.5: True,
        20.5: False,
        30.0: False,
        44.5: False,
        45.5: True,
        64.5: True,
        65.5: False,
    }


def test_corrupt_scenario_brings_each_fault_within_four_seconds() -> None:
    clock = FakeClock()
    simulator = JkUartSimulator(SCENARIOS["corrupt"], clock, port="unused")
    clock.advance(0.5)
    outcomes: list[str] = []
    for second in range(4):
        t = 0.5 + second
        answer = simulator.respond(REQUESTS[0].frame)
        assert answer is not None
        expected = SCENARIOS["corrupt"].step(t).reading
        if answer[:2] != b"\x4e\x57":
            # Noise first: exactly one offset holds a frame that decodes, and it is the scenario's reading.
            good = []
            for offset in range(1, len(answer)):
                try:
                    good.append((offset, jk_nw.decode_reply(answer[offset:])))
                except FrameError:
                    continue
            assert len(good) == 1
            reading = jk_nw.to_reading(good[0][1], 0.0, "sim")
            assert reading.state.cell_voltages_v == pytest.approx(expected.state.cell_voltages_v, abs=0.0005)
            outcomes.append("garbage first")
        else:
            try:
                reply = jk_nw.decode_reply(answer)
            except FrameError as error:
                outcomes.append(error.fault)
                if error.fault == "truncated":
                    assert len(answer) < jk_nw.frame_length(answer[:4])
            else:
                reading = jk_nw.to_reading(reply, 0.0, "sim")
                assert reading.state.soc_pct == expected.state.soc_pct
                outcomes.append("good")
        clock.advance(1.0)
    assert sorted(outcomes) == sorted(["bad checksum", "truncated", "garbage first", "good"])


def test_bad_checksum_answer_differs_from_the_good_frame_only_in_its_checksum() -> None:
    bad_t = next(t + 0.5 for t in range(4) if SCENARIOS["corrupt"].step(t + 0.5).behaviour is Behaviour.BAD_CHECKSUM)
    bad = simulator_at("corrupt", bad_t).respond(REQUESTS[0].frame)
    assert bad is not None
    with pytest.raises(FrameError, match="bad checksum"):
        jk_nw.decode_reply(bad)
    assert int.from_bytes(bad[-4:], "big") != sum16(bad[:-4])
    # Repair the checksum with the test helper's arithmetic: the rest is a valid frame.
    repaired = bad[:-4] + sum16(bad[:-4]).to_bytes(4, "big")
    jk_nw.decode_reply(repaired)


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(REPLIES[0].frame, id="a-reply"),
        pytest.param(wrap(b"\x00", header_from=REQUESTS[0].frame, frame_type=0x02), id="an-upload"),
        pytest.param(with_command(REQUESTS[0].frame, 0x02, b"\xab\x00"), id="write-charge-mos-off"),
        pytest.param(with_command(REQUESTS[0].frame, 0x05, b"\x31\x32\x33"), id="password"),
        pytest.param(with_command(REQUESTS[0].frame, 0x01), id="activate"),
        pytest.param(with_command(REQUESTS[0].frame, 0x03, b"\x85"), id="read-one-register"),
        pytest.param(REQUESTS[0].frame[:-1] + b"\x00", id="bad-checksum"),
        pytest.param(REQUESTS[0].frame[:15], id="truncated"),
        pytest.param(b"\x00\x01\x02garbage", id="garbage"),
        pytest.param(b"", id="nothing"),
    ],
)
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_ignores_everything_but_a_read_request(scenario: str, frame: bytes) -> None:
    t = answering_times(scenario)[0]
    simulator = simulator_at(scenario, t)
    assert simulator.respond(frame) is None
    assert simulator.respond(REQUESTS[0].frame) is not None  # yet it answers a real request at that moment


OVP_CELL = 6  # cell 7, as the scenario describes


def test_cell_ovp_trips_above_ovp_and_releases_below_ovpr() -> None:
    # 90 s cycle: cell 7 rises 3.40 → 3.75 V over 60 s, falls back over 30 s.
    rising_ok = reading_at("cell-ovp", 30.0)
    tripped = reading_at("cell-ovp", 55.0)
    falling_still_tripped = reading_at("cell-ovp", 70.0)
    released = reading_at("cell-ovp", 85.0)
    next_cycle_tripped = reading_at("cell-ovp", 55.0 + 90.0)

    for reading in (rising_ok, released):
        assert reading.state.cell_voltages_v[OVP_CELL] < reading.settings.cell_ovp_v
        assert Alarm.CELL_OVER_VOLTAGE not in reading.state.alarms
        assert reading.state.charge_mos_on
        assert reading.state.current_a > 0  # charging
    assert released.state.cell_voltages_v[OVP_CELL] < released.settings.cell_ovpr_v

    for reading in (tripped, next_cycle_tripped):
        cells = reading.state.cell_voltages_v
        assert cells[OVP_CELL] > reading.settings.cell_ovp_v
        assert max(cells) == cells[OVP_CELL]
        assert Alarm.CELL_OVER_VOLTAGE in reading.state.alarms
        assert not reading.state.charge_mos_on
        assert reading.state.discharge_mos_on
        assert reading.state.current_a <= 0

    # Hysteresis: back below OVP but still above OVPR, the BMS stays tripped.
    cell = falling_still_tripped.state.cell_voltages_v[OVP_CELL]
    assert falling_still_tripped.settings.cell_ovpr_v < cell < falling_still_tripped.settings.cell_ovp_v
    assert Alarm.CELL_OVER_VOLTAGE in falling_still_tripped.state.alarms
    assert not falling_still_tripped.state.charge_mos_on


def test_cold_blocks_charging_below_utp_and_releases_when_warm() -> None:
    # 180 s cycle warming from −8 °C to +10 °C.
    cold = reading_at("cold", 10.0)
    warm = reading_at("cold", 170.0)
    temperatures = [t for t in cold.state.battery_temperatures_c if t is not None]
    assert temperatures
    assert cold.settings.charge_utp_c is not None
    assert max(temperatures) < cold.settings.charge_utp_c
    assert Alarm.BATTERY_UNDER_TEMPERATURE in cold.state.alarms
    assert not cold.state.charge_mos_on
    assert cold.state.discharge_mos_on
    assert cold.state.current_a < 0  # discharging only

    warm_temperatures = [t for t in warm.state.battery_temperatures_c if t is not None]
    assert warm.settings.charge_utpr_c is not None
    assert min(warm_temperatures) > warm.settings.charge_utpr_c
    assert Alarm.BATTERY_UNDER_TEMPERATURE not in warm.state.alarms
    assert warm.state.charge_mos_on
    assert warm.state.current_a > 0


def test_the_password_goes_out_on_the_wire_but_never_decodes_to_text() -> None:
    answer = simulator_at("normal-charge", 1.0).respond(REQUESTS[0].frame)
    assert answer is not None
    reply = jk_nw.decode_reply(answer)
    password = reply["password"]
    assert "123456" not in repr(password) and "123456" not in str(password)
    assert b"123456" in answer  # a real JK sends it in clear; the simulator is faithful
