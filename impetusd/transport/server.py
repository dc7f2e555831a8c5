"""The Unix-socket server: one task per connection, one task per request."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import struct
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import SocketStream, TaskGroup

from impetusd.protocol.errors import ImpetusError, MessageTooLarge, Overloaded, ShuttingDown
from impetusd.transport.memtrim import release_freed_memory
from impetusd.transport.outbox import Outbox
from impetusd.protocol.framing import LineReader
from impetusd.protocol.messages import Request
from impetusd.dispatch.dispatcher import RequestContext

if TYPE_CHECKING:
    from impetusd.daemon import Daemon

log = logging.getLogger(__name__)

BIG_LINE = 1024 * 1024


class DaemonAlreadyRunning(RuntimeError):
    pass


def prepare_socket_path(path: Path, activated: bool = False) -> Any:
    """Make the 0700 directory, take the daemon lock, and clear a stale socket
    (unless the service manager handed us the socket: then it is live and theirs).

    Returns the open lock file (held for the daemon's lifetime).
    """
    limit = 104 if sys.platform == "darwin" else 108
    if len(os.fsencode(str(path))) >= limit:
        raise ValueError(f"socket path is {len(str(path))} bytes; the limit here is {limit - 1}: {path}")
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = directory.stat()
    if st.st_uid != os.getuid():
        raise PermissionError(f"socket directory {directory} belongs to uid {st.st_uid}, not to you")
    if st.st_mode & 0o077:
        os.chmod(directory, 0o700)
    lock = open(path.with_name(path.name + ".lock"), "a+")  # noqa: SIM115
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise DaemonAlreadyRunning(f"another impetusd is already running on {path}") from None
    if not activated and (path.exists() or path.is_symlink()):
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError as exc:
            if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
                raise
            log.info("replacing stale socket %s", path)
            path.unlink(missing_ok=True)
        else:
            lock.close()
            raise DaemonAlreadyRunning(f"another daemon already answers on {path}")
        finally:
            probe.close()
    return lock


def peer_uid(stream: SocketStream) -> int | None:
    sock: socket.socket = stream.extra(anyio.abc.SocketAttribute.raw_socket)
    if hasattr(socket, "SO_PEERCRED"):
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", raw)[1]
    getpeereid = getattr(os, "getpeereid", None)  # not in CPython; macOS path below
    if getpeereid:
        return getpeereid(sock.fileno())[0]
    if sys.platform == "darwin":
        local_peercred = 0x001  # LOCAL_PEERCRED, SOL_LOCAL = 0
        raw = sock.getsockopt(0, local_peercred, struct.calcsize("iih16i"))
        return struct.unpack_from("iih", raw)[1]
    return None


class Connection:
    """A client connection: reads requests, tracks them, and queues replies in a
    bounded ``Outbox`` written by one task."""

    def __init__(self, daemon: Daemon, stream: SocketStream) -> None:
        self.daemon = daemon
        self.stream = stream
        self.codec = daemon.codec
        self.outbox = Outbox(stream, daemon.config.max_client_buffer_bytes, self._overflowed)
        self.in_flight: dict[Any, RequestContext] = {}
        self.closed = False

    async def send(self, data: bytes) -> None:
        """Queue ``data`` for the client; never waits for the client to read."""
        if self.closed:
            raise anyio.ClosedResourceError
        self.outbox.put(data)

    def _overflowed(self, size: int) -> None:
        log.warning("dropping a client that stopped reading (%d bytes waiting; limit %d)", size, self.daemon.config.max_client_buffer_bytes)
        self._drop()

    def _drop(self) -> None:
        """Stop serving this client: cancel its requests, end the reader."""
        self.closed = True
        for ctx in list(self.in_flight.values()):
            ctx.cancel()
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
        reader = LineReader(self.stream, self.daemon.config.max_line_bytes)
        async with anyio.create_task_group() as writer:
            writer.start_soon(self.outbox.run)
            try:
                async with anyio.create_task_group() as tg:
                    try:
                        while True:
                            try:
                                line = await reader.receive_line()
                            except MessageTooLarge as exc:
                                await self._reply(self.codec.encode_error(None, exc))
                                await self._linger()
                                break
                            if line is None:
                                break
                            if not line.strip():
                                continue
                            await self._on_line(tg, line)
                            # A buffered burst of lines must not monopolise the loop:
                            # let other connections (and this one's writer) run between lines.
                            await anyio.lowlevel.checkpoint()
                    finally:
                        self.closed = True
                        for ctx in list(self.in_flight.values()):
                            ctx.cancel()  # client gone: stop its work
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

    async def _on_line(self, tg: TaskGroup, line: bytes) -> None:
        decoded = self.codec.decode(line)
        if isinstance(decoded, list):
            tg.start_soon(self._batch, decoded)
        else:
            await self._start_one(tg, decoded, None)

    async def _start_one(self, tg: TaskGroup, item: Request | ImpetusError, sink: list[bytes] | None) -> None:
        if isinstance(item, ImpetusError):
            rid = item.fields.pop("_id", None)
            data = self.codec.encode_error(rid, item)
            if sink is not None:
                sink.append(data)
            else:
                await self._reply(data)
            return
        if item.method == "$/cancel":
            self._cancel(item)
            return
        if self.daemon.stopping and not item.method.startswith("daemon."):
            if not item.is_notification:
                data = self.codec.encode_error(item.id, ShuttingDown("the daemon is shutting down"))  # type: ignore[arg-type]
                await (self._reply(data) if sink is None else _append(sink, data))
            return
        ctx = RequestContext(self, item.id if not item.is_notification else None, item.method)
        key = object() if item.is_notification or item.id in self.in_flight else item.id
        self.in_flight[key] = ctx
        self.daemon.track(ctx)

        async def run() -> None:
            try:
                data = await self.daemon.dispatcher.handle(self, item, ctx)
                if sink is not None:
                    if data is not None:
                        sink.append(data)
                else:
                    await self._reply(data)
            finally:
                self.in_flight.pop(key, None)
                self.daemon.untrack(ctx)

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
            await self._reply(self.codec.encode_batch(sink))

    def _cancel(self, req: Request) -> None:
        try:
            target = self.daemon.dispatcher.decode_cancel(req.params)
        except ImpetusError:
            return  # a notification gets no answer, even a bad one
        ctx = self.in_flight.get(target)
        if ctx is not None:
            ctx.cancel()


async def _refuse_overloaded(daemon: Daemon, stream: SocketStream) -> None:
    """One Overloaded error line, then close (without reading the client's requests)."""
    limit = daemon.config.max_connections
    log.warning("refused a connection: %d connections open (limit %d)", daemon.connections, limit)
    err = Overloaded(f"too many connections ({limit}); try again later", limit=limit, reason="connections")
    with anyio.move_on_after(1.0):
        try:
            await stream.send(daemon.codec.encode_error(None, err))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass
    await stream.aclose()


async def _append(sink: list[bytes], data: bytes) -> None:
    sink.append(data)


async def serve_unix(daemon: Daemon, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
    """Listen until ``daemon.stop_accepting`` is set."""
    path = daemon.config.socket
    if daemon.activated is not None:  # socket activation: systemd or launchd made it
        listener: anyio.abc.SocketListener = await anyio.abc.SocketListener.from_socket(daemon.activated)
        log.info("adopted the service manager's socket %s", path)
        if path.exists() and path.stat().st_mode & 0o077:
            log.warning("the inherited socket %s was readable by others; set to 0600", path)
            os.chmod(path, 0o600)
    else:
        listener = await anyio.create_unix_listener(path, mode=0o600)
    own_uid = os.getuid()
    log.info("listening on %s", path)
    async with anyio.create_task_group() as conns:

        async def accept_loop() -> None:
            async with listener:
                while True:
                    stream = await listener.accept()
                    try:
                        uid = peer_uid(stream)
                    except OSError:
                        uid = None
                    if uid is not None and uid != own_uid:
                        log.warning("refused a connection from uid %s", uid)
                        await stream.aclose()
                        continue
                    if daemon.connections >= daemon.config.max_connections:
                        conns.start_soon(_refuse_overloaded, daemon, stream)
                        continue
                    daemon.connections += 1  # counted here, so a burst of accepts cannot overshoot
                    conn = Connection(daemon, stream)
                    conns.start_soon(daemon.serve_connection, conn)

        with anyio.CancelScope() as accept_scope:
            daemon.accept_scope = accept_scope
            task_status.started()
            await accept_loop()
        # Not accepting any more; open connections live until the daemon ends them.
        await anyio.sleep_forever()

