"""Driver ``jk-uart``: a JK BMS on its wired UART/RS485 port, NW protocol, one pack per port."""

from __future__ import annotations

import logging

from gateway.bms import jk_nw
from gateway.bms.reply_ring import ReplyRing, nw_reply
from gateway.bms.wiring_hints import no_reply_hint
from gateway.clock import Clock
from gateway.errors import FrameError, GatewayError, LinkError, LinkTimeout
from gateway.model import PackReading
from gateway.transport.serial_link import SerialFactory, SerialLink

log = logging.getLogger(__name__)


class JkUartDriver:
    """Polls one JK BMS with the read-all request.

    :param port: serial device or pyserial URL.
    :param baudrate: bits per second (JK: 115200).
    :param timeout_s: how long to wait for one reply, s.
    :param retries: extra attempts within one poll after a bad or missing reply.
    :param replies: where each good reply goes, its password masked, for the support bundle (None: nowhere).
    """

    name = "jk-uart"

    def __init__(
        self,
        *,
        port: str,
        baudrate: int = 115200,
        timeout_s: float = 0.5,
        retries: int = 1,
        clock: Clock,
        serial_factory: SerialFactory | None = None,
        replies: ReplyRing | None = None,
    ) -> None:
        self._clock = clock
        self._replies = replies
        self._timeout_s = timeout_s
        self._attempts = 1 + max(0, retries)
        self._request = jk_nw.read_all_request()
        self.pack_id = f"jk-uart:{port}"
        self._told_version_assumed = False
        self._link = (
            SerialLink(port, baudrate)
            if serial_factory is None
            else SerialLink(port, baudrate, serial_factory=serial_factory)
        )

    @property
    def link(self) -> SerialLink:
        return self._link

    def read(self) -> tuple[PackReading, ...]:
        return (self.read_reply()[1],)

    def read_reply(self) -> tuple[jk_nw.JkNwReply, PackReading]:
        """One read-all reply, decoded, and its reading (control needs the reply: it holds tag 0xB2).

        :raises GatewayError: (FrameError or LinkError) every attempt failed; a timeout carries the likely causes
            as its hint (:func:`~gateway.bms.wiring_hints.no_reply_hint`).
        """
        last_error: GatewayError | None = None
        for _ in range(self._attempts):
            try:
                frame = self._link.transact(self._request, jk_nw.FRAMER, self._timeout_s)
                received_at = self._clock.monotonic()
                reply = jk_nw.decode_reply(frame)
                if self._replies is not None:
                    self._replies.add(nw_reply(self._clock.wall(), self.pack_id, frame, reply.fields))
                self._tell_if_version_assumed(reply)
                return reply, jk_nw.to_reading(reply, received_at, self.pack_id)
            except LinkTimeout as exc:
                hint = no_reply_hint(self.name, self._link.last_received, echoed=self._request)
                last_error = LinkTimeout(str(exc), hint=hint)
            except (FrameError, LinkError) as exc:
                last_error = exc
        assert last_error is not None
        raise last_error

    def _tell_if_version_assumed(self, reply: jk_nw.JkNwReply) -> None:
        # Once per driver: the assumption holds for every reply of this BMS, and a line per poll would flood.
        if reply.protocol_version_stated or self._told_version_assumed:
            return
        self._told_version_assumed = True
        log.warning(
            "%s: reply has no protocol version (tag 0xC0): current read as version %d (offset 10000), "
            "the vendor's default",
            self.pack_id,
            reply.protocol_version,
        )

    def close(self) -> None:
        self._link.close()
