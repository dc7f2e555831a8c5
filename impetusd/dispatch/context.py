"""One in-flight request as dispatch and the methods see it: its id, its
connection, its cancel scope, and what runs when it is over."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

import anyio

from impetusd.protocol.errors import ImpetusError, RequestCancelled
from impetusd.protocol.messages import RequestId
from impetusd.protocol.peer import Peer


class Sender(Protocol):
    """A request's connection: its peer, and a way to queue bytes for the client."""

    peer: Peer

    async def send(self, data: bytes) -> None: ...


class RequestContext:
    """One in-flight request: its id, its connection, and how to cancel it.

    Handlers that stop cleanly on their own (generation) set ``cooperative``;
    ``$/cancel`` then only sets ``cancel_requested`` and the handler finishes
    with whatever it has. Other handlers are cancelled outright.
    """

    def __init__(self, conn: Sender, req_id: RequestId, method: str) -> None:
        self.conn = conn
        self.id = req_id
        self.method = method
        self.received = time.monotonic()
        self.cancel_requested = anyio.Event()
        self.cooperative = False
        self.scope = anyio.CancelScope()
        self.abort_error: ImpetusError | None = None
        self.finalizers: list[Callable[[], None]] = []  # run when the request is over

    def finish(self) -> None:
        while self.finalizers:
            self.finalizers.pop()()

    def cancel(self) -> None:
        self.cancel_requested.set()
        if not self.cooperative:
            self.abort(RequestCancelled("request cancelled", id=self.id))

    def abort(self, error: ImpetusError) -> None:
        """Stop the handler now; the client gets ``error``."""
        if self.abort_error is None:
            self.abort_error = error
        self.scope.cancel()

    async def notify(self, method: str, params: Any) -> None:
        try:
            await self.conn.send(self.conn.peer.notification(method, params))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            self.cancel_requested.set()  # the client is gone: stop producing
