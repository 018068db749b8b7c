"""Control for the ``jk-modbus`` driver: a JK-PB's switch writes over Modbus RTU, on the driver's own bus.

Only the I/O: requests come from :mod:`gateway.bms.jk_modbus_switch`, and every rule (opt-in, password check,
rate limit, read back) is :mod:`gateway.control`'s. A JK-PB takes a switch write without any password, so the
gateway's comparison of ``control.password`` with the settings passcode the pack reports
(:data:`~gateway.bms.jk_modbus.SETTINGS_PASSCODE_NAME`, [unverified] which field that is) is the only check.

One pack per bus: with several ``bms.addresses`` it refuses, since the policy checks one password and reads
back one pack. It shares the driver's port, so its exchanges must not overlap a poll: call it from the thread
that polls, or between polls.
"""

from __future__ import annotations

import logging

from gateway.bms import jk_modbus
from gateway.bms.control import Switch, SwitchReadout
from gateway.bms.jk_modbus_driver import JkModbusDriver
from gateway.bms.jk_modbus_switch import SwitchWrite
from gateway.errors import ConfigError, ControlRefused, LinkTimeout
from gateway.secret import Secret

log = logging.getLogger(__name__)


class JkModbusControl:
    """:class:`~gateway.bms.control.BmsControl` for the one JK-PB on a ``jk-modbus`` bus.

    :param driver: the driver whose bus and reads this uses.
    :param password: ``control.password``; never sent (a JK-PB has no password on the wire), only checked to
        be one a JK-PB can hold.
    :raises ControlRefused: the driver polls more than one pack.
    :raises ConfigError: the password could never match a JK-PB's settings passcode (``control.password``).
    """

    name = "jk-modbus"
    write_forms = 1
    """One layout: the V1.1 map's FC 0x10 of a u32."""

    def __init__(self, driver: JkModbusDriver, password: Secret) -> None:
        addresses = driver.addresses
        if len(addresses) != 1:
            raise ControlRefused(
                "unsupported",
                f"refused: BMS control of jk-modbus needs one pack on the bus, bms.addresses lists {len(addresses)}",
            )
        try:
            jk_modbus.check_settings_passcode(password)
        except ValueError as exc:
            raise ConfigError("control.password", str(exc)) from None
        self._driver = driver
        self._unit = addresses[0]

    def read_switches(self) -> SwitchReadout:
        reading, passcode = self._driver.read_for_control(self._unit)
        return SwitchReadout(reading, passcode)

    def not_verified_note(self, switch: Switch) -> str:
        return ""

    def set_switch(self, switch: Switch, on: bool, form: int = 0) -> None:
        write = SwitchWrite(self._unit, switch, on)
        try:
            self._driver.bus.write_switch(write)
        except LinkTimeout as exc:
            # The request went out; whether it took is for the read back to say, not a lost acknowledgement.
            log.warning("jk-modbus control: %s sent, no acknowledgement (%s); reading back", write.describe(), exc)
