"""An async client for the daemon's socket (anyio), one connection per exchange.

A connection per request keeps streams independent: closing one (a client gone)
is all it takes for the daemon to cancel that request and nothing else.
"""

from __future__ import annotations

from typing import Any, TypeVar, overload

import anyio
import msgspec
from anyio.abc import SocketStream

from impetusd.protocol.api import Chunk, PullProgress
from impetusd.protocol.framing import LineReader
from impetusd.protocol.peer import Peer, Pending

from .client import DaemonUnavailable, first_reply_timeout, no_answer, probe, refusal

T = TypeVar("T")

MAX_LINE = 64 * 1024 * 1024
REQUEST_ID = 1
CHAT_CHUNK = "chat.chunk"
PULL_PROGRESS = "models.progress"


class Exchange:
    """One request on its own connection: typed chunks, then the raw result."""

    def __init__(self, stream: SocketStream, path: str = "", first_reply: float | None = None) -> None:
        self._stream = stream
        self._path = path
        self._first_reply = first_reply  # None: no bound
        self._reader = LineReader(stream, MAX_LINE)
        self._peer = Peer(_ignore, on_notification=_ignore, routes={CHAT_CHUNK: Chunk, PULL_PROGRESS: PullProgress})
        self._pending: Pending | None = None
        self._delta: Chunk | None = None
        self._progress: PullProgress | None = None

    def request(self, method: str, params: Any) -> bytes:
        """The request's bytes; its ``chat.chunk`` notifications come back through ``next``."""
        self._pending, data = self._peer.request(method, params, on_note=self._on_chunk, rid=REQUEST_ID)
        return data

    def _on_chunk(self, note: Chunk | PullProgress) -> None:
        if isinstance(note, Chunk):
            self._delta = note
        else:
            self._progress = note

    async def next(self) -> Chunk | msgspec.Raw:
        """The next streamed chunk (a typed delta), or the final result (raises the
        typed error the daemon answered with)."""
        while isinstance(item := await self.next_event(), PullProgress):
            pass
        return item

    async def next_event(self) -> Chunk | PullProgress | msgspec.Raw:
        """As ``next``, with a pull's ``models.progress`` notifications too."""
        pending = self._pending
        assert pending is not None
        last = None
        while True:
            line = await self._receive_line()
            if line is None:
                raise refusal(last) or DaemonUnavailable("the daemon closed the connection before answering")
            self._peer.receive(line)
            last = line
            if self._delta is not None:
                delta, self._delta = self._delta, None
                return delta
            if self._progress is not None:
                progress, self._progress = self._progress, None
                return progress
            if pending.done:
                return pending.outcome()

    async def _receive_line(self) -> bytes | None:
        """The next line; the first one within the bound unless a health probe on a
        connection of its own finds the daemon there (busy, e.g. loading a model)."""
        bound, self._first_reply = self._first_reply, None
        if bound is None:
            return await self._reader.receive_line()
        with anyio.move_on_after(bound):
            return await self._reader.receive_line()
        if not await anyio.to_thread.run_sync(probe, self._path, bound / 2):
            raise no_answer(self._path, bound * 1.5)
        return await self._reader.receive_line()

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._stream.aclose()


class AsyncDaemon:
    def __init__(self, path: str, first_reply: float | None = None) -> None:
        self.path = path
        self.first_reply = first_reply_timeout() if first_reply is None else first_reply

    async def open(self, method: str, params: Any = None) -> Exchange:
        try:
            stream = await anyio.connect_unix(self.path)
        except OSError as exc:
            raise DaemonUnavailable(f"no daemon answers on {self.path}") from exc
        exchange = Exchange(stream, self.path, self.first_reply)
        try:
            await stream.send(exchange.request(method, params))
        except (OSError, anyio.BrokenResourceError) as exc:
            await stream.aclose()
            raise DaemonUnavailable(f"the daemon on {self.path} closed the connection") from exc
        return exchange

    @overload
    async def call(self, method: str, params: Any = None) -> dict[str, Any]: ...
    @overload
    async def call(self, method: str, params: Any = None, *, type: type[T]) -> T: ...  # noqa: A002
    @overload
    async def call(self, method: str, params: Any, type: type[T]) -> T: ...  # noqa: A002
    async def call(self, method: str, params: Any = None, type: Any = dict) -> Any:  # noqa: A002
        exchange = await self.open(method, params)
        try:
            while True:
                item = await exchange.next()
                if isinstance(item, msgspec.Raw):
                    return msgspec.json.decode(item, type=type)
        finally:
            await exchange.aclose()


def _ignore(item: object) -> None:
    """Anything but this exchange's answer and chunks is dropped."""
