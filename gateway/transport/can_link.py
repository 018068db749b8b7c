"""One CAN link to the inverter through python-can, built to survive a flaky or vanishing adapter.

:class:`CanLink` wraps a single ``can.BusABC`` (socketcan, slcan, gs_usb, pcan, virtual, ...):

* **Sending** is one standard (11-bit) frame per :meth:`CanLink.send` call, transmitted immediately from the
  caller's control loop. The link never asks python-can to repeat a frame by itself (no periodic tasks, no
  broadcast manager, no kernel BCM): if our loop hangs, the inverter must stop hearing the old limits.
* **Failures** (an adapter that is missing or unplugged, a bus error, a full transmit queue) never raise and
  never print a traceback. The first failure of an *episode* logs one line naming the cause, and
  :attr:`CanLink.errors` counts every failed bus operation. A failed send is not repeated: the control loop
  sends the frame again when it is next due, on the same bus, since one refused frame (a full transmit queue,
  ENOBUFS) says little about the adapter. Only ``reopen_after_failures`` sends in a row that fail (python-can
  reports no error state for SocketCAN, so consecutive failures are the signal), a failed open or a failed
  receive shut the bus down; the next :meth:`CanLink.send` after ``reopen_interval_s`` (of the injected clock)
  opens it again. The first frame that goes out after an episode logs ``"CAN: back ..."``.
* **Receiving** runs in a background thread that calls ``bus.recv(timeout=0.1)`` for as long as the link is
  open. Frames whose id is in ``listen_ids`` (or ``decoders``) are recorded with their arrival time on the
  injected clock's *monotonic* scale, so :meth:`CanLink.heartbeat_age_s` tells how long the inverter has been
  silent. A frame with a decoder is also decoded into named values, each kept with its arrival time
  (:meth:`CanLink.received_values`); a frame the decoder rejects is counted and logged once per id. Then
  ``on_receive(can_id)`` is called (the control loop wakes up for a request or a heartbeat). Every other frame
  is read and dropped, which keeps driver receive queues from filling up. The link knows no protocol: decoders
  and the callback come from whoever builds it.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

import can

from gateway.clock import Clock
from gateway.errors import FrameError, LinkError
from gateway.telemetry.frame_ring import RX, TX, FrameRing
from gateway.values import Value

log = logging.getLogger(__name__)

MAX_STANDARD_ID: Final = 0x7FF
"""Largest 11-bit CAN identifier."""
MAX_DATA_LEN: Final = 8
"""Classic CAN carries at most 8 data bytes."""
RECV_TIMEOUT_S: Final = 0.1
"""Seconds the reader thread blocks in one ``bus.recv``; bounds how long :meth:`CanLink.close` waits for it."""
_JOIN_TIMEOUT_S: Final = 2.0
"""Seconds :meth:`CanLink.close` waits for the reader thread before giving up on it (it is a daemon)."""
_RESERVED_KEYS: Final = frozenset({"interface", "channel", "bitrate"})
REOPEN_AFTER_FAILURES: Final = 5
"""Sends in a row that must fail before the bus is shut down and reopened (one failure is not a dead adapter)."""


@dataclass(frozen=True)
class CanSettings:
    """Where and how to open the CAN bus.

    :param interface: python-can interface name, e.g. ``"socketcan"``, ``"slcan"``, ``"gs_usb"``, ``"virtual"``.
    :param channel: the interface's channel, e.g. ``"can0"``, ``"/dev/ttyACM0"``, ``"PCAN_USBBUS1"``.
    :param bitrate: bus speed in bit/s (500000 for Pylontech-style inverters); ``None`` leaves it to the
        adapter (socketcan takes it from ``ip link``) and is then not passed to ``can.Bus`` at all.
    :param extra: further keyword arguments handed to ``can.Bus`` unchanged (e.g. ``{"tty_baudrate": 115200}``
        for slcan). Stored as a read-only copy.
    """

    interface: str
    channel: str
    bitrate: int | None
    extra: Mapping[str, object] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        if not self.interface:
            raise ValueError("CAN interface must not be empty")
        if self.bitrate is not None and self.bitrate <= 0:
            raise ValueError(f"CAN bitrate must be a positive number of bit/s, not {self.bitrate}")
        clash = sorted(_RESERVED_KEYS.intersection(self.extra))
        if clash:
            raise ValueError(f"CAN extra settings must not repeat {', '.join(clash)}")
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    def describe(self) -> str:
        """Short human name of the bus for log lines, e.g. ``"socketcan channel can0"``."""
        return f"{self.interface} channel {self.channel}"

    def bus_kwargs(self) -> dict[str, object]:
        """Keyword arguments for ``can.Bus``: interface and channel as given, bitrate only when set, extra."""
        kwargs: dict[str, object] = {"interface": self.interface, "channel": self.channel}
        if self.bitrate is not None:
            kwargs["bitrate"] = self.bitrate
        kwargs.update(INTERFACE_DEFAULTS.get(self.interface, {}))
        kwargs.update(self.extra)
        return kwargs


INTERFACE_DEFAULTS: Mapping[str, Mapping[str, object]] = MappingProxyType(
    {
        # python-can's slcan reader polls the serial port byte by byte with this read timeout; its default of
        # 1 ms keeps a core 5 % busy. Only our reader thread waits on it (frames go out from the loop's
        # thread), so 100 ms costs nothing but a heartbeat seen up to 100 ms later. The config may override it.
        "slcan": MappingProxyType({"timeout": 0.1}),
    }
)
"""Keyword defaults per python-can interface, below the config's own pass-through keys."""


