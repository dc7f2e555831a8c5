"""An async client for the daemon's socket (anyio), one connection per exchange.

A connection per request keeps streams independent: closing one (a client gone)
is all it takes for the daemon to cancel that request and nothing else.
"""

from __future__ import annotations

from typing import Any, TypeVar

import anyio
import msgspec
from anyio.abc import SocketStream

from impetusd.protocol.api import Chunk
from impetusd.protocol.errors import ImpetusError
from impetusd.protocol.framing import LineReader

from .client import DaemonUnavailable, WireMessage

T = TypeVar("T")

MAX_LINE = 64 * 1024 * 1024
REQUEST_ID = 1


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(WireMessage)
_chunk = msgspec.json.Decoder(Chunk)


class Exchange:
    """One request on its own connection: text pieces, then the raw result."""

    def __init__(self, stream: SocketStream) -> None:
        self._stream = stream
        self._reader = LineReader(stream, MAX_LINE)

    async def next(self) -> str | msgspec.Raw:
        """The next streamed text piece, or the final result (raises the typed
        error the daemon answered with)."""
        while True:
            line = await self._reader.receive_line()
            if line is None:
                raise DaemonUnavailable("the daemon closed the connection before answering")
            msg = _decoder.decode(line)
            if msg.id is None and msg.method == "chat.chunk":
                return _chunk.decode(bytes(msg.params)).delta
            if msg.id != REQUEST_ID:
                continue
            if msg.error is not None:
                raise ImpetusError.from_wire(msg.error)
            return msg.result

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._stream.aclose()


class AsyncDaemon:
    def __init__(self, path: str) -> None:
        self.path = path

    async def open(self, method: str, params: Any = None) -> Exchange:
        try:
            stream = await anyio.connect_unix(self.path)
        except OSError as exc:
            raise DaemonUnavailable(f"no daemon answers on {self.path}") from exc
        msg: dict[str, Any] = {"jsonrpc": "2.0", "id": REQUEST_ID, "method": method}
        if params is not None:
            msg["params"] = params
        try:
            await stream.send(_encoder.encode(msg) + b"\n")
        except (OSError, anyio.BrokenResourceError) as exc:
            await stream.aclose()
            raise DaemonUnavailable(f"the daemon on {self.path} closed the connection") from exc
        return Exchange(stream)

    async def call(self, method: str, params: Any = None, type: type[T] = dict) -> T:  # type: ignore[assignment]  # noqa: A002
        exchange = await self.open(method, params)
        try:
            while True:
                item = await exchange.next()
                if isinstance(item, msgspec.Raw):
                    return msgspec.json.decode(bytes(item), type=type)
        finally:
            await exchange.aclose()
