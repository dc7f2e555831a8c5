"""What every API surface does with a request: read its body, run ``chat`` or
``complete`` on the daemon (collected, or streamed as typed chunks), notice a
client that went away, and find the first field set to something not built.

The OpenAI, Ollama, Anthropic and Responses modules differ only in shapes; the
plumbing is here once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

import anyio
import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from impetusd.dispatch.dispatcher import field_of
from impetusd.protocol.api import ChatParams, Chunk, CompleteParams, GenerationResult

from ..aclient import AsyncDaemon, Exchange
from ..client import DaemonUnavailable
from .errors import OpenAIError

T = TypeVar("T")
MAX_BODY = 16 * 1024 * 1024
Item = Chunk | GenerationResult


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


Handler = Callable[[Request], Awaitable[Response]]


def common_failure(exc: Exception) -> tuple[int, str]:
    """Status and message for the failures every API answers alike: the daemon out of
    reach, a body the reader refused, and a bug in the shim."""
    if isinstance(exc, DaemonUnavailable):
        return 503, f"the Impetus daemon is not reachable: {exc}"
    if isinstance(exc, OpenAIError | BadBody):
        return exc.status, exc.message
    return 500, f"internal error in the shim: {type(exc).__name__}: {exc}"


def answering(failure: Callable[[Exception], Response]) -> Callable[[Handler], Handler]:
    """A route decorator: a client that went away gets 499 (nobody reads it), any other
    failure the API's own error response."""

    def route(handler: Handler) -> Handler:
        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except ClientGone:
                return Response(status_code=499)
            except Exception as exc:
                return failure(exc)

        return run

    return route


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


async def _result(exchange: Exchange) -> GenerationResult:
    while not isinstance(item := await exchange.next(), msgspec.Raw):
        pass
    return msgspec.json.decode(bytes(item), type=GenerationResult)


async def generate(request: Request, daemon: AsyncDaemon, params: ChatParams | CompleteParams) -> GenerationResult:
    """Run a request to its end (not streamed); cancelled if the client leaves."""
    exchange = await daemon.open("chat" if isinstance(params, ChatParams) else "complete", params)
    try:
        return await until_disconnect(request, lambda: _result(exchange))
    finally:
        await exchange.aclose()


async def stream(daemon: AsyncDaemon, params: ChatParams | CompleteParams) -> AsyncIterator[Item]:
    """Start a streamed request and wait for its first chunk, so that load and
    validation errors still get a proper status; then its chunks and its result."""
    exchange = await daemon.open("chat" if isinstance(params, ChatParams) else "complete", params)
    try:
        first = await exchange.next()
    except BaseException:
        await exchange.aclose()
        raise
    return _items(exchange, first)


async def _items(exchange: Exchange, first: Chunk | msgspec.Raw) -> AsyncIterator[Item]:
    item = first
    streamed: dict[int, list[str]] = {}
    try:
        while True:
            if isinstance(item, msgspec.Raw):
                result = msgspec.json.decode(bytes(item), type=GenerationResult)
                for missing in unstreamed(result, streamed):
                    yield missing
                yield result
                return
            if item.kind == "content":
                streamed.setdefault(item.choice, []).append(item.delta)
            yield item
            item = await exchange.next()
    finally:
        await exchange.aclose()


def unstreamed(result: GenerationResult, streamed: dict[int, list[str]]) -> list[Chunk]:
    """Content the result has that no chunk carried (a tool call that failed to parse
    comes back as text in ``content``): sent as one last content chunk per choice, so a
    streaming client loses nothing a non-streaming one would get."""
    finals = [(c.index, c.message.content if c.message else (c.text or "")) for c in result.choices or []]
    if not finals:
        finals = [(0, result.message.content if result.message else (result.text or ""))]
    out = []
    for index, text in finals:
        sent = "".join(streamed.get(index, []))
        if len(text) > len(sent) and text.startswith(sent):
            out.append(Chunk(id=None, delta=text[len(sent) :], choice=index))
    return out
