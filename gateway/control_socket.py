"""One owner of BMS writes: the running service takes ``bms-gateway control`` requests over a Unix socket.

While the service runs it holds the BMS port, and its :class:`~gateway.control.Controller` is the only writer:
the CLI sends its request here (:func:`ask_service`) and prints the service's answer. Without a running
service (no socket, or a stale one left by a crash: connection refused) the CLI takes the port itself, with
the same write budget record (:mod:`gateway.control_budget`).

Where: ``control.sock`` in the runtime directory (:func:`runtime_directory`): ``$RUNTIME_DIRECTORY``
(systemd's ``RuntimeDirectory=``, ``/run/bms-gateway``), else ``$XDG_RUNTIME_DIR/bms-gateway``, else the state
directory. Who may control: file permissions. The socket is made mode 0660 with the service's group, in a
directory only that group may enter; the peer's uid is logged with each request.

Protocol: one request line, one answer line, both a JSON object in UTF-8 ending in ``\\n``.

* request: ``{"switch": "charge", "on": false}`` (at most :data:`MAX_REQUEST_BYTES`, whole line within
  :data:`REQUEST_TIMEOUT_S`, else refused or dropped);
* answer: ``{"ok": true, "message": ...}`` (:meth:`~gateway.control.ControlResult.describe`), or
  ``{"ok": false, "error": "refused" | "not verified" | "failed" | "bad request", "reason": ..., "message": ...}``.

A request runs on the poller thread (:meth:`ControlSocketServer.run_pending`, the poller's ``between_polls``
hook), like an MQTT command: the BMS link is the poller's, and a write must not interleave with a poll. A bad
client gets an answer or is dropped, with one log line; never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import stat
import struct
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from gateway.bms.control import Switch
from gateway.control import CommandOutcome, Controller
from gateway.errors import ControlError, ControlNotVerified, ControlRefused, GatewayError
from gateway.state_store import state_directory

log = logging.getLogger(__name__)

SOCKET_NAME: Final = "control.sock"
SYSTEM_RUNTIME_DIRECTORY: Final = Path("/run/bms-gateway")
"""The unit's ``RuntimeDirectory=bms-gateway``: where a CLI outside the service looks too."""
MAX_REQUEST_BYTES: Final = 256
"""A request line longer than this is refused unread."""
MAX_ANSWER_BYTES: Final = 16 * 1024
REQUEST_TIMEOUT_S: Final = 2.0
"""A client has this long to send its whole request line, s (real time: it bounds a wait on a socket)."""
PICKUP_TIMEOUT_S: Final = 30.0
"""A request the poller has not started within this is withdrawn and answered as busy, s."""
ANSWER_TIMEOUT_S: Final = 90.0
"""The CLI waits this long for the answer, s: the pick-up plus a write with its read-backs and retries."""
_SOCKET_MODE: Final = 0o660
_DIRECTORY_MODE: Final = 0o750


