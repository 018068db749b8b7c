"""What went wrong opening a serial port, in one line, with the fix a newcomer needs as its hint.

pyserial words the same few first-day mistakes in ways only a developer reads ("Could not configure port: (25,
'Inappropriate ioctl for device')", "Could not exclusively lock port …: Resource temporarily unavailable"):
:func:`open_error` turns each into a :class:`~gateway.errors.LinkError` naming the port and the cause, with a
``hint``: the dialout group, plugging the adapter in (and the ``/dev/serial/by-id/`` names present), a path
that is no serial device, or who holds the port (:class:`~gateway.transport.port_lock.PortInUse`).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Final

from gateway.errors import LinkError
from gateway.transport.port_lock import PortInUse, find_holder

BY_ID_DIR: Final = Path("/dev/serial/by-id")
_SHOWN_BY_ID: Final = 3
"""At most this many adapter names are listed in a hint."""
_LOCKED: Final = frozenset({errno.EAGAIN, errno.EWOULDBLOCK})
_MISSING: Final = frozenset({errno.ENOENT, errno.ENODEV, errno.ENXIO})
_NOT_A_TTY: Final = frozenset({errno.ENOTTY, errno.EISDIR, errno.ENOTDIR})
DIALOUT_HINT: Final = (
    "this user may not open serial ports: add it to the dialout group (sudo usermod -aG dialout $USER) and log "
    "in again; the service's user is in it after install.sh"
)
NOT_A_SERIAL_DEVICE_HINT: Final = (
    "the port must be the adapter's device (/dev/ttyUSB0, /dev/ttyACM0, /dev/serial/by-id/...), not a file or a "
    "directory"
)


def _errno(exc: BaseException) -> int | None:
    number = getattr(exc, "errno", None)
    if isinstance(number, int):
        return number
    # pyserial puts no errno on a failed configuration: "Could not configure port: (25, 'Inappropriate ...')"
    text = str(exc)
    if "Inappropriate ioctl" in text:
        return errno.ENOTTY
    return None


def _strerror(exc: BaseException) -> str:
    number = _errno(exc)
    if number is not None:
        return os.strerror(number)
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def missing_port_hint(by_id_dir: Path = BY_ID_DIR) -> str:
    """Plug the adapter in; the stable names of the adapters plugged in now, if any."""
    try:
        names = sorted(entry.name for entry in by_id_dir.iterdir())
    except OSError:
        names = []
    if not names:
        return (
            "plug the USB adapter in and check the port's name; prefer its stable name under /dev/serial/by-id/ "
            "(none there now: no USB serial adapter is plugged in)"
        )
    shown = ", ".join(str(by_id_dir / name) for name in names[:_SHOWN_BY_ID])
    more = f" and {len(names) - _SHOWN_BY_ID} more" if len(names) > _SHOWN_BY_ID else ""
    return f"plug the USB adapter in and check the port's name; adapters plugged in now: {shown}{more}"


def open_error(port: str, exc: BaseException, *, lock_dir: Path | None = None) -> LinkError:
    """``exc`` (from opening ``port``) as a one-line LinkError with a hint where the user can act."""
    number = _errno(exc)
    if number in _LOCKED:
        return PortInUse(port, find_holder(port, lock_dir))
    if number in _NOT_A_TTY:
        kind = "a directory" if os.path.isdir(port) else "a plain file" if os.path.isfile(port) else None
        cause = f"it is {kind}, not a serial device" if kind else f"not a serial device ({_strerror(exc)})"
        return LinkError(
            f"cannot open serial port {port}: {cause}",
            hint=NOT_A_SERIAL_DEVICE_HINT,
        )
    message = f"cannot open serial port {port}: {_strerror(exc)}"
    if number in (errno.EACCES, errno.EPERM):
        return LinkError(message, hint=DIALOUT_HINT)
    if number in _MISSING:
        return LinkError(message, hint=missing_port_hint())
    return LinkError(message)
