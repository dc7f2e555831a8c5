"""One client connection: lines in through its ``Peer``, one task per request,
replies out through a bounded ``Outbox`` written by one task."""

from __future__ import annotations

import logging
import select
import socket
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import SocketStream, TaskGroup

from impetusd.dispatch.context import RequestContext
from impetusd.protocol.errors import ImpetusError, InvalidRequest, MessageTooLarge, ShuttingDown
from impetusd.protocol.framing import LineReader
from impetusd.protocol.messages import CANCEL, Codec, Message, Request
from impetusd.protocol.peer import Incoming, Peer
from impetusd.transport.memtrim import release_freed_memory
from impetusd.transport.outbox import Outbox

log = logging.getLogger(__name__)

BIG_LINE = 1024 * 1024
HANGUP_POLL_S = 0.05  # after end of input: how often to check that a half-closed client is still there

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
    bounded ``Outbox`` written by one task.

    At most ``max_requests`` of its requests run at once (batch items included);
    past that the connection is not read until one ends (backpressure: the
    client's writes block once the socket buffers fill). End of input means "no
    more requests": what was asked is finished and answered, then the connection
    closes, unless the client is gone altogether (its socket hung up, or a write
    failed): then its requests are cancelled.
    """

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
        max_requests: int = 64,
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
        self._slots = anyio.Semaphore(max_requests)
        self._busy = 0  # requests and batches not yet answered

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
                        if await self._read_requests(reader):
                            await self._finish_after_eof()
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

    async def _read_requests(self, reader: LineReader) -> bool:
        """Read and start requests until end of input (True) or an oversized line."""
        while True:
            try:
                line = await reader.receive_line()
            except MessageTooLarge as exc:
                await self._reply(self.peer.error_response(None, exc))
                await self._linger()
                return False
            if line is None:
                return True
            if not line.strip():
                continue
            started = self.peer.receive(line)
            if started is not None:
                await started  # waits for a free slot (backpressure)
            # A buffered burst of lines must not monopolise the loop:
            # let other connections (and this one's writer) run between lines.
            await anyio.lowlevel.checkpoint()

    async def _finish_after_eof(self) -> None:
        """The client will send nothing more: let its requests finish and be
        answered, unless it has gone away altogether (then the caller cancels them)."""
        while self._busy:
            if self.closed or self.outbox.broken or self._hung_up():
                return
            await anyio.sleep(HANGUP_POLL_S)

    def _hung_up(self) -> bool:
        """The client closed its end entirely (not only its writing half)."""
        sock: socket.socket = self.stream.extra(anyio.abc.SocketAttribute.raw_socket)
        try:
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLOUT)
            return any(events & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, events in poller.poll(0))
        except (OSError, ValueError):
            return True

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

    def _on_message(self, item: Incoming) -> Awaitable[object] | None:
        assert self._tg is not None
        if isinstance(item, list):
            return self._tg.start(self._batch, item)  # returns once every item has started
        return self._start_one(self._tg, item, None)

    async def _start_one(self, tg: TaskGroup, item: Request | Message | ImpetusError, sink: list[bytes] | None) -> None:
        """Answer ``item`` at once (an error, a cancel) or start it in ``tg`` once
        a slot is free; its answer goes to ``sink`` (a batch) or to the client."""
        if isinstance(item, ImpetusError):
            rid = item.fields.pop("_id", None)
            self._answer(self.peer.error_response(rid, item), sink)
            return
        method = item.method
        assert method is not None
        if method == CANCEL:  # in a batch, or sent with an id; a notification alone the peer has acted on
            outcome = self.peer.cancel_incoming(item.params)
            if not item.is_notification:
                data = (
                    self.peer.error_response(item.reply_id, outcome)
                    if isinstance(outcome, ImpetusError)
                    else self.peer.response(item.reply_id, {"cancelled": outcome})
                )
                self._answer(data, sink)
            return
        if self._stopping() and not method.startswith("daemon."):
            if not item.is_notification:
                self._answer(self.peer.error_response(item.reply_id, ShuttingDown("the daemon is shutting down")), sink)
            return
        await self._slots.acquire()
        if self.peer.in_flight(item.id):
            self._slots.release()
            rid = item.reply_id
            err = InvalidRequest(f"Invalid Request: id {rid!r} is already used by a request in flight on this connection", id=rid)
            self._answer(self.peer.error_response(rid, err), sink)
            return
        ctx = RequestContext(self, item.reply_id, method)
        key = self.peer.track(item.id, ctx)
        self._requests.add(ctx)
        self._busy += 1

        async def run() -> None:
            try:
                self._answer(await self._handle(self.peer, item, ctx), sink)
            finally:
                self._busy -= 1
                self._slots.release()
                self.peer.untrack(key)
                self._requests.discard(ctx)

        tg.start_soon(run)

    def _answer(self, data: bytes | None, sink: list[bytes] | None) -> None:
        if data is None:
            return
        if sink is not None:
            sink.append(data)
            return
        if self.closed:
            return  # the client left; its requests were cancelled
        try:
            self.outbox.put(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass

    async def _batch(self, items: list[Request | ImpetusError], *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start the items one by one as slots free up (the reader waits until the
        last has started), then answer them together."""
        sink: list[bytes] = []
        self._busy += 1
        try:
            async with anyio.create_task_group() as tg:
                for item in items:
                    await self._start_one(tg, item, sink)
                task_status.started()
            if sink:
                self._answer(self.peer.codec.encode_batch(sink), None)
        finally:
            self._busy -= 1