def runtime_directory(state_dir: str | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """Where the service puts its socket: ``$RUNTIME_DIRECTORY`` (systemd; the first of several), else
    ``$XDG_RUNTIME_DIR/bms-gateway``, else the state directory."""
    env = os.environ if environ is None else environ
    systemd = env.get("RUNTIME_DIRECTORY", "")
    if systemd:
        return Path(systemd.split(":")[0])
    user = env.get("XDG_RUNTIME_DIR", "")
    if user:
        return Path(user) / "bms-gateway"
    return state_directory(state_dir, env)


def socket_candidates(
    state_dir: str | None = None,
    environ: Mapping[str, str] | None = None,
    system_directory: Path | None = SYSTEM_RUNTIME_DIRECTORY,
) -> list[Path]:
    """Where the CLI looks for a running service, in order: where it would put the socket itself, then the
    unit's runtime directory (a CLI in a login shell has no ``$RUNTIME_DIRECTORY``), then the state directory."""
    env = os.environ if environ is None else environ
    directories = [runtime_directory(state_dir, env)]
    if system_directory is not None:
        directories.append(system_directory)
    directories.append(state_directory(state_dir, env))
    paths: list[Path] = []
    for directory in directories:
        path = directory / SOCKET_NAME
        if path not in paths:
            paths.append(path)
    return paths


# --- the client (the CLI) -----------------------------------------------------------------------------------


def ask_service(switch: Switch, on: bool, candidates: list[Path], timeout_s: float = ANSWER_TIMEOUT_S) -> str | None:
    """Have the running service set ``switch``: its answer line (the result's description), or None when no
    service listens (no socket, or a stale one) and the caller may take the port itself.

    :raises ControlRefused: / :raises ControlNotVerified: / :raises ControlError: the service refused or failed,
        or it runs but cannot be asked (permissions, no answer); then the caller must not take the port.
    """
    for path in candidates:
        try:
            mode = path.stat().st_mode
        except FileNotFoundError:
            continue
        except PermissionError:
            raise _not_permitted(path) from None
        except OSError:
            continue
        if not stat.S_ISSOCK(mode):
            continue
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout_s)
            try:
                conn.connect(str(path))
            except (ConnectionRefusedError, FileNotFoundError):
                log.debug("control: %s is stale (nobody listens)", path)
                continue
            except PermissionError:
                raise _not_permitted(path) from None
            except OSError as error:
                raise ControlError(
                    f"cannot reach the service's control socket {path}: {error.strerror or error}"
                ) from None
            return _exchange(conn, path, switch, on, timeout_s)
    return None


def _not_permitted(path: Path) -> ControlRefused:
    return ControlRefused(
        "not permitted",
        f"refused: the running service's control socket {path} is not open to this user; hint: add the user to "
        "the service's group (sudo usermod -a -G bms-gateway USER, then log in again), or use sudo",
    )


def _exchange(conn: socket.socket, path: Path, switch: Switch, on: bool, timeout_s: float) -> str:
    request = json.dumps({"switch": switch.value, "on": on}).encode() + b"\n"
    try:
        conn.sendall(request)
        answer = _read_line(conn, MAX_ANSWER_BYTES, time.monotonic() + timeout_s)
    except TimeoutError:
        raise ControlError(
            f"no answer from the service on {path} within {timeout_s:g} s; the write may still happen: check with "
            "bms-gateway status"
        ) from None
    except (OSError, ValueError) as error:
        raise ControlError(f"the service on {path} closed the connection without an answer ({error})") from None
    try:
        document = json.loads(answer)
        ok, message = bool(document["ok"]), str(document["message"])
    except (ValueError, KeyError, TypeError):
        raise ControlError(f"the service on {path} gave an answer this CLI does not understand") from None
    if ok:
        return message
    kind = document.get("error")
    if kind == "refused":
        raise ControlRefused(str(document.get("reason", "refused")), message)
    if kind == "not verified":
        raise ControlNotVerified(message)
    raise ControlError(message)


def _read_line(conn: socket.socket, limit: int, deadline: float) -> bytes:
    """One line (without its ``\\n``) within ``deadline`` (monotonic, real).

    :raises TimeoutError: the deadline passed. :raises ValueError: longer than ``limit``, or the peer closed first.
    """
    buffer = bytearray()
    while True:
        end = buffer.find(b"\n")
        if end >= 0:
            return bytes(buffer[:end])
        if len(buffer) > limit:
            raise ValueError(f"longer than {limit} bytes")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        conn.settimeout(remaining)
        chunk = conn.recv(limit + 1 - len(buffer))
        if not chunk:
            raise ValueError("closed before the end of the line")
        buffer += chunk


# --- the server (the service) -------------------------------------------------------------------------------


@dataclass
class _Request:
    switch: Switch
    on: bool
    done: threading.Event = field(default_factory=threading.Event)
    started: bool = False
    outcome: CommandOutcome | None = None
    error: GatewayError | None = None