def _cause(exc: BaseException) -> str:
    """One-line description of an exception: its message, or its type name when the message is empty."""
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


class CanLink:
    """A self-healing CAN link: immediate single-frame sends plus background reception of chosen ids.

    Thread-safe: :meth:`send` may be called from the control loop while the reader thread records frames.

    :param settings: which bus to open.
    :param clock: time source; reopen schedule and arrival times use ``clock.monotonic()`` (seconds).
    :param listen_ids: standard ids whose frames are recorded (e.g. ``0x305``, the inverter's heartbeat).
    :param reopen_interval_s: seconds (of ``clock``) to wait after the bus was shut down before opening it again.
    :param reopen_after_failures: sends in a row that must fail before the bus is shut down and reopened.
    :param bus_factory: builds the bus from :meth:`CanSettings.bus_kwargs`; ``can.Bus`` unless a test swaps it.
    :param send_timeout_s: seconds one ``bus.send`` may wait for room in the adapter's transmit queue, so a
        full queue stalls the control loop for at most this long.
    :param decoders: per CAN id, a function from payload to named values (raising
        :class:`~gateway.errors.FrameError` for a payload it cannot read); these ids are listened to as well.
    :param on_receive: called on the reader thread with the id of every recorded frame, after it is recorded
        and decoded; it must be quick and must not raise (an exception is logged and swallowed).
    :param ring: keeps every frame sent and every standard data frame received, with its wall time, for the
        support bundle (:mod:`gateway.telemetry.frame_ring`); None: none kept.
    :raises ValueError: a listen id is not an 11-bit id, or an interval or count is not positive.
    """

    def __init__(
        self,
        settings: CanSettings,
        clock: Clock,
        *,
        listen_ids: Iterable[int] = (),
        reopen_interval_s: float = 5.0,
        reopen_after_failures: int = REOPEN_AFTER_FAILURES,
        bus_factory: Callable[..., can.BusABC] = can.Bus,
        send_timeout_s: float = 0.05,
        decoders: Mapping[int, Callable[[bytes], Mapping[str, Value]]] | None = None,
        on_receive: Callable[[int], None] | None = None,
        ring: FrameRing | None = None,
    ) -> None:
        decoders = dict(decoders or {})
        ids = frozenset(listen_ids) | frozenset(decoders)
        for can_id in ids:
            _check_id(can_id)
        if reopen_interval_s <= 0:
            raise ValueError(f"reopen_interval_s must be positive, not {reopen_interval_s}")
        if reopen_after_failures < 1:
            raise ValueError(f"reopen_after_failures must be at least 1, not {reopen_after_failures}")
        if send_timeout_s < 0:
            raise ValueError(f"send_timeout_s must not be negative, not {send_timeout_s}")
        self._settings = settings
        self._clock = clock
        self._listen_ids = ids
        self._reopen_interval_s = reopen_interval_s
        self._reopen_after_failures = reopen_after_failures
        self._bus_factory = bus_factory
        self._send_timeout_s = send_timeout_s

        self._lock = threading.Lock()
        """Guards the bus handle, the failure state and the reader handle."""
        self._bus: can.BusABC | None = None
        self._retry_at = float("-inf")
        """Monotonic seconds before which no reopen is attempted."""
        self._failing = False
        """True from the first failure of an episode until a frame goes out again."""
        self._failed_sends_in_row = 0
        """Sends that failed on the open bus since the last one that went out (or since it was opened)."""
        self._shut_in_episode = False
        """Whether this episode has shut the bus down already (its next shutdowns are logged at DEBUG)."""
        self._errors = 0
        self._last_error: str | None = None
        self._closed = False
        self._reader: threading.Thread | None = None
        self._stop: threading.Event | None = None
        self._decoders = decoders
        self._on_receive = on_receive
        self._received: dict[int, tuple[float, bytes]] = {}
        self._values: dict[str, tuple[Value, float]] = {}
        self._decode_failing: set[int] = set()
        """Ids whose last frame the decoder rejected: the next rejection is not logged again."""
        self._decode_errors = 0
        self._received_lock = threading.Lock()
        self._ring = ring

    # --- state -------------------------------------------------------------------------------------------

    @property
    def settings(self) -> CanSettings:
        """The settings this link opens its bus with."""
        return self._settings

    @property
    def is_open(self) -> bool:
        """True while a bus is open (it may still fail on the next send)."""
        return self._bus is not None

    @property
    def errors(self) -> int:
        """Failed bus operations so far (opens, sends and receives that raised); never reset."""
        return self._errors

    @property
    def last_error(self) -> str | None:
        """The latest failed bus operation and its cause (``send on ... failed: Network is down``); None if none
        ever failed. Kept after recovery, like :attr:`errors`: ``status`` shows why the count grew."""
        return self._last_error

    @property
    def decode_errors(self) -> int:
        """Received frames their decoder rejected so far; never reset."""
        return self._decode_errors

    # --- open / close ------------------------------------------------------------------------------------

    def open(self) -> None:
        """Open the bus now, unless it is already open, and start the reader thread.

        Hardware trouble (missing or busy adapter, interface down, ...) does not raise: it logs one line naming
        the cause and :meth:`send` tries again after ``reopen_interval_s``.

        :raises LinkError: the settings cannot work however often we retry: an unknown interface, a driver
            whose Python module is not installed, or arguments the driver rejects.
        """
        with self._lock:
            self._closed = False
            if self._bus is None:
                self._open_locked(strict=True)

    def close(self) -> None:
        """Stop the reader thread and shut the bus down. Idempotent; :meth:`open` may be called again later."""
        with self._lock:
            self._closed = True
            reader, stop = self._reader, self._stop
            self._reader = self._stop = None
        if stop is not None:
            stop.set()
        if reader is not None and reader is not threading.current_thread():
            reader.join(_JOIN_TIMEOUT_S)
        with self._lock:
            bus, self._bus = self._bus, None
            self._failing = self._shut_in_episode = False
            self._failed_sends_in_row = 0
            self._retry_at = float("-inf")
        if bus is not None:
            _shutdown_quietly(bus)

    def __enter__(self) -> CanLink:
        self.open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- sending -----------------------------------------------------------------------------------------

    def send(self, can_id: int, data: bytes) -> bool:
        """Transmit one standard-id data frame now.

        Opens the bus first if it is not open and ``reopen_interval_s`` has passed since it was shut down. A
        failed send leaves the bus open (the caller sends the frame again when it is next due) unless it is the
        ``reopen_after_failures``-th in a row: then the bus is shut down and reopened later.

        :param can_id: 11-bit identifier, 0x000 to 0x7FF.
        :param data: 0 to 8 payload bytes; the DLC is their count.
        :returns: True when the adapter accepted the frame; False when the bus is closed, waiting to be
            reopened, or the send failed (the failure is counted, and logged if it starts an episode).
        :raises ValueError: ``can_id`` or ``data`` cannot form a classic standard frame (a caller bug).
        """
        _check_id(can_id)
        if len(data) > MAX_DATA_LEN:
            raise ValueError(f"CAN frame 0x{can_id:03X}: {len(data)} data bytes, at most {MAX_DATA_LEN}")
        message = can.Message(arbitration_id=can_id, data=bytes(data), dlc=len(data), is_extended_id=False, is_fd=False)
        with self._lock:
            if self._closed:
                return False
            bus = self._bus
            if bus is None:
                if self._clock.monotonic() < self._retry_at:
                    return False
                bus = self._open_locked(strict=False)
                if bus is None:
                    return False
            try:
                bus.send(message, timeout=self._send_timeout_s)
            except Exception as exc:  # any driver failure is a bus failure: never fatal, never a traceback
                self._send_failed_locked(bus, exc)
                return False
            self._failed_sends_in_row = 0
            if self._ring is not None:
                self._ring.add(self._clock.wall(), TX, can_id, message.data)
            if self._failing:
                self._failing = self._shut_in_episode = False
                log.info("CAN: back on %s (%d errors so far)", self._settings.describe(), self._errors)
            return True

    # --- receiving ---------------------------------------------------------------------------------------

    def last_received(self, can_id: int) -> tuple[float, bytes] | None:
        """The newest frame with ``can_id`` (one of ``listen_ids``): (monotonic arrival in s, data), or None."""
        with self._received_lock:
            return self._received.get(can_id)

    def received_values(self) -> dict[str, tuple[Value, float]]:
        """The newest decoded value of every name: (value, monotonic arrival of its frame in s)."""
        with self._received_lock:
            return dict(self._values)

    def heartbeat_age_s(self, can_id: int) -> float | None:
        """Seconds since the newest frame with ``can_id`` arrived, on the injected clock; None if never seen."""
        last = self.last_received(can_id)
        if last is None:
            return None
        return self._clock.monotonic() - last[0]

    # --- internals (call the *_locked ones with self._lock held) -----------------------------------------

    def _open_locked(self, *, strict: bool) -> can.BusABC | None:
        """Try to open the bus; on failure record the episode and return None.

        :param strict: raise :class:`LinkError` for configuration errors instead of retrying them.
        """
        try:
            bus = self._bus_factory(**self._settings.bus_kwargs())
        # python-can raises a plain NotImplementedError for an unknown interface when its config files are ignored
        # (our can_bus), CanInterfaceNotImplementedError (a subclass) for a driver module that is not installed.
        except (NotImplementedError, TypeError, ValueError) as exc:
            if strict:
                raise LinkError(
                    f"CAN: cannot open {self._settings.describe()}: {_cause(exc)}", hint=_settings_hint(exc)
                ) from exc
            self._fail_locked(None, f"cannot open {self._settings.describe()}", exc)
            return None
        except Exception as exc:  # hardware trouble in whatever form the driver reports it
            self._fail_locked(None, f"cannot open {self._settings.describe()}", exc)
            return None
        self._bus = bus
        self._failed_sends_in_row = 0
        level = logging.DEBUG if self._failing else logging.INFO
        speed = f" at {self._settings.bitrate} bit/s" if self._settings.bitrate is not None else ""
        log.log(level, "CAN: opened %s%s", self._settings.describe(), speed)
        self._start_reader_locked()
        return bus

    def _send_failed_locked(self, bus: can.BusABC, exc: BaseException) -> None:
        """Count a failed send; shut the bus down only if it is the last of ``reopen_after_failures`` in a row."""
        self._failed_sends_in_row += 1
        what = f"send on {self._settings.describe()} failed"
        in_row = self._failed_sends_in_row
        if in_row < self._reopen_after_failures:
            self._count_locked(
                what,
                exc,
                f"the frames go out again when next due; the bus is reopened after {self._reopen_after_failures} "
                "failed sends in a row",
            )
            return
        if self._failing and not self._shut_in_episode:
            log.info(
                "CAN: %d sends in a row failed on %s; shutting the bus down, reopening it every %g s",
                in_row,
                self._settings.describe(),
                self._reopen_interval_s,
            )
        self._fail_locked(bus, what, exc)

    def _count_locked(self, what: str, exc: BaseException, consequence: str) -> None:
        """Count a failure and log it if it starts an episode (one line: what failed, why, what happens now)."""
        self._errors += 1
        self._last_error = f"{what}: {_cause(exc)}"
        if self._failing:
            log.debug("CAN: %s: %s (same episode, error %d)", what, _cause(exc), self._errors)
        else:
            self._failing = True
            hint = _bus_hint(self._settings, exc)
            log.warning("CAN: %s: %s; %s%s", what, _cause(exc), consequence, f"; hint: {hint}" if hint else "")

    def _fail_locked(self, bus: can.BusABC | None, what: str, exc: BaseException) -> None:
        """Count a failure, log it if it starts an episode, drop ``bus`` and schedule the reopen."""
        self._count_locked(what, exc, f"retrying every {self._reopen_interval_s:g} s")
        self._shut_in_episode = True
        self._failed_sends_in_row = 0
        if bus is not None:
            if bus is self._bus:
                self._bus = None
            _shutdown_quietly(bus)
        self._retry_at = self._clock.monotonic() + self._reopen_interval_s

    def _start_reader_locked(self) -> None:
        if self._reader is not None and self._reader.is_alive():
            return
        self._stop = threading.Event()
        self._reader = threading.Thread(
            target=self._read_loop,
            args=(self._stop,),
            name=f"can-reader-{self._settings.channel}",
            daemon=True,
        )
        self._reader.start()

    def _read_loop(self, stop: threading.Event) -> None:
        """Reader thread: receive until ``stop`` is set, surviving bus failures and bus swaps."""
        while not stop.is_set():
            bus = self._bus
            if bus is None:
                stop.wait(RECV_TIMEOUT_S)
                continue
            try:
                message = bus.recv(timeout=RECV_TIMEOUT_S)
            except Exception as exc:  # the bus broke under us, or was shut down by send/close meanwhile
                with self._lock:
                    if bus is self._bus and not stop.is_set():
                        self._fail_locked(bus, f"receive on {self._settings.describe()} failed", exc)
                stop.wait(RECV_TIMEOUT_S)
                continue
            if message is not None:
                self._record(message)

    def _record(self, message: can.Message) -> None:
        """Stamp and keep a received frame if it is a standard data frame with a listened-to id."""
        if message.is_extended_id or message.is_error_frame or message.is_remote_frame:
            return
        if self._ring is not None:  # every frame heard, listened to or not: the bundle shows the whole bus
            self._ring.add(self._clock.wall(), RX, message.arbitration_id, bytes(message.data))
        if message.arbitration_id not in self._listen_ids:
            return
        can_id, data = message.arbitration_id, bytes(message.data)
        arrival = self._clock.monotonic()
        decoder = self._decoders.get(can_id)
        values: Mapping[str, Value] = {}
        if decoder is not None:
            try:
                values = decoder(data)
            except FrameError as exc:
                self._decode_errors += 1
                level = logging.DEBUG if can_id in self._decode_failing else logging.WARNING
                log.log(level, "CAN: frame 0x%03X from the inverter not decoded: %s", can_id, exc)
                self._decode_failing.add(can_id)
            else:
                self._decode_failing.discard(can_id)
        with self._received_lock:
            self._received[can_id] = (arrival, data)
            self._values.update({name: (value, arrival) for name, value in values.items()})
        if self._on_receive is not None:
            try:
                self._on_receive(can_id)
            except Exception as exc:  # the reader must survive whatever the callback does
                log.error("CAN: handling frame 0x%03X failed: %s", can_id, _cause(exc))


