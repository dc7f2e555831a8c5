"""A small typed, blocking client for the daemon's socket (usable from any script)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, overload

import msgspec

from impetusd.protocol.messages import Message, RequestId
from impetusd.protocol.peer import Incoming, Peer

T = TypeVar("T")


class DaemonUnavailable(ConnectionError):
    """Nothing answers on the socket."""


class Client:
    """One connection. ``call`` for plain methods; ``stream`` to receive notifications."""

    def __init__(self, path: str | Path, timeout: float | None = None, *, ids: Callable[[], int] | None = None) -> None:
        self.path = str(path)
        self.peer = Peer(_ignore, on_notification=self._on_notification, ids=ids)
        self._on_note: Callable[[str, msgspec.Raw], None] | None = None
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            self._sock.close()
            raise DaemonUnavailable(f"no daemon answers on {self.path}") from exc
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
        try:
            while not pending.done:
                line = self._file.readline()
                if not line:
                    raise DaemonUnavailable("the daemon closed the connection")
                self.peer.receive(line)
        finally:
            self._on_note = None
        self.peer.forget(pending)
        return pending.outcome()

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
