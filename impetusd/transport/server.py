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
        raise ValueError(
            f"socket path is {len(os.fsencode(str(path)))} bytes, over the {limit - 1} a Unix socket path may have here (sun_path): {path};"
            " choose a shorter one with IMPETUS_SOCKET or --socket"
        )
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


# struct ucred (Linux SO_PEERCRED): pid_t pid; uid_t uid; gid_t gid. uid_t and gid_t are unsigned.
UCRED = struct.Struct("iII")
# struct xucred (macOS LOCAL_PEERCRED, <sys/ucred.h>): u_int cr_version; uid_t cr_uid;
# short cr_ngroups; gid_t cr_groups[NGROUPS=16] (native alignment pads the short to 4 bytes).
XUCRED = struct.Struct("IIh16I")
XUCRED_VERSION = 0
SOL_LOCAL = 0
LOCAL_PEERCRED = 0x001


def uid_from_ucred(raw: bytes) -> int:
    return int(UCRED.unpack_from(raw)[1])


def uid_from_xucred(raw: bytes) -> int:
    version, uid = XUCRED.unpack_from(raw)[:2]
    if version != XUCRED_VERSION:
        raise ValueError(f"struct xucred version {version}, expected {XUCRED_VERSION}")
    return int(uid)


def read_peer_credentials(sock: socket.socket) -> tuple[str, bytes] | OSError | None:
    """The raw credentials of the peer (layout name, bytes), the error reading them,
    or None where this platform has no way to read them."""
    try:
        if hasattr(socket, "SO_PEERCRED"):
            return "ucred", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, UCRED.size)
        if sys.platform == "darwin":
            return "xucred", sock.getsockopt(SOL_LOCAL, LOCAL_PEERCRED, XUCRED.size)
    except OSError as exc:
        return exc
    return None


def admit_peer(outcome: tuple[str, bytes] | OSError | None, me: int) -> tuple[bool, str]:
    """Whether a connection is served, given what reading its credentials gave.

    Fail closed: a peer whose uid cannot be read is refused like another user's."""
    if outcome is None:
        return False, "(no way to read a peer's credentials on this platform)"
    if isinstance(outcome, OSError):
        return False, f"(cannot read the peer's credentials: {outcome})"
    layout, raw = outcome
    try:
        uid = uid_from_ucred(raw) if layout == "ucred" else uid_from_xucred(raw)
    except (struct.error, ValueError) as exc:
        return False, f"(unreadable peer credentials, {layout} of {len(raw)} bytes: {exc})"
    if uid != me:
        return False, f"from uid {uid}"
    return True, ""


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
        sock: socket.socket = stream.extra(anyio.abc.SocketAttribute.raw_socket)
        admitted, why = admit_peer(read_peer_credentials(sock), os.getuid())
        if not admitted:
            log.warning("refused a connection %s", why)
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
