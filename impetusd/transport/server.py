"""The Unix-socket server: the listener, its connections and their requests.

``Server`` receives what it uses (the socket path, limits, the codec, the
request handler, a stopping predicate), counts connections, refuses them past
the limit, and drains the requests in flight when the daemon shuts down.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import SocketStream

from impetusd.dispatch.context import RequestContext
from impetusd.protocol.errors import Overloaded, ShuttingDown
from impetusd.protocol.messages import Codec
from impetusd.transport.connection import Connection, Handler, Requests

log = logging.getLogger(__name__)


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


class Server:
    """Listens on the socket, serves each connection in a task of its own, and
    keeps every request in flight until it ends or ``drain`` aborts it."""

    def __init__(
        self,
        path: Path,
        *,
        codec: Codec,
        handle: Handler,
        stopping: Callable[[], bool],
        max_connections: int,
        max_line_bytes: int,
        max_buffer_bytes: int,
        max_requests_per_connection: int = 64,
    ) -> None:
        self.path = path
        self.codec = codec
        self._handle = handle
        self._stopping = stopping
        self.max_connections = max_connections
        self._max_line = max_line_bytes
        self._max_buffer = max_buffer_bytes
        self._max_requests = max_requests_per_connection
        self.connections = 0
        self.requests = Requests()
        self._accept_scope: anyio.CancelScope | None = None

    @property
    def in_flight(self) -> set[RequestContext]:
        return self.requests.running

    async def serve(self, activated: socket.socket | None = None, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Listen until ``stop_accepting``; then keep serving the open connections.

        ``activated``: a listening socket from the service manager (systemd, launchd)."""
        if activated is not None:
            listener: anyio.abc.SocketListener = await anyio.abc.SocketListener.from_socket(activated)
            log.info("adopted the service manager's socket %s", self.path)
            if self.path.exists() and self.path.stat().st_mode & 0o077:
                log.warning("the inherited socket %s was readable by others; set to 0600", self.path)
                os.chmod(self.path, 0o600)
        else:
            listener = await anyio.create_unix_listener(self.path, mode=0o600)
        log.info("listening on %s", self.path)
        async with anyio.create_task_group() as conns:
            with anyio.CancelScope() as self._accept_scope:
                task_status.started()
                async with listener:
                    while True:
                        self._admit(conns, await listener.accept())
            # Not accepting any more; open connections live until the daemon ends them.
            await anyio.sleep_forever()

    def stop_accepting(self) -> None:
        assert self._accept_scope is not None
        self._accept_scope.cancel()

    async def drain(self, grace: float) -> None:
        """Let in-flight requests finish within ``grace`` seconds, then abort the rest."""
        with anyio.move_on_after(grace):
            await self.requests.wait_idle()
        for ctx in list(self.requests.running):
            ctx.abort(ShuttingDown("the daemon is shutting down; the request was cancelled"))
        with anyio.move_on_after(2):
            await self.requests.wait_idle()

    def _admit(self, conns: anyio.abc.TaskGroup, stream: SocketStream) -> None:
        try:
            uid = peer_uid(stream)
        except OSError:
            uid = None
        if uid is not None and uid != os.getuid():
            log.warning("refused a connection from uid %s", uid)
            conns.start_soon(stream.aclose)
            return
        if self.connections >= self.max_connections:
            conns.start_soon(self._refuse_overloaded, stream)
            return
        self.connections += 1  # counted here, so a burst of accepts cannot overshoot
        conn = Connection(
            stream,
            codec=self.codec,
            handle=self._handle,
            requests=self.requests,
            stopping=self._stopping,
            max_line_bytes=self._max_line,
            max_buffer_bytes=self._max_buffer,
            max_requests=self._max_requests,
        )
        conns.start_soon(self._serve_connection, conn)

    async def _serve_connection(self, conn: Connection) -> None:
        """A bug reached through one connection ends that connection, not the daemon."""
        try:
            await conn.serve()
        except Exception:
            log.exception("a connection failed; closed it")
            with anyio.CancelScope(shield=True):
                await conn.stream.aclose()
        finally:
            self.connections -= 1

    async def _refuse_overloaded(self, stream: SocketStream) -> None:
        """One Overloaded error line, then close (without reading the client's requests)."""
        limit = self.max_connections
        log.warning("refused a connection: %d connections open (limit %d)", self.connections, limit)
        err = Overloaded(f"too many connections ({limit}); try again later", limit=limit, reason="connections")
        with anyio.move_on_after(1.0):
            try:
                await stream.send(self.codec.encode_error(None, err))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass
        await stream.aclose()
