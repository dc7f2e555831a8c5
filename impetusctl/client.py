"""A small typed, blocking client for the daemon's socket (usable from any script)."""

from __future__ import annotations

import os
import select
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, overload

import msgspec

from impetusd.protocol.errors import ImpetusError
from impetusd.protocol.messages import Message, RequestId
from impetusd.protocol.peer import Incoming, Peer

T = TypeVar("T")


class DaemonUnavailable(ConnectionError):
    """Nothing answers on the socket."""


FIRST_REPLY_S = 10.0  # connect + first byte of the answer; $IMPETUS_FIRST_REPLY_TIMEOUT overrides
HEALTH_PROBE = b'{"jsonrpc":"2.0","id":"probe","method":"daemon.health"}\n'


def first_reply_timeout(env: dict[str, str] | os._Environ[str] = os.environ) -> float:
    try:
        value = float(env.get("IMPETUS_FIRST_REPLY_TIMEOUT", FIRST_REPLY_S))
    except ValueError:
        return FIRST_REPLY_S
    return value if value > 0 else FIRST_REPLY_S


def no_answer(path: str, waited: float) -> DaemonUnavailable:
    """A socket that accepts but never answers: what launchd's (or systemd's) socket
    does while the daemon behind it cannot start."""
    return DaemonUnavailable(
        f"the socket {path} accepted the connection but impetusd has not answered in {waited:.0f} s: it is probably failing to start."
        " See its log ('impetusctl service logs', or ~/.impetus/logs/impetusd.log when autostarted) and run 'impetusctl doctor'"
    )


def refusal(last_line: bytes | None) -> ImpetusError | None:
    """The error a daemon sent unasked (``id`` null) just before closing: a refusal
    (too many connections) or why it cannot start."""
    if not last_line:
        return None
    try:
        msg = msgspec.json.decode(last_line, type=Message)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None
    if msg.method is None and msg.id is None and msg.error is not None:
        return ImpetusError.from_wire(msg.error)
    return None


def probe(path: str, timeout: float) -> bool:
    """Whether a daemon answers ``daemon.health`` on a connection of its own within ``timeout``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(path)
        sock.sendall(HEALTH_PROBE)
        return bool(sock.recv(1))
    except OSError:
        return False
    finally:
        sock.close()


class Client:
    """One connection. ``call`` for plain methods; ``stream`` to receive notifications."""

    def __init__(self, path: str | Path, timeout: float | None = None, *, ids: Callable[[], int] | None = None, first_reply: float | None = None) -> None:
        self.path = str(path)
        self.first_reply = first_reply_timeout() if first_reply is None else first_reply
        self._heard = False
        self.peer = Peer(_ignore, on_notification=self._on_notification, ids=ids)
        self._on_note: Callable[[str, msgspec.Raw], None] | None = None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(self.first_reply if timeout is None else min(timeout, self.first_reply))
        try:
            self._sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            self._sock.close()
            raise DaemonUnavailable(f"no daemon answers on {self.path}") from exc
        except TimeoutError:
            self._sock.close()
            raise no_answer(self.path, self.first_reply) from None
        self._sock.settimeout(timeout)
        self._file = self._sock.makefile("rb")
        self.last_id: RequestId | None = None

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, method: str, params: Any = None, *, notify: bool = False) -> RequestId:
        """Send a request (returns its id) or, with ``notify``, a notification (None)."""
        if notify:
            self._sock.sendall(self.peer.notification(method, params))
            return None
        pending, data = self.peer.request(method, params)
        self.last_id = pending.id
        self._sock.sendall(data)
        return pending.id

    def cancel(self, rid: RequestId) -> None:
        self._sock.sendall(self.peer.cancellation(rid))

    def wait(self, rid: RequestId, on_notification: Callable[[str, msgspec.Raw], None] | None = None) -> msgspec.Raw:
        """Read until request ``rid`` is answered, handing notifications to ``on_notification``."""
        pending = self.peer.pending.get(rid)
        if pending is None:
            raise KeyError(f"no request {rid!r} is waiting for an answer")
        self._on_note = on_notification
        last = None
        try:
            while not pending.done:
                if not self._heard:
                    self._await_first_byte()
                try:
                    line = self._file.readline()
                except ConnectionResetError:
                    line = b""
                if not line:
                    raise refusal(last) or DaemonUnavailable("the daemon closed the connection")
                self.peer.receive(line)
                last = line
        finally:
            self._on_note = None
        self.peer.forget(pending)
        return pending.outcome()

    def _await_first_byte(self) -> None:
        """Bound the wait for the connection's first byte. A daemon may take long to
        answer (a model loading), so on silence ask on a second connection whether
        one is there at all; a socket nobody serves fails with what to look at."""
        readable, _, _ = select.select([self._sock], [], [], self.first_reply)
        if not readable and not probe(self.path, self.first_reply / 2):
            raise no_answer(self.path, self.first_reply * 1.5)
        self._heard = True

    def _on_notification(self, msg: Message) -> None:
        if self._on_note is not None and msg.method is not None:
            self._on_note(msg.method, msg.params)

    @overload
    def call(self, method: str, params: Any = None) -> dict[str, Any]: ...
    @overload
    def call(self, method: str, params: Any = None, *, type: type[T]) -> T: ...  # noqa: A002
    @overload
    def call(self, method: str, params: Any, type: type[T]) -> T: ...  # noqa: A002
    def call(self, method: str, params: Any = None, type: Any = dict) -> Any:  # noqa: A002
        """The method's result, decoded as ``type`` (a dict when not given)."""
        rid = self.send(method, params)
        return msgspec.json.decode(self.wait(rid), type=type)

    @overload
    def stream(self, method: str, params: Any, on_notification: Callable[[str, msgspec.Raw], None]) -> dict[str, Any]: ...
    @overload
    def stream(self, method: str, params: Any, on_notification: Callable[[str, msgspec.Raw], None], type: type[T]) -> T: ...  # noqa: A002
    def stream(self, method: str, params: Any, on_notification: Callable[[str, msgspec.Raw], None], type: Any = dict) -> Any:  # noqa: A002
        """Like ``call``, handing the request's notifications to ``on_notification``."""
        rid = self.send(method, params)
        return msgspec.json.decode(self.wait(rid, on_notification), type=type)


def _ignore(item: Incoming) -> None:
    """The daemon sends a client answers and notifications; anything else is dropped."""
