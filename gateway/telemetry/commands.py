"""The one rule for every MQTT command topic (the BMS switches, the "Forget silent packs" button): a message
the broker delivers with the retain flag is never obeyed.

The broker sets the retain flag only on a message it replays to a new subscription: one somebody left on the
topic, maybe long ago. With ``clean_session`` the gateway subscribes again at every start and every reconnect
(a broker restart, a network blip, another client taking over the gateway's client id), so a retained ``OFF``
would switch the BMS off again each time, with nobody asking (security audit H1; Tasmota's "ghost switching").
A command published while the gateway is subscribed reaches it without the flag, even when its sender set it,
and is obeyed as usual.

The first refusal on a topic is logged, with how to clear the message; later ones are only counted: a client
forcing reconnects must not flood the log.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class RetainedCommands:
    """Refuses retained command messages: one log line per topic, then a count (:attr:`refused`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._logged: set[str] = set()
        self.refused = 0
        """Retained command messages refused so far."""

    def refuse(self, topic: str, retained: bool, what: str) -> bool:
        """True (and refuse) if the message on ``topic`` came with the retain flag; ``what`` names the command
        for the log line (``"charge switch command"``). Never raises, never blocks on I/O."""
        if not retained:
            return False
        with self._lock:
            self.refused += 1
            first = topic not in self._logged
            self._logged.add(topic)  # bounded: only the gateway's own command topics are subscribed
        if first:
            log.warning(
                "mqtt: refused a retained %s on %s: nobody sent it now, the broker replayed it (further ones are "
                "only counted); hint: clear it with mosquitto_pub -r -n -t '%s'",
                what,
                topic,
                topic,
            )
        return True
