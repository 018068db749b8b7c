"""The RS485 side of inverters: the gateway answers polls as the battery.

* :mod:`.pylontech_ascii`: the Pylontech ASCII protocol (pure codec and responder, and
  :func:`~.pylontech_ascii.decode_frame` for monitors);
* :mod:`.modbus_map`: Modbus register maps (Growatt, Voltronic, the gateway's own ``modbus-battery``);
* :mod:`.profile`: RS485 profile files (``profiles/rs485/*.yaml``): framing, layouts and register maps as data
  (the specs in :mod:`.profile_spec`, the schema by part in :mod:`.profile_fields`, :mod:`.profile_pylontech`,
  :mod:`.profile_modbus`);
* :mod:`.values`: the values those layouts carry, derived from pack readings and limits;
* :mod:`.server`: outputs on a serial port or TCP, their fail-safe rules, and the assembly for the app.
"""

from gateway.rs485.profile import (
    is_rs485_profile,
    load_rs485_profile,
    load_rs485_profile_text,
    rs485_profile_names,
)
from gateway.rs485.profile_spec import Framing, Rs485Profile

__all__ = [
    "Framing",
    "Rs485Profile",
    "is_rs485_profile",
    "load_rs485_profile",
    "load_rs485_profile_text",
    "rs485_profile_names",
]
