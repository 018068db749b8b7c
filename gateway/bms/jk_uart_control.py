"""Control for the ``jk-uart`` driver: switch writes in the wired NW protocol, over the driver's own link.

Only the I/O: frames come from :mod:`gateway.bms.jk_nw_control`, and every rule (opt-in, password check, rate
limit, read back) is :mod:`gateway.control`'s. It shares the driver's serial link, so its exchanges must not
overlap a poll: call it from the thread that polls, or between polls.
"""

from __future__ import annotations

import logging
import time

from gateway.bms import jk_nw
from gateway.bms.control import Switch, SwitchReadout
from gateway.bms.jk_nw_control import (
    BALANCER_WRITE_NOTE,
    PASSWORD_GAP_S,
    WRITE_FORMS,
    encode_password,
    password_frame,
    switch_frame,
)
from gateway.bms.jk_uart import JkUartDriver
from gateway.errors import ConfigError, LinkTimeout
from gateway.secret import Secret

log = logging.getLogger(__name__)


class JkUartControl:
    """:class:`~gateway.bms.control.BmsControl` for a JK BMS on its wired port.

    :param driver: the driver whose link and read-all this uses.
    :param password: the settings password, sent in the password frame before each write.
    :param gap_s: wait after each frame (the BMS answers neither, as far as known), s.
    :raises ConfigError: the password cannot be stored by the BMS (``control.password``).
    """

    name = "jk-uart"
    write_forms = len(WRITE_FORMS)

    def __init__(self, driver: JkUartDriver, password: Secret, *, gap_s: float = PASSWORD_GAP_S) -> None:
        try:
            encode_password(password)
        except ValueError as exc:
            raise ConfigError("control.password", str(exc)) from None
        self._driver = driver
        self._password = password
        self._gap_s = gap_s

    def read_switches(self) -> SwitchReadout:
        reply, reading = self._driver.read_reply()
        password = reply.fields.get("password")
        return SwitchReadout(reading, password if isinstance(password, Secret) else None)

    def set_switch(self, switch: Switch, on: bool, form: int = 0) -> None:
        layout = WRITE_FORMS[form]
        log.debug("jk-uart control: %s switch write in the %s form", switch, layout.value)
        self._send(password_frame(self._password, layout))
        self._send(switch_frame(switch, on, layout))

    def not_verified_note(self, switch: Switch) -> str:
        return BALANCER_WRITE_NOTE if switch is Switch.BALANCER else ""

    def _send(self, frame: bytes) -> None:
        """Send ``frame`` and let ``gap_s`` of real time pass: the BMS needs the pause, whatever the clock.

        [unverified] Whether the BMS answers a password or write frame is unknown; an answer is taken and
        ignored (the caller verifies by reading back), silence is the expected case.
        """
        started = time.monotonic()
        try:
            self._driver.link.transact(frame, jk_nw.FRAMER, self._gap_s)
            log.debug("jk-uart control: the BMS answered command 0x%02X", frame[8])
        except LinkTimeout:
            pass
        remaining_s = self._gap_s - (time.monotonic() - started)
        if remaining_s > 0:
            time.sleep(remaining_s)
