"""The Starlette application: OpenAI routes over the daemon's socket."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypedDict, TypeVar

import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from impetusd.protocol.api import ChatParams, Chunk, CompleteParams, DaemonInfo, EmbedResult, GenerationResult, Health, Metrics, ModelList
from impetusd.protocol.errors import ImpetusError

from ..aclient import AsyncDaemon
from ..client import DaemonUnavailable
from . import responses as out
from .errors import InvalidRequest, OpenAIError, from_daemon, unavailable
from .generation import MAX_BODY, BadBody, ClientGone, EventStream, Item, generate, read_body, stream, until_disconnect
from .metrics import HttpMetrics, render
from .requests import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, chat_params, complete_params, embed_params
from .security import ApiKeyMiddleware, CrossSiteMiddleware

T = TypeVar("T")
__all__ = ["MAX_BODY", "ClientGone", "EventStream", "until_disconnect"]  # for the other APIs' modules
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
# The daemon's field names that OpenAI's API spells otherwise.
RENAMED = {"format.schema": "response_format.json_schema.schema", "format": "response_format"}


class Settings(msgspec.Struct, frozen=True):
    socket: str
    api_key: str | None = None
    allowed_hosts: list[str] = []
    allow_origins: list[str] = []


def json_response(obj: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(obj), status_code=status, media_type="application/json")


async def read_json(request: Request, kind: type[T]) -> T:
    try:
        return await read_body(request, kind)
    except BadBody as exc:
        raise openai_error(exc) from None


def openai_error(exc: BadBody) -> OpenAIError:
    if exc.status == 413:
        return OpenAIError(413, exc.message, code="request_too_large", type="invalid_request_error")
    return InvalidRequest(exc.message, param=exc.param)


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
        if not params.stream:
            result = await generate(request, self.daemon, params)
            return json_response(out.chat_completion(rid, created, result) if chat else out.text_completion(rid, created, result))
        items = await stream(self.daemon, params)
        head = _Head(id=rid, created=created, model=params.model, system_fingerprint=out.fingerprint())
        events = _chat_events(items, head, params.n, include_usage) if chat else _text_events(items, head, include_usage)
        return EventStream(_guarded(events))


async def _guarded(events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """End the stream with ``[DONE]``, or with an error event the client raises."""
    try:
        async for event in events:
            yield event
    except ImpetusError as exc:
        yield sse(from_daemon(exc, RENAMED).body())
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


def _delta(chunk: Chunk) -> out.Delta:
    """A typed chunk → OpenAI's delta: content, reasoning_content, or a tool call's
    piece (the first with index, id, type and name and empty arguments)."""
    if chunk.kind == "reasoning":
        return out.Delta(reasoning_content=chunk.delta)
    if chunk.kind == "tool_call" and chunk.tool_call is not None:
        t = chunk.tool_call
        if t.id is not None:
            return out.Delta(
                tool_calls=[out.DeltaToolCall(index=t.index, id=t.id, type="function", function=out.FunctionCall(name=t.name or "", arguments=""))]
            )
        return out.Delta(tool_calls=[out.DeltaToolCall(index=t.index, function=out.FunctionCall(arguments=t.arguments))])
    return out.Delta(content=chunk.delta)


async def _chat_events(items: AsyncIterator[Item], head: _Head, n: int, include_usage: bool) -> AsyncIterator[bytes]:
    usage: Any = None if include_usage else out.NOT_GIVEN

    def one(choice: int, delta: out.Delta, **more: Any) -> bytes:
        return sse(out.ChatCompletionChunk(choices=[out.ChunkChoice(index=choice, delta=delta, **more)], usage=usage, **head))

    for i in range(n):
        yield one(i, out.Delta(role="assistant", content=""))
    async for item in items:
        if isinstance(item, GenerationResult):
            head["model"] = item.model
            ext = out.ImpetusExtension(backend=item.backend, timings=item.timings, warning=item.warning)
            ends = [out.ChunkChoice(index=c.index, delta=out.Delta(), finish_reason=out.finish(c.finish_reason)) for c in out.choices_of(item)]
            yield sse(out.ChatCompletionChunk(choices=ends, usage=usage, impetus=ext, **head))
            if include_usage:
                yield sse(out.ChatCompletionChunk(choices=[], usage=out.usage_of(item.usage), **head))
            continue  # the result is the last item
        t = item.tool_call
        if t is not None and t.id is not None and t.arguments:  # a first piece that carries arguments too: two deltas, as OpenAI sends
            yield one(item.choice, _delta(item))
            item = Chunk(
                id=item.id, delta="", kind="tool_call", choice=item.choice, tool_call=type(t)(index=t.index, arguments=t.arguments), logprobs=item.logprobs
            )
        yield one(item.choice, _delta(item), logprobs=out.chat_logprobs(item.logprobs))


async def _text_events(items: AsyncIterator[Item], head: _Head, include_usage: bool) -> AsyncIterator[bytes]:
    usage: Any = None if include_usage else out.NOT_GIVEN
    offsets: dict[int, int] = {}
    async for item in items:
        if isinstance(item, GenerationResult):
            head["model"] = item.model
            ext = out.ImpetusExtension(backend=item.backend, timings=item.timings, warning=item.warning)
            ends = [out.TextChoice(index=c.index, text="", finish_reason=out.finish(c.finish_reason)) for c in out.choices_of(item)]
            yield sse(out.TextCompletion(choices=ends, usage=usage, impetus=ext, **head))
            if include_usage:
                yield sse(out.TextCompletion(choices=[], usage=out.usage_of(item.usage), **head))
            continue  # the result is the last item
        at = offsets.get(item.choice, 0)
        offsets[item.choice] = at + len(item.delta)
        logprobs = out.legacy_logprobs(item.logprobs, at)
        yield sse(out.TextCompletion(choices=[out.TextChoice(index=item.choice, text=item.delta, logprobs=logprobs)], usage=usage, **head))


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
    elif isinstance(exc, BadBody):
        err = openai_error(exc)
    elif isinstance(exc, ImpetusError):
        err = from_daemon(exc, RENAMED)
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
    handlers: dict[Any, Any] = {cls: _openai_error for cls in (OpenAIError, BadBody, ImpetusError, DaemonUnavailable, ClientGone, Exception)}
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)
    app.state.shim = shim
    return app
