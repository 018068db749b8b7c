"""A software null-modem cable: two pseudo-terminals joined by a relay thread.

Each end is a pty whose slave device is reachable through a stable symlink (``directory/"bms"``,
``directory/"gateway"``), so two programs, possibly in different processes, open a *path* with pyserial and
talk as if over a serial cable. The relay can pace bytes at a wire rate and inject faults (noise, lost
bytes, corruption, an unplugged adapter) in either direction.

Pty behaviour worth knowing (Linux): once the master side is closed, a program still holding the slave
sees EOF on ``read`` (pyserial raises ``SerialException`` "device reports readiness to read but returned no
data"), ``EIO`` on ``write`` (``SerialException``) and ``EIO`` from ``in_waiting`` (plain ``OSError``);
``SerialException`` is itself an ``OSError``. The relay holds each slave open, so bytes sent while nobody
has a path open wait in that pty's input queue; pyserial flushes them on open, a raw ``os.open`` sees them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import select
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Final

log = logging.getLogger(__name__)

A_TO_B: Final = "a_to_b"
B_TO_A: Final = "b_to_a"
DIRECTIONS: Final = (A_TO_B, B_TO_A)

# 8N1: start bit + 8 data bits + stop bit.
BITS_PER_BYTE: Final = 10
_READ_SIZE: Final = 4096
# Longest the relay sleeps in poll(), in s: bounds how late it notices stop() when nothing else wakes it.
_POLL_MAX_S: Final = 0.05
# Bytes a direction may hold for a destination nobody drains before the oldest are discarded (bytes).
# A real UART never blocks its sender; it overruns at the receiver. Dropping keeps the sender unblocked.
_BACKLOG_LIMIT: Final = 64 * 1024


@dataclass
class _Pty:
    """One end of the cable: the relay's master fd and its own slave fd (kept open so the master never
    reads EIO while no program has the path open)."""

    master: int
    slave: int
    device: str

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


@dataclass
class _Lane:
    """State of one direction of travel."""

    wire: bytearray = field(default_factory=bytearray)  # received, still "on the wire" (paced)
    wire_t0: float = 0.0  # monotonic s at which the first byte in ``wire`` started transmitting
    out: bytearray = field(default_factory=bytearray)  # due, not yet accepted by the destination
    drop: int = 0  # bytes still to discard (bytes)
    transform: Callable[[bytes], bytes] | None = None
    relayed: int = 0  # bytes delivered to the destination (bytes)
    broken: bool = False  # source or destination failed; idle until reappear()

    def clear_in_flight(self) -> None:
        self.wire.clear()
        self.out.clear()
        self.broken = False


def _open_pty() -> _Pty:
    master, slave = os.openpty()
    try:
        # Raw: no echo, no CR/LF mapping, no signals from 0x03 etc., so binary frames pass untouched.
        tty.setraw(slave)
        os.set_blocking(master, False)
        return _Pty(master, slave, os.ttyname(slave))
    except BaseException:
        os.close(master)
        os.close(slave)
        raise


def _point_symlink(link: Path, target: str) -> None:
    """Make ``link`` point at ``target`` atomically, so a reader never sees the path missing mid-swap."""
    tmp = link.with_name(f".{link.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class NullModem:
    """Two raw ptys joined by a relay thread; see the module docstring.

    ``baudrate`` (bits/s) paces delivery at the 8N1 wire rate (``baudrate / 10`` bytes/s); ``None`` forwards
    bytes as soon as they are read. Fault methods are thread-safe and take a direction, ``"a_to_b"`` (what
    the program on ``a_path`` writes) or ``"b_to_a"``.
    """

    def __init__(
        self,
        directory: Path,
        *,
        names: tuple[str, str] = ("bms", "gateway"),
        baudrate: int | None = None,
    ) -> None:
        if names[0] == names[1] or any(not n or "/" in n for n in names):
            raise ValueError(f"names must be two distinct file names, got {names!r}")
        if baudrate is not None and baudrate <= 0:
            raise ValueError(f"baudrate must be positive, got {baudrate}")
        self.directory = Path(directory)
        self.a_path = self.directory / names[0]
        self.b_path = self.directory / names[1]
        self.baudrate = baudrate
        self._rate = None if baudrate is None else baudrate / BITS_PER_BYTE  # bytes/s
        self._lock = threading.Lock()  # guards lanes and pty state; held only briefly
        # Serialises start/stop/vanish/reappear so two callers cannot, say, create two pty pairs at once.
        self._life = threading.RLock()
        self._lanes = {A_TO_B: _Lane(), B_TO_A: _Lane()}
        self._ptys: tuple[_Pty, _Pty] | None = None
        self._wake_r = -1
        self._wake_w = -1
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._vanish_requested = False
        self._vanish_done = threading.Event()

    # -- lifecycle ----------------------------------------------------------------------------------------

    def start(self) -> None:
        """Create both ptys and symlinks and start the relay thread."""
        with self._life:
            if self._thread is not None:
                raise RuntimeError("NullModem already started")
            self.directory.mkdir(parents=True, exist_ok=True)
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            try:
                self._create_ptys()
            except BaseException:
                self._close_all()
                raise
            self._stopping = False
            self._thread = threading.Thread(target=self._run, name=f"nullmodem:{self.a_path.name}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the relay, close every fd the tool opened and remove the symlinks. Safe to call twice."""
        with self._life:
            thread = self._thread
            if thread is not None:
                with self._lock:
                    self._stopping = True
                self._wake()
                thread.join()
                self._thread = None
            self._close_all()

    def __enter__(self) -> NullModem:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._thread is not None

    @property
    def present(self) -> bool:
        """True while the ptys exist, i.e. started and not vanished."""
        with self._lock:
            return self._ptys is not None

    # -- faults -------------------------------------------------------------------------------------------

    def inject(self, direction: str, data: bytes) -> None:
        """Put extra bytes (noise) on the wire in ``direction`` now; they skip drop_next and the transform
        but are paced like any other bytes."""
        lane = self._lane(direction)
        with self._lock:
            if self._ptys is not None:
                self._enqueue(lane, bytes(data), time.monotonic())
        self._wake()

    def drop_next(self, direction: str, count: int) -> None:
        """Silently discard the next ``count`` bytes travelling in ``direction``; adds to a pending drop."""
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        lane = self._lane(direction)
        with self._lock:
            lane.drop += count

    def set_transform(self, direction: str, fn: Callable[[bytes], bytes] | None) -> None:
        """Rewrite each chunk read in ``direction`` with ``fn`` (after drop_next); ``None`` clears it.

        Chunk boundaries follow the reads the relay happens to make, so ``fn`` should not rely on them.
        """
        lane = self._lane(direction)
        with self._lock:
            lane.transform = fn

    def vanish(self) -> None:
        """Unplug the adapter: close both ptys (programs holding them get I/O errors), remove the symlinks
        and discard bytes in flight. Harmless if already vanished."""
        with self._life:
            thread = self._thread
            if thread is None:
                raise RuntimeError("NullModem not started")
            # The relay closes the fds itself: closing them under its poll() could let a reused fd number
            # be read by mistake.
            with self._lock:
                if self._ptys is None:
                    return
                self._vanish_done.clear()
                self._vanish_requested = True
            self._wake()
            while not self._vanish_done.wait(_POLL_MAX_S):
                if not thread.is_alive():
                    with self._lock:
                        self._drop_ptys_locked()
                    break

    def reappear(self) -> None:
        """Plug the adapter back in: new ptys, symlinks re-pointed at the same paths."""
        with self._life:
            if self._thread is None:
                raise RuntimeError("NullModem not started")
            with self._lock:
                if self._ptys is not None:
                    raise RuntimeError("NullModem is present; vanish() first")
            self._create_ptys()
            self._wake()

    @property
    def bytes_relayed(self) -> dict[str, int]:
        """Bytes delivered to the destination per direction (injected included, dropped excluded)."""
        with self._lock:
            return {d: lane.relayed for d, lane in self._lanes.items()}

    # -- internals ----------------------------------------------------------------------------------------

    def _lane(self, direction: str) -> _Lane:
        try:
            return self._lanes[direction]
        except KeyError:
            raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}") from None

    def _wake(self) -> None:
        if self._wake_w < 0:
            return
        # A full pipe already guarantees a wake-up; a closed one means the relay is gone.
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_w, b"\0")

    def _create_ptys(self) -> None:
        a = _open_pty()
        try:
            b = _open_pty()
        except BaseException:
            a.close()
            raise
        try:
            _point_symlink(self.a_path, a.device)
            _point_symlink(self.b_path, b.device)
        except BaseException:
            a.close()
            b.close()
            raise
        with self._lock:
            for lane in self._lanes.values():
                lane.clear_in_flight()
            self._ptys = (a, b)

    def _drop_ptys_locked(self) -> None:
        """Close the ptys and remove the symlinks; caller holds the lock and is the only fd user."""
        if self._ptys is not None:
            for pty in self._ptys:
                pty.close()
            self._ptys = None
        for path in (self.a_path, self.b_path):
            with contextlib.suppress(OSError):
                if path.is_symlink():
                    path.unlink()
        for lane in self._lanes.values():
            lane.clear_in_flight()
        self._vanish_requested = False
        self._vanish_done.set()

    def _close_all(self) -> None:
        with self._lock:
            self._drop_ptys_locked()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._wake_r = self._wake_w = -1

    def _enqueue(self, lane: _Lane, data: bytes, now: float) -> None:
        """Put ``data`` on the wire of ``lane``; caller holds the lock."""
        if not data:
            return
        if self._rate is None:
            lane.out += data
        else:
            if not lane.wire:
                # Idle wire: transmission starts now. Otherwise it queues behind the bytes in flight.
                lane.wire_t0 = now
            lane.wire += data
        self._trim_backlog(lane)

    def _advance_wire(self, lane: _Lane, now: float) -> float | None:
        """Move bytes whose transmission has ended to ``out``; return s until the next one is due, if any.
        Caller holds the lock."""
        if self._rate is None or not lane.wire:
            return None
        # Byte i (0-based) ends at wire_t0 + (i + 1) / rate; the epsilon absorbs float rounding at the edge.
        due = min(len(lane.wire), int((now - lane.wire_t0) * self._rate + 1e-9))
        if due > 0:
            lane.out += lane.wire[:due]
            del lane.wire[:due]
            lane.wire_t0 += due / self._rate
            self._trim_backlog(lane)
        if not lane.wire:
            return None
        return max(0.0, lane.wire_t0 + 1.0 / self._rate - now)

    @staticmethod
    def _trim_backlog(lane: _Lane) -> None:
        excess = len(lane.out) - _BACKLOG_LIMIT
        if excess > 0:
            log.debug("null-modem overrun: discarding %d bytes nobody read", excess)
            del lane.out[:excess]

    def _run(self) -> None:
        poller = select.poll()
        registered: set[int] = set()
        while True:
            try:
                if not self._step(poller, registered):
                    return
            except OSError as exc:
                # Anything the pumps did not already absorb; keep relaying rather than leave programs hanging.
                log.debug("null-modem relay: %s", exc)
                self._mark_broken()
                time.sleep(_POLL_MAX_S)

    def _step(self, poller: select.poll, registered: set[int]) -> bool:
        """One relay round: poll, read, pace, write. Returns False once stop() was requested."""
        with self._lock:
            if self._stopping:
                return False
            if self._vanish_requested:
                self._drop_ptys_locked()
            ptys = self._ptys
            now = time.monotonic()
            waits = [self._advance_wire(lane, now) for lane in self._lanes.values()]
            pending_out = {d: bool(lane.out) for d, lane in self._lanes.items()}
            broken = {d: lane.broken for d, lane in self._lanes.items()}

        # (source, destination) masters per direction for this iteration; fds only change in this thread.
        routes: dict[str, tuple[int, int]] = {}
        if ptys is not None:
            routes = {A_TO_B: (ptys[0].master, ptys[1].master), B_TO_A: (ptys[1].master, ptys[0].master)}
        wanted: dict[int, int] = {self._wake_r: select.POLLIN}
        for d, (src, dst) in routes.items():
            if broken[d]:
                continue
            wanted[src] = wanted.get(src, 0) | select.POLLIN
            if pending_out[d]:
                wanted[dst] = wanted.get(dst, 0) | select.POLLOUT
        for fd in registered - wanted.keys():
            poller.unregister(fd)
        for fd, mask in wanted.items():
            poller.register(fd, mask)  # re-registering an fd modifies its mask
        registered.clear()
        registered.update(wanted)

        timeout_s = min([_POLL_MAX_S, *(w for w in waits if w is not None)])
        try:
            events = dict(poller.poll(math.ceil(timeout_s * 1000)))
        except InterruptedError:
            return True

        if events.get(self._wake_r, 0):
            with contextlib.suppress(BlockingIOError, OSError):
                while os.read(self._wake_r, 512):
                    pass
        for d, (src, _dst) in routes.items():
            if not broken[d] and events.get(src, 0):
                self._pump_in(d, src)
        # Deliver what became due during the wait now rather than after another poll round. Writing is
        # non-blocking, so trying without a POLLOUT report costs nothing.
        with self._lock:
            now = time.monotonic()
            for lane in self._lanes.values():
                self._advance_wire(lane, now)
        for d, (_src, dst) in routes.items():
            if not broken[d]:
                self._pump_out(d, dst)
        return True

    def _mark_broken(self) -> None:
        with self._lock:
            self._mark_broken_locked()

    def _mark_broken_locked(self) -> None:
        # A failing master affects both directions through it; idling the whole cable also stops poll()
        # from spinning on an fd that keeps reporting an error.
        for lane in self._lanes.values():
            lane.broken = True

    def _pump_in(self, direction: str, src: int) -> None:
        """Read one chunk from a source master and put it on the wire."""
        lane = self._lanes[direction]
        try:
            data = os.read(src, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            log.debug("null-modem %s: read failed (%s); idle until reappear", direction, exc)
            self._mark_broken()
            return
        if not data:
            return
        with self._lock:
            skip = min(lane.drop, len(data))
            lane.drop -= skip
            data = data[skip:]
            fn = lane.transform
        if data and fn is not None:
            # Outside the lock, so the transform may itself call the fault methods.
            try:
                data = bytes(fn(data))
            except Exception:
                log.exception("null-modem %s: transform failed; chunk forwarded unchanged", direction)
        with self._lock:
            self._enqueue(lane, data, time.monotonic())

    def _pump_out(self, direction: str, dst: int) -> None:
        """Write as much of the due bytes as the destination master accepts without blocking."""
        lane = self._lanes[direction]
        # Under the lock (the write never blocks) so a concurrent backlog trim cannot shift ``out`` under us.
        with self._lock:
            while lane.out:
                try:
                    n = os.write(dst, lane.out[:_READ_SIZE])
                except BlockingIOError:
                    return  # destination full; poll() says when it drains
                except OSError as exc:
                    log.debug("null-modem %s: write failed (%s); idle until reappear", direction, exc)
                    self._mark_broken_locked()
                    return
                del lane.out[:n]
                lane.relayed += n
