"""What the daemon has to say to one client, written by one task, bounded in bytes.

Producers (request handlers, the worker's stream of chunks) never wait for a
client: they append here and return. A single writer task sends to the socket.
When a client stops reading, its bytes pile up here until ``limit``; then the
outbox overflows, the connection is dropped and its requests are cancelled, so
one stalled client can neither grow the daemon's memory nor hold up the
worker that streams to it (and through it, every other client of that model).
"""

from __future__ import annotations

import logging
import socket
from collections import deque
from collections.abc import Callable

import anyio
from anyio.abc import ByteSendStream, SocketAttribute

log = logging.getLogger(__name__)

WRITE_BATCH = 256 * 1024  # join small pieces into one send up to this size


class Outbox:
    def __init__(self, stream: ByteSendStream, limit: int, on_overflow: Callable[[int], None]) -> None:
        self._stream = stream
        self._limit = limit
        self._on_overflow = on_overflow
        self._queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self._wake = anyio.Event()
        self._emptied = anyio.Event()
        self.closed = False  # no more puts
        self._scope = anyio.CancelScope()
        self.broken = False  # the client cannot be written to
        # When nothing is queued and the writer is not mid-send, a message goes straight to
        # the socket: a streamed token then costs no wake of the writer task.
        self._raw: socket.socket | None = stream.extra(SocketAttribute.raw_socket, None)
        self._sending = False

    def put(self, data: bytes) -> None:
        """Queue ``data``; raises BrokenResourceError if the client is gone or overflowed.

        One message larger than the limit is accepted when nothing is queued, so
        a big result can still be delivered to a client that reads.
        """
        if self.closed or self.broken:
            raise anyio.BrokenResourceError
        if self.queued_bytes and self.queued_bytes + len(data) > self._limit:
            self.broken = True
            self._discard()
            self._wake.set()
            self._on_overflow(self.queued_bytes + len(data))
            raise anyio.BrokenResourceError
        if not self._queue and not self._sending and self._raw is not None:
            try:
                sent = self._raw.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.broken = True
                self._wake.set()  # the writer ends
                raise anyio.BrokenResourceError from None
            if sent == len(data):
                return
            data = data[sent:]  # the rest waits for the socket, as a queued message
        self._queue.append(data)
        self.queued_bytes += len(data)
        self._wake.set()

    def close(self) -> None:
        """No more messages: the writer flushes what is queued, then ends."""
        self.closed = True
        self._wake.set()

    async def wait_empty(self) -> None:
        while self._queue and not self.broken:
            await self._emptied.wait()

    async def run(self) -> None:
        """The writer task: until closed (and flushed), broken, or ``stop``.

        Shielded, so replies queued when the daemon shuts down still go out;
        the connection ends it with ``stop`` after a bounded flush.
        """
        with anyio.CancelScope(shield=True) as self._scope:
            await self._write_all()

    def stop(self) -> None:
        self._scope.cancel()

    async def _write_all(self) -> None:
        while True:
            if not self._queue:
                self._set_emptied()
                if self.closed or self.broken:
                    return
                await self._wake.wait()
                self._wake = anyio.Event()
                continue
            parts = [self._queue.popleft()]
            size = len(parts[0])
            while self._queue and size + len(self._queue[0]) <= WRITE_BATCH:
                parts.append(self._queue.popleft())
                size += len(parts[-1])
            self._sending = True
            try:
                await self._stream.send(b"".join(parts) if len(parts) > 1 else parts[0])
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                self.broken = True
                self._discard()
                self._set_emptied()
                return
            finally:
                self._sending = False
                self.queued_bytes -= size
            if self.broken:
                return

    def _discard(self) -> None:
        self.queued_bytes -= sum(len(part) for part in self._queue)
        self._queue.clear()

    def _set_emptied(self) -> None:
        self._emptied.set()
        self._emptied = anyio.Event()
