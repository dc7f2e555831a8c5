"""A small typed, blocking client for the daemon's socket (usable from any script)."""

from __future__ import annotations

import itertools
import socket
from pathlib import Path
from typing import Any, Callable, TypeVar

import msgspec

from impetusd.protocol.errors import ImpetusError

T = TypeVar("T")


class DaemonUnavailable(ConnectionError):
    """Nothing answers on the socket."""


class WireMessage(msgspec.Struct):
    """Any message from the daemon: a response, or a notification."""

    jsonrpc: str = "2.0"
    id: int | str | None = None
    method: str | None = None
    params: msgspec.Raw = msgspec.Raw(b"null")
    result: msgspec.Raw = msgspec.Raw(b"null")
    error: dict[str, Any] | None = None


class Client:
    """One connection. ``call`` for plain methods; ``stream`` to receive notifications."""

    def __init__(self, path: str | Path, timeout: float | None = None) -> None:
        self.path = str(path)
        self._ids = itertools.count(1)
        self._enc = msgspec.json.Encoder()
        self._dec = msgspec.json.Decoder(WireMessage)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.settimeout(timeout)
        try:
            self._sock.connect(self.path)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            self._sock.close()
            raise DaemonUnavailable(f"no daemon answers on {self.path}") from exc
        self._file = self._sock.makefile("rb")
        self.last_id: int | None = None

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, method: str, params: Any = None, *, notify: bool = False) -> int | None:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        rid = None
        if not notify:
            rid = msg["id"] = next(self._ids)
            self.last_id = rid
        self._sock.sendall(self._enc.encode(msg) + b"\n")
        return rid

    def cancel(self, rid: int) -> None:
        self.send("$/cancel", {"id": rid}, notify=True)

    def _read(self) -> WireMessage:
        line = self._file.readline()
        if not line:
            raise DaemonUnavailable("the daemon closed the connection")
        return self._dec.decode(line)

    def wait(self, rid: int, on_notification: Callable[[str, msgspec.Raw], None] | None = None) -> msgspec.Raw:
        while True:
            msg = self._read()
            if msg.method is not None and msg.id is None:
                if on_notification is not None:
                    on_notification(msg.method, msg.params)
                continue
            if msg.id != rid:
                continue
            if msg.error is not None:
                raise ImpetusError.from_wire(msg.error)
            return msg.result

    def call(self, method: str, params: Any = None, type: type[T] = dict) -> T:  # type: ignore[assignment]  # noqa: A002
        rid = self.send(method, params)
        assert rid is not None
        return msgspec.json.decode(bytes(self.wait(rid)), type=type)

    def stream(self, method: str, params: Any, on_notification: Callable[[str, msgspec.Raw], None], type: type[T] = dict) -> T:  # type: ignore[assignment]  # noqa: A002
        rid = self.send(method, params)
        assert rid is not None
        return msgspec.json.decode(bytes(self.wait(rid, on_notification)), type=type)
