"""``bms-gateway run --dry-run``: the whole gateway but the CAN bus.

It reads the BMS, derives the limits and runs the same control loop (fail-safe states, schedules, the final
zero set on stop) as ``run``, but hands every frame to a :class:`PrintingSink` instead of a CAN link: each frame
is printed decoded, once a second or when its payload changes. No CAN bus is ever opened, so nothing can be
transmitted, whatever the config says. A request-mode profile (Growatt: the battery answers each request
frame) gets a simulated request every :data:`REQUEST_INTERVAL_S`, since no inverter is heard.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Final, TextIO

from gateway.app import limits_settings, open_battery
from gateway.cli.common import detach_stdout
from gateway.cli.frames import format_frame
from gateway.clock import Clock
from gateway.config import Config
from gateway.effective import resolve
from gateway.profiles import Profile
from gateway.runtime import ControlLoop, LoopSettings, Poller, run_loop

log = logging.getLogger(__name__)

REQUEST_INTERVAL_S: Final = 1.0
"""Request-mode profiles (Growatt): how often the dry run plays the inverter's request frame, s."""
REPRINT_AFTER_S: Final = 1.0
"""An unchanged frame is shown again after this long, s."""
_JITTER_S: Final = 0.05
"""Slack on :data:`REPRINT_AFTER_S`: a 1 s frame sent a few ms early is still shown every second, s."""


class PrintingSink:
    """A :class:`~gateway.runtime.FrameSink` that transmits nothing: it prints each frame, decoded.

    A frame is printed when its payload differs from the last one printed for its id, or when that was
    :data:`REPRINT_AFTER_S` ago; frames that repeat faster (SMA: every 200 ms) are not printed each time.
    Frames sent after ``stopping`` is set are all printed, marked ``stop``: the final set sent on exit.
    """

    def __init__(self, profile: Profile, clock: Clock, out: TextIO, *, stopping: threading.Event) -> None:
        self._codecs = {codec.can_id: codec for codec in profile.frames}
        self._name_width = max((len(codec.name) for codec in profile.frames), default=0)
        self._clock = clock
        self._out = out
        self._stopping = stopping
        self._started_s = clock.monotonic()
        self._printed: dict[int, tuple[float, bytes]] = {}
        self.frames_printed = 0
        self._reader_gone = False

    def send(self, can_id: int, data: bytes) -> bool:
        now = self._clock.monotonic()
        stopping = self._stopping.is_set()
        last = self._printed.get(can_id)
        repeat = last is not None and last[1] == data and now - last[0] < REPRINT_AFTER_S - _JITTER_S
        if repeat and not stopping:  # the final set is shown whole
            return True
        self._printed[can_id] = (now, data)
        marker = "stop" if stopping else "    "
        line = format_frame(self._codecs.get(can_id), can_id, data, name_width=self._name_width)
        if self._reader_gone:
            return True
        try:
            print(f"{now - self._started_s:8.3f} {marker} {line}", file=self._out, flush=True)
        except BrokenPipeError:  # `run --dry-run | head`: nobody reads any more, so stop
            self._reader_gone = True
            self._stopping.set()
            if self._out is sys.stdout:
                detach_stdout()
            return True
        self.frames_printed += 1
        return True  # "accepted": counts as sent, as on a healthy bus


def _request_every(loop: ControlLoop, request_id: int, stop: threading.Event) -> None:
    while not stop.is_set():
        loop.on_frame(request_id)
        stop.wait(REQUEST_INTERVAL_S)


def run_dry(config: Config, profile: Profile, clock: Clock, stop: threading.Event, out: TextIO) -> None:
    """Run BMS poller and control loop until ``stop`` is set, printing frames to ``out`` and opening no bus.

    :raises ConfigError: the config and profile do not fit together (as for ``run``).
    """
    effective = resolve(config, profile)  # the same checks as a real run, and the same fail-safe timings
    sink = PrintingSink(profile, clock, out, stopping=stop)
    # No inverter to hear in a dry run: the loop gets no heartbeat age, as for a profile without heartbeat.
    loop = ControlLoop(
        profile,
        sink,
        clock,
        LoopSettings(
            poll_interval_s=config.bms.poll_interval_s,
            bms_timeout_s=effective.bms_timeout_s.value,
            silence_after_s=effective.silence_after_s.value,
            limits=limits_settings(config),
        ),
    )
    driver = open_battery(config, clock)
    poller = Poller(driver, loop, clock, config.bms.poll_interval_s)
    requester: threading.Thread | None = None
    if profile.request_id is not None:
        requester = threading.Thread(
            target=_request_every, args=(loop, profile.request_id, stop), name="dry-run-requests", daemon=True
        )
        log.info("dry run: request mode: playing request 0x%03X every %g s", profile.request_id, REQUEST_INTERVAL_S)
    log.info(
        "dry run: BMS %s on %s every %g s → profile %s; the CAN bus is not opened and nothing is transmitted",
        config.bms.driver,
        config.bms.port,
        config.bms.poll_interval_s,
        profile.name,
    )
    try:
        if requester is not None:
            requester.start()
        run_loop(loop, poller, clock, stop)
    finally:
        stop.set()
        if requester is not None and requester.is_alive():
            requester.join(timeout=2)
        driver.close()
    log.info("dry run: %d frames shown, none transmitted", sink.frames_printed)