def _settings_hint(exc: BaseException) -> str:
    """What to do about settings the driver refuses (they cannot work however often the bus is reopened)."""
    if isinstance(exc, NotImplementedError):
        return (
            "check inverter.can.interface (bms-gateway check names the interfaces python-can knows); a known one "
            "whose driver module is missing needs that package in the gateway's Python environment"
        )
    return "check the options under inverter.can (bms-gateway check warns about the ones the interface does not take)"


def _bus_hint(settings: CanSettings, exc: BaseException) -> str | None:
    """What the user can do about a bus failure, for the two a new SocketCAN setup meets first; else None."""
    if settings.interface != "socketcan":
        return None
    number = getattr(exc, "error_code", None) or getattr(exc, "errno", None)
    text = str(exc)
    channel = settings.channel
    if number == errno.ENETDOWN or "Network is down" in text:
        bitrate = settings.bitrate or 500000
        return (
            f"{channel} is down: sudo ip link set {channel} up type can bitrate {bitrate} restart-ms 100, or let "
            f"install.sh's CAN unit do it at every boot (sudo systemctl enable --now bms-gateway-can@{channel})"
        )
    if number == errno.ENODEV or "No such device" in text:
        return (
            f"there is no network interface {channel} (ip link show lists them): plug the USB-CAN adapter in, or "
            "check the CAN HAT's dtoverlay line in /boot/firmware/config.txt and reboot"
        )
    return None


def _check_id(can_id: int) -> None:
    if not 0 <= can_id <= MAX_STANDARD_ID:
        raise ValueError(f"CAN id {can_id:#x} is not a standard 11-bit id (0x000..0x7FF)")


def _shutdown_quietly(bus: can.BusABC) -> None:
    """Shut a bus down, ignoring errors: a vanished adapter often cannot be closed cleanly."""
    try:
        bus.shutdown()
    except Exception as exc:
        log.debug("CAN: ignoring error while shutting the bus down: %s", _cause(exc))
