"""The HTTP plumbing every API surface shares: reading a body, answering JSON, SSE
and NDJSON, the race between a request and a client that leaves, and the one way
failures are answered.

Failures: each API has its own error class (a subclass of ``ApiError``: a status
and the body that API's clients parse) and one ``error_of`` that turns any
exception into it. ``answering(error_of)`` wraps every route of that API; its
streams send ``error_of(exc)`` in their own event shape. Code shared by the APIs
raises ``BadBody`` (status, message, the field as that API names it).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

import anyio
import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from impetusd.protocol.errors import ImpetusError
from impetusd.protocol.validation import field_of

from ..client import DaemonUnavailable

T = TypeVar("T")
MAX_BODY = 16 * 1024 * 1024
Handler = Callable[[Request], Awaitable[Response]]
log = logging.getLogger(__name__)
_encoder = msgspec.json.Encoder()

# Daemon error name -> HTTP status. Anything unlisted is the server's fault (500).
_STATUS = {
    "ParseError": 400,
    "InvalidRequest": 400,
    "InvalidParams": 400,
    "UnsupportedParameter": 400,
    "ContextLengthExceeded": 400,
    "UnsupportedFormat": 400,
    "InvalidModelFile": 400,
    "NoBackend": 400,
    "MessageTooLarge": 413,
    "ModelNotFound": 404,
    "ModelNotLoaded": 404,
    "Overloaded": 429,
    "NotReady": 503,
    "ShuttingDown": 503,
    "InsufficientMemory": 503,
    "ModelFailed": 503,
}


class ClientGone(Exception):
    """The HTTP client disconnected before the answer was ready."""


class BadBody(Exception):
    """A body that is too large, not JSON, or not the expected shape; each API
    answers it in its own error shape. ``param`` names the field when known."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


class ApiError(Exception):
    """A failure in one API's own error shape: its HTTP status and ``body()``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def body(self) -> Any:
        raise NotImplementedError


ErrorOf = Callable[[Exception], ApiError]


def daemon_status(exc: ImpetusError) -> int:
    """The HTTP status of a typed daemon error."""
    return _STATUS.get(exc.name, 500)


def daemon_message(exc: ImpetusError) -> str:
    return f"{exc.message} [{exc.name}]"


def common_failure(exc: Exception) -> tuple[int, str]:
    """Status and message for the failures every API answers alike: the daemon out of
    reach, a body the reader refused, and a bug in the shim."""
    if isinstance(exc, DaemonUnavailable):
        return 503, f"the Impetus daemon is not reachable: {exc}"
    if isinstance(exc, ApiError | BadBody):
        return exc.status, exc.message
    return 500, f"internal error in the shim: {type(exc).__name__}: {exc}"


def answering(error_of: ErrorOf) -> Callable[[Handler], Handler]:
    """A route decorator: a client that went away gets 499 (nobody reads it), any other
    failure the API's own error response (a bug in the shim is logged too)."""

    def route(handler: Handler) -> Handler:
        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except ClientGone:
                return Response(status_code=499)
            except Exception as exc:
                if not isinstance(exc, ApiError | BadBody | ImpetusError | DaemonUnavailable):
                    log.exception("%s %s failed", request.method, request.url.path)
                err = error_of(exc)
                return json_response(err.body(), err.status)

        return run

    return route


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(obj), status_code=status, media_type="application/json")


def sse(obj: Any) -> bytes:
    """One SSE event with data only (OpenAI's streams)."""
    return b"data: " + _encoder.encode(obj) + b"\n\n"


def sse_event(kind: str, obj: Any) -> bytes:
    """One named SSE event (Anthropic's and the Responses API's streams)."""
    return b"event: " + kind.encode() + b"\ndata: " + _encoder.encode(obj) + b"\n\n"


def ndjson(obj: Any) -> bytes:
    """One NDJSON line (Ollama's streams)."""
    return _encoder.encode(obj) + b"\n"


async def read_body(request: Request, kind: type[T], *, empty: bytes = b"") -> T:
    """The JSON body decoded into ``kind``, at most ``MAX_BODY`` bytes (``empty``
    stands in for a missing body)."""
    size = 0
    chunks: list[bytes] = []
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise BadBody(413, f"request body exceeds {MAX_BODY} bytes")
        chunks.append(chunk)
    try:
        return msgspec.json.decode(b"".join(chunks) or empty, type=kind)
    except msgspec.ValidationError as exc:
        raise BadBody(400, f"invalid request body: {exc}", field_of(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise BadBody(400, f"the request body is not valid JSON: {exc}") from None


def first_refused(values: Iterable[tuple[str, Any]], neutral: Mapping[str, tuple[Any, ...]]) -> str | None:
    """The first field named in ``neutral`` whose value is not one of its neutral
    values (an empty tuple: any value is accepted)."""
    for name, value in values:
        if name in neutral and neutral[name] and value not in neutral[name]:
            return name
    return None


def fields_of(body: msgspec.Struct) -> Iterable[tuple[str, Any]]:
    return ((name, getattr(body, name)) for name in body.__struct_fields__)


async def until_disconnect(request: Request, work: Callable[[], Awaitable[T]]) -> T:
    """Run ``work`` unless the client goes away first; then it is cancelled
    (which closes its daemon connection, so the daemon stops too)."""
    done: list[T] = []
    failed: list[Exception] = []
    async with anyio.create_task_group() as tg:

        async def watch() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            tg.cancel_scope.cancel()

        async def run() -> None:
            try:
                done.append(await work())
            except Exception as exc:  # raised below, outside the group, unwrapped
                failed.append(exc)
            tg.cancel_scope.cancel()

        tg.start_soon(watch)
        tg.start_soon(run)
    if failed:
        raise failed[0]
    if not done:
        raise ClientGone()
    return done[0]


class EventStream(StreamingResponse):
    """A streamed body that stops (and closes the daemon request) as soon as the
    client disconnects, even while nothing is being sent (a long prefill)."""

    def __init__(self, content: AsyncIterator[bytes], media_type: str = "text/event-stream") -> None:
        super().__init__(content, media_type=media_type, headers={"cache-control": "no-cache", "x-accel-buffering": "no"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as tg:

            async def stream() -> None:
                try:
                    await self.stream_response(send)
                except OSError:
                    pass
                tg.cancel_scope.cancel()

            tg.start_soon(stream)
            await self.listen_for_disconnect(receive)
            tg.cancel_scope.cancel()


class NdjsonStream(EventStream):
    """NDJSON lines that stop (and close the daemon request) when the client goes away."""

    def __init__(self, content: AsyncIterator[bytes]) -> None:
        super().__init__(content, media_type="application/x-ndjson")