def _answer(request: _Request) -> dict[str, Any]:
    outcome, error = request.outcome, request.error
    assert outcome is not None
    if outcome.ok:
        return {"ok": True, "message": outcome.message}
    if isinstance(error, ControlRefused):
        return {"ok": False, "error": "refused", "reason": error.reason, "message": outcome.message}
    if isinstance(error, ControlNotVerified):
        return {"ok": False, "error": "not verified", "message": outcome.message}
    return {"ok": False, "error": "failed", "message": outcome.message}


def _peer_uid(conn: socket.socket) -> int | None:
    """The connecting process's uid (Linux ``SO_PEERCRED``), for the log line; None where it is not known."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return None
    try:
        _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i")))
    except OSError:
        return None
    return int(uid)


class ControlSocketServer:
    """The service's end: accepts requests on ``path`` (one connection at a time, on its own thread) and hands
    them to the poller thread (:meth:`run_pending`).

    :param controller: the service's one controller.
    :param path: the socket file; its directory is made (0750) if missing.
    """

    def __init__(
        self,
        controller: Controller,
        path: Path,
        *,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
        pickup_timeout_s: float = PICKUP_TIMEOUT_S,
    ) -> None:
        self._controller = controller
        self.path = path
        self._request_timeout_s = request_timeout_s
        self._pickup_timeout_s = pickup_timeout_s
        self._lock = threading.Lock()
        self._pending: deque[_Request] = deque()
        self.request_waiting = threading.Event()
        """Set when a request waits for the poller (so a test acting as the poller need not poll)."""
        self._listener: socket.socket | None = None
        self._inode: int | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self.requests_served = 0
        self.bad_requests = 0

    def start(self) -> None:
        """Bind and listen. A stale socket file (a crashed service's) is replaced.

        :raises GatewayError: the path is taken (another service answers there, or it is not a socket) or
            cannot be bound.
        """
        self._clear_stale()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.path.parent.mkdir(mode=_DIRECTORY_MODE, parents=True, exist_ok=True)
            listener.bind(str(self.path))
            os.chmod(self.path, _SOCKET_MODE)  # the group may control, others may not (the umask may be 077)
            listener.listen(8)
        except OSError as error:
            listener.close()
            raise GatewayError(f"control socket: cannot listen on {self.path}: {error.strerror or error}") from None
        self._inode = os.stat(self.path).st_ino
        self._listener = listener
        self._thread = threading.Thread(target=self._serve, name="control-socket", daemon=True)
        self._thread.start()
        log.info("control: bms-gateway control requests are taken on %s", self.path)

    def stop(self) -> None:
        """Stop listening, remove the socket file (if still ours), and answer what still waits. Idempotent."""
        self._stopping.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        if self._thread is not None:
            self._thread.join(timeout=self._request_timeout_s + 1)
            self._thread = None
        with contextlib.suppress(OSError):
            if self._inode is not None and os.stat(self.path).st_ino == self._inode:
                self.path.unlink()
        self._inode = None
        self._withdraw_all()

    # --- the poller thread -------------------------------------------------------------------------------

    def run_pending(self) -> None:
        """Run the waiting requests, one after the other (the poller's ``between_polls`` hook). Never raises."""
        while True:
            with self._lock:
                if not self._pending:
                    self.request_waiting.clear()
                    return
                request = self._pending.popleft()
                request.started = True
            try:
                result = self._controller.set_switch(request.switch, request.on, source="cli")
            except GatewayError as error:
                state = "on" if request.on else "off"
                log.warning("control: cli asked for %s switch %s: %s", request.switch, state, error)
                request.outcome, request.error = CommandOutcome(False, str(error)), error
            else:
                request.outcome = CommandOutcome(True, result.describe(), result)
            request.done.set()

    # --- the socket's thread -----------------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stopping.is_set():
            listener = self._listener
            if listener is None:
                return
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed by stop()
            with conn:
                try:
                    self._handle(conn)
                except OSError as error:  # the client left mid-answer
                    log.debug("control socket: client gone: %s", error)
                except Exception as error:  # never let one client end the socket's thread; one line, no traceback
                    log.error("control socket: request failed: %s: %s", type(error).__name__, error)

    def _handle(self, conn: socket.socket) -> None:
        uid = _peer_uid(conn)
        who = "a client" if uid is None else f"uid {uid}"
        try:
            line = _read_line(conn, MAX_REQUEST_BYTES, time.monotonic() + self._request_timeout_s)
        except TimeoutError:
            self._bad(conn, who, f"no whole request line within {self._request_timeout_s:g} s")
            return
        except ValueError as error:
            self._bad(conn, who, str(error))
            return
        try:
            request = self._parse(line)
        except ValueError as error:
            self._bad(conn, who, str(error))
            return
        log.info("control socket: %s asks for %s switch %s", who, request.switch, "on" if request.on else "off")
        with self._lock:
            self._pending.append(request)
            self.request_waiting.set()
        if not request.done.wait(self._pickup_timeout_s):
            with self._lock:
                withdrawn = not request.started
                if withdrawn:
                    self._pending.remove(request)
            if withdrawn:
                message = (
                    f"refused: the service did not get to the request within {self._pickup_timeout_s:g} s "
                    "(the BMS link is busy); nothing was written"
                )
                self._send(conn, {"ok": False, "error": "refused", "reason": "busy", "message": message})
                return
            request.done.wait()  # started: a write with its read-backs ends by itself; answer what it did
        self.requests_served += 1
        self._send(conn, _answer(request))

    @staticmethod
    def _parse(line: bytes) -> _Request:
        try:
            document = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise ValueError("not a JSON line") from None
        if not isinstance(document, dict) or set(document) != {"switch", "on"}:
            raise ValueError('expected {"switch": ..., "on": true|false}')
        on = document["on"]
        if not isinstance(on, bool):
            raise ValueError('"on" must be true or false')
        try:
            switch = Switch(document["switch"])
        except (ValueError, TypeError):
            raise ValueError(f"no switch {str(document['switch'])[:20]!r}") from None
        return _Request(switch, on)

    def _bad(self, conn: socket.socket, who: str, problem: str) -> None:
        self.bad_requests += 1
        log.warning("control socket: bad request from %s: %s", who, problem)
        with contextlib.suppress(OSError):
            self._send(conn, {"ok": False, "error": "bad request", "message": f"bad request: {problem}"})

    @staticmethod
    def _send(conn: socket.socket, document: Mapping[str, Any]) -> None:
        conn.settimeout(REQUEST_TIMEOUT_S)
        conn.sendall(json.dumps(document, ensure_ascii=False).encode() + b"\n")

    def _clear_stale(self) -> None:
        try:
            mode = self.path.lstat().st_mode
        except FileNotFoundError:
            return
        except OSError as error:
            raise GatewayError(f"control socket: cannot use {self.path}: {error.strerror or error}") from None
        if not stat.S_ISSOCK(mode):
            raise GatewayError(f"control socket: {self.path} exists and is not a socket; hint: remove it")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(1.0)
            try:
                probe.connect(str(self.path))
            except ConnectionRefusedError:
                log.info("control socket: replacing the stale %s (left by a service that stopped)", self.path)
                self.path.unlink(missing_ok=True)
                return
            except OSError as error:
                raise GatewayError(f"control socket: cannot use {self.path}: {error.strerror or error}") from None
        raise GatewayError(f"control socket: another bms-gateway already takes control requests on {self.path}")

    def _withdraw_all(self) -> None:
        with self._lock:
            pending, self._pending = list(self._pending), deque()
            self.request_waiting.clear()
        for request in pending:
            request.outcome = CommandOutcome(False, "refused: the service is stopping; nothing was written")
            request.done.set()


def serve_control(controller: Controller | None, state_dir: str | None) -> ControlSocketServer | None:
    """The service's control socket, started; None without a controller (control off) or when it cannot
    listen (logged: the inverter link comes first, and the CLI then refuses to share the port)."""
    if controller is None:
        return None
    server = ControlSocketServer(controller, runtime_directory(state_dir) / SOCKET_NAME)
    try:
        server.start()
    except GatewayError as error:
        log.error("%s; bms-gateway control cannot reach this service", error)
        return None
    return server
