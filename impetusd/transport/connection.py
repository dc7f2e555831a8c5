"""One client connection: lines in through its ``Peer``, one task per request,
replies out through a bounded ``Outbox`` written by one task."""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import SocketStream, TaskGroup

from impetusd.dispatch.context import RequestContext
from impetusd.protocol.errors import ImpetusError, MessageTooLarge, ShuttingDown
from impetusd.protocol.framing import LineReader
from impetusd.protocol.messages import CANCEL, Codec, Message, Request
from impetusd.protocol.peer import Incoming, Peer
from impetusd.transport.memtrim import release_freed_memory
from impetusd.transport.outbox import Outbox

log = logging.getLogger(__name__)

BIG_LINE = 1024 * 1024

Handler = Callable[[Peer, "Request | Message", RequestContext], Awaitable["bytes | None"]]
"""Runs one request to its encoded answer (``Dispatcher.handle``)."""


class Requests:
    """Every request in flight on any connection, so shutdown can wait for them."""

    def __init__(self) -> None:
        self.running: set[RequestContext] = set()
        self._idle = anyio.Event()

    def add(self, ctx: RequestContext) -> None:
        self.running.add(ctx)

    def discard(self, ctx: RequestContext) -> None:
        ctx.finish()
        self.running.discard(ctx)
        if not self.running:
            self._idle.set()
            self._idle = anyio.Event()

    async def wait_idle(self) -> None:
        while self.running:
            await self._idle.wait()


class Connection:
    """A client connection: reads requests, tracks them, and queues replies in a
    bounded ``Outbox`` written by one task."""

    def __init__(
        self,
        stream: SocketStream,
        *,
        codec: Codec,
        handle: Handler,
        requests: Requests,
        stopping: Callable[[], bool],
        max_line_bytes: int,
        max_buffer_bytes: int,
    ) -> None:
        self.stream = stream
        self.peer = Peer(self._on_message, on_notification=self._on_message, codec=codec)
        self._handle = handle
        self._requests = requests
        self._stopping = stopping
        self._max_line = max_line_bytes
        self._max_buffer = max_buffer_bytes
        self.outbox = Outbox(stream, max_buffer_bytes, self._overflowed)
        self.closed = False
        self._tg: TaskGroup | None = None

    async def send(self, data: bytes) -> None:
        """Queue ``data`` for the client; never waits for the client to read."""
        if self.closed:
            raise anyio.ClosedResourceError
        self.outbox.put(data)

    def _overflowed(self, size: int) -> None:
        log.warning("dropping a client that stopped reading (%d bytes waiting; limit %d)", size, self._max_buffer)
        self._drop()

    def _drop(self) -> None:
        """Stop serving this client: cancel its requests, end the reader."""
        self.closed = True
        self.peer.cancel_all_incoming()
        sock: socket.socket = self.stream.extra(anyio.abc.SocketAttribute.raw_socket)
        try:
            sock.shutdown(socket.SHUT_RDWR)  # the reader sees end of stream
        except OSError:
            pass

    async def _reply(self, data: bytes | None) -> None:
        if data is None:
            return
        try:
            await self.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass  # the client left; its requests were cancelled

    async def serve(self) -> None:
        reader = LineReader(self.stream, self._max_line)
        async with anyio.create_task_group() as writer:
            writer.start_soon(self.outbox.run)
            try:
                async with anyio.create_task_group() as self._tg:
                    try:
                        while True:
                            try:
                                line = await reader.receive_line()
                            except MessageTooLarge as exc:
                                await self._reply(self.peer.error_response(None, exc))
                                await self._linger()
                                break
                            if line is None:
                                break
                            if not line.strip():
                                continue
                            started = self.peer.receive(line)
                            if started is not None:
                                await started
                            # A buffered burst of lines must not monopolise the loop:
                            # let other connections (and this one's writer) run between lines.
                            await anyio.lowlevel.checkpoint()
                    finally:
                        self.closed = True
                        self.peer.cancel_all_incoming()  # client gone: stop its work
            finally:
                # Replies already queued still go out (to a client that half-closed, or
                # the answers of a shutdown), for a bounded time.
                self.outbox.close()
                with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                    await self.outbox.wait_empty()
                self.outbox.stop()
        await self.stream.aclose()
        if reader.largest > BIG_LINE:
            del reader
            release_freed_memory()  # the line buffer was large; give the memory back

    async def _linger(self) -> None:
        """Half-close and discard what the client is still sending (briefly), so
        the error is read before the connection closes instead of being lost to a reset."""
        try:
            with anyio.move_on_after(1.0):
                await self.outbox.wait_empty()  # the error goes out first
            await self.stream.send_eof()
            with anyio.move_on_after(1.0):
                discarded = 0
                while discarded < 64 * 1024 * 1024:
                    discarded += len(await self.stream.receive(65536))
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass

    def _on_message(self, item: Incoming) -> Awaitable[None] | None:
        assert self._tg is not None
        if isinstance(item, list):
            self._tg.start_soon(self._batch, item)
            return None
        return self._start_one(self._tg, item, None)

    async def _start_one(self, tg: TaskGroup, item: Request | Message | ImpetusError, sink: list[bytes] | None) -> None:
        if isinstance(item, ImpetusError):
            rid = item.fields.pop("_id", None)
            data = self.peer.error_response(rid, item)
            if sink is not None:
                sink.append(data)
            else:
                await self._reply(data)
            return
        method = item.method
        assert method is not None
        if method == CANCEL:  # inside a batch; alone, the peer has acted on it
            self.peer.cancel_incoming(item.params)
            return
        if self._stopping() and not method.startswith("daemon."):
            if not item.is_notification:
                data = self.peer.error_response(item.reply_id, ShuttingDown("the daemon is shutting down"))
                if sink is None:
                    await self._reply(data)
                else:
                    sink.append(data)
            return
        ctx = RequestContext(self, item.reply_id, method)
        key = self.peer.track(item.id, ctx)
        self._requests.add(ctx)

        async def run() -> None:
            try:
                data = await self._handle(self.peer, item, ctx)
                if sink is not None:
                    if data is not None:
                        sink.append(data)
                else:
                    await self._reply(data)
            finally:
                self.peer.untrack(key)
                self._requests.discard(ctx)

        if sink is None:
            tg.start_soon(run)
        else:
            await run()

    async def _batch(self, items: list[Request | ImpetusError]) -> None:
        sink: list[bytes] = []
        async with anyio.create_task_group() as tg:
            for item in items:
                tg.start_soon(self._start_one, tg, item, sink)
        if sink:
            await self._reply(self.peer.codec.encode_batch(sink))
