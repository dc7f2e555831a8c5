"""Listening sockets handed over by the service manager (socket activation).

systemd passes them as file descriptors from 3 on, announced by ``LISTEN_PID``
(our pid) and ``LISTEN_FDS`` (how many); launchd keeps them under the name in
the plist's ``Sockets`` dictionary and hands them out through
``launch_activate_socket``. Either way the socket already exists, with the mode
the service file gave it, and outlives this process: the daemon must not
replace or remove it.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import socket
import sys

from impetusd.protocol.errors import NotReady
from impetusd.transport.server import admit_peer, read_peer_credentials

log = logging.getLogger(__name__)

SD_LISTEN_FDS_START = 3
LAUNCHD_SOCKET_NAME = "Listeners"


class ActivationError(RuntimeError):
    """The service manager said it passed a socket, but it is not one we can use."""


def _check(sock: socket.socket) -> socket.socket:
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        raise ActivationError(f"inherited fd {sock.fileno()} is not a Unix stream socket")
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        raise ActivationError(f"inherited fd {sock.fileno()} is not listening")
    return sock


def from_systemd(env: dict[str, str] | os._Environ[str] = os.environ) -> socket.socket | None:
    if env.get("LISTEN_PID") != str(os.getpid()) or not env.get("LISTEN_FDS"):
        return None
    count = int(env["LISTEN_FDS"])
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)  # workers must not think the sockets are theirs
    if count < 1:
        return None
    if count > 1:
        log.warning("systemd passed %d sockets; using the first", count)
    fd = SD_LISTEN_FDS_START
    os.set_inheritable(fd, False)
    return _check(socket.socket(fileno=fd))


def from_launchd() -> socket.socket | None:
    if sys.platform != "darwin":
        return None
    libc = ctypes.CDLL(None)
    func = getattr(libc, "launch_activate_socket", None)
    if func is None:
        return None
    fds = ctypes.POINTER(ctypes.c_int)()
    count = ctypes.c_size_t(0)
    func.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.POINTER(ctypes.c_int)), ctypes.POINTER(ctypes.c_size_t)]
    func.restype = ctypes.c_int
    err = func(LAUNCHD_SOCKET_NAME.encode(), ctypes.byref(fds), ctypes.byref(count))
    if err in (errno.ESRCH, errno.ENOENT):
        return None  # ESRCH: not started by launchd; ENOENT: no such socket in the plist
    if err != 0:
        # Started by launchd with a socket we cannot have: listening on a path of our
        # own instead would leave launchd's socket (the one clients use) unserved.
        log.error("launch_activate_socket(%r) failed: %s (errno %d)", LAUNCHD_SOCKET_NAME, os.strerror(err), err)
        return None
    if count.value == 0:
        return None
    try:
        first = fds[0]
        for i in range(1, count.value):
            os.close(fds[i])
    finally:
        ctypes.CDLL(None).free(fds)
    return _check(socket.socket(fileno=first))


_adopted: list[socket.socket] = []  # each manager hands its socket out once (launchd: EALREADY after)


def inherited_socket() -> socket.socket | None:
    """The listening socket we were started with, if any (the same one on every call)."""
    if _adopted and _adopted[0].fileno() != -1:
        return _adopted[0]
    sock = from_systemd() or from_launchd()
    if sock is not None:
        _adopted[:] = [sock]
    return sock


def refuse_waiting(message: str) -> int:
    """The daemon cannot start: answer every connection waiting in the inherited
    socket's backlog with a ``NotReady`` error naming why, and close it. Otherwise the
    clients wait in the backlog, and launchd, seeing the socket still readable,
    would start the daemon again for them. Returns how many were answered."""
    sock = inherited_socket()
    if sock is None:
        return 0
    line = json.dumps({"jsonrpc": "2.0", "id": None, "error": NotReady(f"impetusd cannot start: {message}").to_wire()}).encode() + b"\n"
    sock.setblocking(False)
    answered = 0
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:  # BlockingIOError: no one else is waiting
            return answered
        with conn:
            admitted, why = admit_peer(read_peer_credentials(conn), os.getuid())
            if not admitted:  # another user learns nothing, as from a running daemon
                log.warning("refused a connection %s", why)
                continue
            conn.settimeout(0.5)
            try:
                conn.sendall(line)
                conn.shutdown(socket.SHUT_WR)
                for _ in range(16):  # read what the client sent (a little), so closing is not a reset
                    if not conn.recv(65536):
                        break
            except OSError:
                pass
        answered += 1
