"""The Starlette application: OpenAI routes over the daemon's socket."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypedDict, TypeVar

import anyio
import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from impetusd.dispatch.dispatcher import field_of
from impetusd.protocol.api import ChatParams, CompleteParams, DaemonInfo, EmbedResult, GenerationResult, Health, Metrics, ModelList
from impetusd.protocol.errors import ImpetusError

from ..aclient import AsyncDaemon, Exchange
from ..client import DaemonUnavailable
from . import responses as out
from .errors import InvalidRequest, OpenAIError, from_daemon, unavailable
from .metrics import HttpMetrics, render
from .requests import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, chat_params, complete_params, embed_params
from .security import ApiKeyMiddleware, CrossSiteMiddleware

T = TypeVar("T")

MAX_BODY = 16 * 1024 * 1024
ROUTES = (
    "/v1/models",
    "/v1/models/{model}",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/responses",
    "/tokenize",
    "/detokenize",
    "/health",
    "/metrics",
    "/",
    "/dashboard",
    *(f"/api/{name}" for name in ("version", "tags", "ps", "show", "pull", "delete", "copy", "chat", "generate", "embed", "embeddings")),
)
_encoder = msgspec.json.Encoder()


class Settings(msgspec.Struct, frozen=True):
    socket: str
    api_key: str | None = None
    allowed_hosts: list[str] = []
    allow_origins: list[str] = []


class ClientGone(Exception):
    """The HTTP client disconnected before the answer was ready."""


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(obj), status_code=status, media_type="application/json")


async def read_json(request: Request, kind: type[T]) -> T:
    size = 0
    chunks: list[bytes] = []
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise OpenAIError(413, f"request body exceeds {MAX_BODY} bytes", code="request_too_large", type="invalid_request_error")
        chunks.append(chunk)
    try:
        return msgspec.json.decode(b"".join(chunks), type=kind)
    except msgspec.ValidationError as exc:
        raise InvalidRequest(f"invalid request body: {exc}", param=field_of(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest(f"the request body is not valid JSON: {exc}") from None


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
    """Server-sent events that stop (and close the daemon request) as soon as
    the client disconnects, even while nothing is being sent (a long prefill)."""

    def __init__(self, content: AsyncIterator[bytes]) -> None:
        super().__init__(content, media_type="text/event-stream", headers={"cache-control": "no-cache", "x-accel-buffering": "no"})

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


def sse(obj: Any) -> bytes:
    return b"data: " + _encoder.encode(obj) + b"\n\n"


class Shim:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.daemon = AsyncDaemon(settings.socket)
        self.http = HttpMetrics()

    # --- plain routes -------------------------------------------------------------
    async def models(self, request: Request) -> Response:
        listing = await self.daemon.call("models.list", type=ModelList)
        info = await self.daemon.call("daemon.info", type=DaemonInfo)
        return json_response(out.model_cards(listing.models, info.started_at))

    async def model(self, request: Request) -> Response:
        wanted = request.path_params["model"]
        listing = await self.daemon.call("models.list", type=ModelList)
        info = await self.daemon.call("daemon.info", type=DaemonInfo)
        for card in out.model_cards(listing.models, info.started_at).data:
            if card.id == wanted:
                return json_response(card)
        raise OpenAIError(404, f"model {wanted!r} not found", param="model", code="model_not_found")

    async def health(self, request: Request) -> Response:
        try:
            health = await self.daemon.call("daemon.health", type=Health)
        except (DaemonUnavailable, ImpetusError) as exc:
            return json_response({"status": "unavailable", "error": str(exc)}, 503)
        # "degraded" (a model failed, others serve) is still up; only a stopping daemon is not.
        return json_response({"status": health.status, "daemon": health}, 503 if health.status == "shutting_down" else 200)

    async def metrics(self, request: Request) -> Response:
        try:
            snapshot: Metrics | None = await self.daemon.call("daemon.metrics", type=Metrics)
        except (DaemonUnavailable, ImpetusError):
            snapshot = None
        return Response(render(snapshot, self.http), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def embeddings(self, request: Request) -> Response:
        body = await read_json(request, EmbeddingRequest)
        params = embed_params(body)
        result = await until_disconnect(request, lambda: self.daemon.call("embed", params, type=EmbedResult))
        width = len(result.embeddings[0]) if result.embeddings else 0
        if body.dimensions is not None and body.dimensions != width:
            raise InvalidRequest(
                f"this model's embeddings have {width} dimensions; dimensions={body.dimensions} cannot be honoured",
                param="dimensions",
                code="unsupported_parameter",
            )
        return json_response(out.embedding_list(result, body.encoding_format))

    # --- generation -----------------------------------------------------------------
    async def chat_completions(self, request: Request) -> Response:
        body = await read_json(request, ChatCompletionRequest)
        params = chat_params(body)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await self._generate(request, "chat", params, include_usage)

    async def completions(self, request: Request) -> Response:
        body = await read_json(request, CompletionRequest)
        params = complete_params(body)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await self._generate(request, "complete", params, include_usage)

    async def _generate(self, request: Request, method: str, params: ChatParams | CompleteParams, include_usage: bool) -> Response:
        chat = method == "chat"
        rid = out.new_id("chatcmpl" if chat else "cmpl")
        created = out.now()
        exchange = await self.daemon.open(method, params)
        if not params.stream:

            async def collect() -> GenerationResult:
                while not isinstance(item := await exchange.next(), msgspec.Raw):
                    pass
                return msgspec.json.decode(bytes(item), type=GenerationResult)

            try:
                result = await until_disconnect(request, collect)
            finally:
                await exchange.aclose()
            return json_response(out.chat_completion(rid, created, result) if chat else out.text_completion(rid, created, result))
        try:
            first = await exchange.next()  # load and validation errors still get a proper status
        except BaseException:
            await exchange.aclose()
            raise
        events = _chat_events if chat else _text_events
        return EventStream(_guarded(events(exchange, first, rid, created, params.model, include_usage)))


async def _stream(exchange: Exchange, first: str | msgspec.Raw) -> AsyncIterator[str | GenerationResult]:
    item = first
    try:
        while True:
            if isinstance(item, msgspec.Raw):
                yield msgspec.json.decode(bytes(item), type=GenerationResult)
                return
            yield item
            item = await exchange.next()
    finally:
        await exchange.aclose()


async def _guarded(events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """End the stream with ``[DONE]``, or with an error event the client raises."""
    try:
        async for event in events:
            yield event
    except ImpetusError as exc:
        yield sse(from_daemon(exc).body())
        return
    except DaemonUnavailable as exc:
        yield sse(unavailable(exc).body())
        return
    yield b"data: [DONE]\n\n"


class _Head(TypedDict):
    """The fields every chunk of one streamed completion repeats."""

    id: str
    created: int
    model: str
    system_fingerprint: str


async def _chat_events(exchange: Exchange, first: str | msgspec.Raw, rid: str, created: int, model: str, include_usage: bool) -> AsyncIterator[bytes]:
    usage: Any = None if include_usage else out.NOT_GIVEN
    head = _Head(id=rid, created=created, model=model, system_fingerprint=out.fingerprint())
    yield sse(out.ChatCompletionChunk(choices=[out.ChunkChoice(index=0, delta=out.Delta(role="assistant", content=""))], usage=usage, **head))
    async for item in _stream(exchange, first):
        if isinstance(item, GenerationResult):
            head["model"] = item.model
            ext = out.ImpetusExtension(backend=item.backend, timings=item.timings)
            yield sse(
                out.ChatCompletionChunk(
                    choices=[out.ChunkChoice(index=0, delta=out.Delta(), finish_reason=out.finish(item.finish_reason))], usage=usage, impetus=ext, **head
                )
            )
            if include_usage:
                yield sse(out.ChatCompletionChunk(choices=[], usage=out.usage_of(item.usage), **head))
            continue  # the result is the last item
        yield sse(out.ChatCompletionChunk(choices=[out.ChunkChoice(index=0, delta=out.Delta(content=item))], usage=usage, **head))


async def _text_events(exchange: Exchange, first: str | msgspec.Raw, rid: str, created: int, model: str, include_usage: bool) -> AsyncIterator[bytes]:
    usage: Any = None if include_usage else out.NOT_GIVEN
    head = _Head(id=rid, created=created, model=model, system_fingerprint=out.fingerprint())
    async for item in _stream(exchange, first):
        if isinstance(item, GenerationResult):
            head["model"] = item.model
            ext = out.ImpetusExtension(backend=item.backend, timings=item.timings)
            yield sse(
                out.TextCompletion(choices=[out.TextChoice(index=0, text="", finish_reason=out.finish(item.finish_reason))], usage=usage, impetus=ext, **head)
            )
            if include_usage:
                yield sse(out.TextCompletion(choices=[], usage=out.usage_of(item.usage), **head))
            continue  # the result is the last item
        yield sse(out.TextCompletion(choices=[out.TextChoice(index=0, text=item)], usage=usage, **head))


class CountRequests:
    """Counts answered requests by route template and status (bounded labels)."""

    def __init__(self, app: ASGIApp, http: HttpMetrics) -> None:
        self.app = app
        self.http = http

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in ROUTES else ("/v1/models/{model}" if path.startswith("/v1/models/") else "other")
        status = [0]

        async def record(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            self.http.requests.labels(route, scope["method"], str(status[0] or 499)).inc()


async def _openai_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, OpenAIError):
        err = exc
    elif isinstance(exc, ImpetusError):
        err = from_daemon(exc)
    elif isinstance(exc, DaemonUnavailable):
        err = unavailable(exc)
    elif isinstance(exc, ClientGone):
        return Response(status_code=499)
    else:
        err = OpenAIError(500, f"internal error in the shim: {type(exc).__name__}: {exc}", code="internal_error")
    return json_response(err.body(), err.status)


def create_app(settings: Settings) -> Starlette:
    # The other APIs' modules import this one's helpers, so they are imported here.
    from . import anthropic, dashboard, ollama, openai_responses, tokenize
    from .keys import KeyedPaths

    shim = Shim(settings)
    routes = [
        Route("/v1/models", shim.models, methods=["GET"]),
        Route("/v1/models/{model:path}", shim.model, methods=["GET"]),
        Route("/v1/chat/completions", shim.chat_completions, methods=["POST"]),
        Route("/v1/completions", shim.completions, methods=["POST"]),
        Route("/v1/embeddings", shim.embeddings, methods=["POST"]),
        Route("/health", shim.health, methods=["GET"]),
        Route("/metrics", shim.metrics, methods=["GET"]),
        *anthropic.routes(shim.daemon),
        *openai_responses.routes(shim.daemon),
        *tokenize.routes(shim.daemon),
        *ollama.routes(shim.daemon),
        *dashboard.routes(shim.daemon),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts or ["*"]), Middleware(dashboard.BrowserRoot)]
    if settings.allow_origins:
        middleware.append(
            Middleware(CORSMiddleware, allow_origins=settings.allow_origins, allow_methods=["GET", "POST"], allow_headers=["authorization", "content-type"])
        )
    middleware.append(Middleware(CrossSiteMiddleware, allow_origins=settings.allow_origins))
    if settings.api_key:
        middleware.append(Middleware(KeyedPaths, api_key=settings.api_key))
        middleware.append(Middleware(ApiKeyMiddleware, api_key=settings.api_key))
    middleware.append(Middleware(CountRequests, http=shim.http))
    handlers: dict[Any, Any] = {cls: _openai_error for cls in (OpenAIError, ImpetusError, DaemonUnavailable, ClientGone, Exception)}
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)
    app.state.shim = shim
    return app
