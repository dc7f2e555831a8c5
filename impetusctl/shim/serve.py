"""Run the shim with uvicorn on a socket bound here (so ``--port 0`` works and
the real address can be printed before the first request)."""

from __future__ import annotations

import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import uvicorn

from .app import Settings, create_app


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must say TCP: asyncio sets TCP_NODELAY on accepted connections only
    # then, and without it every keep-alive response waits ~40 ms on Nagle.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings, host: str, port: int, log_level: str, on_ready: Callable[[str, int], None]) -> None:
    sock = bind(host, port)
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings),
        log_level=log_level,
        access_log=log_level == "debug",
        lifespan="off",
        timeout_graceful_shutdown=5,
        server_header=False,
    )
    on_ready(host, bound_port)

    def stopped(signum: int, frame: Any) -> None:
        sys.exit(0)

    # uvicorn shuts down gracefully on these, then re-raises the signal to
    # whatever handler was there before: make that a clean exit.
    signal.signal(signal.SIGTERM, stopped)
    signal.signal(signal.SIGINT, stopped)
    uvicorn.Server(config).run(sockets=[sock])
