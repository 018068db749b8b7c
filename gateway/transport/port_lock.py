"""One program per serial port: the UUCP lock file ``/run/lock/LCK..<name>``, and who holds a port.

The port itself is locked with pyserial's ``exclusive=True`` (``flock``): that is what keeps a second program
off the wire. The lock file beside it only tells the second program *who* holds the port, so that its message
can name the holder ("port /dev/ttyUSB0 is in use by pid 1234 (bms-gateway run)"). It follows the FHS/UUCP
convention that minicom, picocom and ModemManager also honour: the holder's pid as ten right-aligned ASCII
digits and a newline. A lock file of a process that no longer exists is stale and taken over. Where the lock
directory is missing or not writable (a normal user on most distributions), no file is written and the flock
alone guards the port; a holder without a lock file is then looked up in ``/proc/locks`` by the device's inode.

The lock directory is :data:`DEFAULT_LOCK_DIR` unless the environment names another
(``BMS_GATEWAY_LOCK_DIR``, for tests and unusual systems) or a caller passes one.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from gateway.errors import LinkError

DEFAULT_LOCK_DIR: Final = Path("/run/lock")
LOCK_DIR_ENV: Final = "BMS_GATEWAY_LOCK_DIR"
"""Environment variable naming another lock directory (the test suite points it at a temporary one)."""
SERVICE_HINT: Final = "stop it first (sudo systemctl stop bms-gateway) or, while it runs, use bms-gateway status"
_PROC_LOCKS: Final = Path("/proc/locks")
_SUBCOMMAND: Final = re.compile(r"[a-z][a-z0-9-]*")

_held_lock = threading.Lock()
_held: set[Path] = set()
"""Lock files this process holds: a second opener in the same process is refused like any other."""


def lock_directory(lock_dir: Path | None = None) -> Path:
    """The lock directory in force: ``lock_dir``, else ``$BMS_GATEWAY_LOCK_DIR``, else :data:`DEFAULT_LOCK_DIR`."""
    if lock_dir is not None:
        return lock_dir
    named = os.environ.get(LOCK_DIR_ENV)
    return Path(named) if named else DEFAULT_LOCK_DIR


def lock_name(port: str) -> str | None:
    """The lock file's name for ``port``: ``LCK..ttyUSB0``; a device below /dev/ keeps its subdirectory with ``_``
    (``LCK..pts_3``). Symlinks (``/dev/serial/by-id/…``) are resolved, so that every name of one device shares one
    lock. None for a pyserial URL (``socket://``, ``loop://``): nothing local to lock."""
    if "://" in port:
        return None
    device = os.path.realpath(port)
    relative = device.removeprefix("/dev/") if device.startswith("/dev/") else os.path.basename(device)
    return "LCK.." + relative.replace("/", "_") if relative else None


@dataclass(frozen=True, slots=True)
class Holder:
    """The process that holds a port."""

    pid: int
    command: str | None = None
    """A short name of its command line, e.g. ``bms-gateway run``; None when it cannot be read."""

    @property
    def is_gateway(self) -> bool:
        return self.command is not None and self.command.startswith("bms-gateway")

    def describe(self) -> str:
        return f"pid {self.pid}" + ("" if self.command is None else f" ({self.command})")


class PortInUse(LinkError):
    """Another program (or another user of the port in this process) holds the port.

    :param holder: who, when the lock file or ``/proc/locks`` says so.
    :param hint: instead of the default one (stop the service, or stop that program).
    """

    def __init__(self, port: str, holder: Holder | None, *, hint: str | None = None) -> None:
        self.port = port
        self.holder = holder
        who = "another program" if holder is None else holder.describe()
        if hint is not None:
            pass
        elif holder is None:
            hint = f"is the bms-gateway service running? {SERVICE_HINT}"
        elif holder.is_gateway:
            hint = SERVICE_HINT
        else:
            hint = "stop that program first: only one program at a time may use a serial port"
        super().__init__(f"port {port} is in use by {who}", hint=hint)


def command_of(pid: int) -> str | None:
    """A short name for the command line of ``pid``: the program and its subcommand (``bms-gateway run``,
    ``minicom``); None when ``/proc`` does not say."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    argv = [arg for arg in argv if arg]
    if argv and os.path.basename(argv[0]).startswith("python"):
        argv = _after_interpreter(argv)
    if not argv:
        return None
    program = os.path.basename(argv[0])
    subcommand = argv[1] if len(argv) > 1 and _SUBCOMMAND.fullmatch(argv[1]) else None
    return program if subcommand is None else f"{program} {subcommand}"


def _after_interpreter(argv: list[str]) -> list[str]:
    """``python [options] -m module args`` as ``module args`` (``gateway`` is ``bms-gateway``), ``python script
    args`` as ``script args``, ``python -c ...`` as ``python``."""
    interpreter, rest = os.path.basename(argv[0]), argv[1:]
    while rest and rest[0].startswith("-"):
        if rest[0] == "-m" and len(rest) > 1:
            module = rest[1]
            return ["bms-gateway" if module == "gateway" else module, *rest[2:]]
        if rest[0] == "-c":
            return [interpreter]
        rest = rest[1:]
    return rest or [interpreter]


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _pid_in(path: Path) -> int | None:
    """The pid a lock file names (ASCII, as the convention has it; a binary pid of old UUCP is not read)."""
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def flock_holder(port: str) -> Holder | None:
    """The process holding an flock on ``port``'s device, from ``/proc/locks`` (readable by anyone); None if none."""
    try:
        status = os.stat(port)
        table = _PROC_LOCKS.read_text()
    except OSError:
        return None
    inode = f"{os.major(status.st_dev):02x}:{os.minor(status.st_dev):02x}:{status.st_ino}"
    for line in table.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == inode and fields[4].isdigit():
            pid = int(fields[4])
            return Holder(pid, command_of(pid))
    return None


def find_holder(port: str, lock_dir: Path | None = None) -> Holder | None:
    """Who holds ``port``: the live pid of its lock file, else the flock's owner; None when neither says."""
    name = lock_name(port)
    if name is not None:
        pid = _pid_in(lock_directory(lock_dir) / name)
        if pid is not None and _alive(pid):
            return Holder(pid, command_of(pid))
    return flock_holder(port)


class PortLock:
    """The lock file of one port; see the module docs. Not reentrant: one :meth:`acquire` per :meth:`release`.

    :param lock_dir: where lock files live (default: :func:`lock_directory`).
    """

    def __init__(self, port: str, lock_dir: Path | None = None) -> None:
        self.port = port
        name = lock_name(port)
        self.path: Path | None = None if name is None else lock_directory(lock_dir) / name
        self.held = False
        """This object wrote the lock file and has not removed it yet."""

    def acquire(self) -> None:
        """Write the lock file, taking over a stale one; without a writable lock directory, do nothing.

        :raises PortInUse: a live process (this one included) holds the lock file.
        """
        path = self.path
        if path is None or self.held:
            return
        own_pid = os.getpid()
        # Written whole to a file of our own, then linked into place: nobody ever reads a half-written pid.
        scratch = path.with_name(f"{path.name}.{own_pid}.{threading.get_ident()}")
        try:
            scratch.write_text(f"{own_pid:10d}\n", encoding="ascii")
        except OSError:
            return  # no lock directory we may write: the flock alone guards the port
        try:
            for _ in range(3):
                with _held_lock:
                    try:
                        os.link(scratch, path)
                    except FileExistsError:
                        pass
                    except OSError:
                        return
                    else:
                        _held.add(path)
                        self.held = True
                        return
                    pid = _pid_in(path)
                    if pid is not None and _alive(pid) and (pid != own_pid or path in _held):
                        raise PortInUse(self.port, Holder(pid, command_of(pid)))
                    # Stale: its process is gone, or it is garbage. Two programs taking over at once may both
                    # believe they hold it; the flock still lets only one of them open the port.
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
        finally:
            with contextlib.suppress(OSError):
                scratch.unlink()

    def release(self) -> None:
        """Remove the lock file if this object holds it (and it still names this process)."""
        path = self.path
        if path is None or not self.held:
            return
        self.held = False
        with _held_lock:
            _held.discard(path)
            if _pid_in(path) == os.getpid():
                with contextlib.suppress(OSError):
                    path.unlink()
