"""Ollama's native API (``/api/*``) over the daemon's socket.

Streaming (Ollama's default) is NDJSON: one object per line, the last with
``done: true``, ``done_reason`` and the counters in nanoseconds. Errors are
``{"error": "..."}`` with Ollama's status codes.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from impetusd import __version__
from impetusd.protocol.api import (
    ChatParams,
    Chunk,
    CompleteParams,
    EmbedParams,
    EmbedResult,
    GenerationResult,
    LoadedList,
    LoadParams,
    ModelInfo,
    ModelList,
    PullProgress,
    PullResult,
    RemoveResult,
    Timings,
    TokenLogprob,
    ToolCall,
    UnloadParams,
    Usage,
)
from impetusd.protocol.errors import ImpetusError

from ..aclient import AsyncDaemon, Exchange
from .errors import from_daemon as openai_status
from .generation import EventStream, Item, answering, common_failure, generate, read_body, stream, until_disconnect
from .ollama_api import (
    ChatRequest,
    CopyRequest,
    EmbeddingsRequest,
    EmbedRequest,
    GenerateRequest,
    NameRequest,
    OllamaBadRequest,
    chat_params,
    generate_params,
    model_name,
    refuse_not_yet,
    tagged,
)
from .structured import CallAssembler, arguments_object

T = TypeVar("T")
# The Ollama API level these routes follow (clients gate features on it).
OLLAMA_VERSION = "0.6.3"
_encoder = msgspec.json.Encoder()


class OllamaError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json(obj: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(obj), status_code=status, media_type="application/json")


def _error_of(exc: Exception) -> OllamaError:
    if isinstance(exc, OllamaError):
        return exc
    if isinstance(exc, OllamaBadRequest):
        return OllamaError(400, str(exc))
    if isinstance(exc, ImpetusError):
        status = openai_status(exc).status
        if exc.name in ("ModelNotFound", "ModelNotLoaded"):
            return OllamaError(404, exc.message if "not found" in exc.message else f"model not found: {exc.message}")
        return OllamaError(status if status < 500 else 500, f"{exc.message} [{exc.name}]")
    return OllamaError(*common_failure(exc))


def _error_response(exc: Exception) -> Response:
    err = _error_of(exc)
    return _json({"error": err.message}, err.status)


route = answering(_error_response)  # every failure in Ollama's shape


async def _body(request: Request, kind: type[T]) -> T:
    return await read_body(request, kind, empty=b"{}")


def _stamp(at: float | None = None) -> str:
    return datetime.fromtimestamp(at if at is not None else time.time(), UTC).isoformat().replace("+00:00", "Z")


def _ns(ms: float | None) -> int:
    return int((ms or 0.0) * 1_000_000)


def counters(usage: Usage, timings: Timings) -> dict[str, Any]:
    """Ollama's final counters from Impetus's timings (nanoseconds)."""
    ttft = timings.ttft_ms or 0.0
    # the rate is over the tokens prefilled: a prompt read from the cache took none of that time
    prefilled = usage.prompt_tokens - usage.cached_tokens
    prefill_ms = prefilled / timings.prefill_tps * 1000 if timings.prefill_tps else max(ttft - timings.load_ms - timings.queued_ms, 0.0)
    decode_ms = usage.completion_tokens / timings.decode_tps * 1000 if timings.decode_tps else max(timings.total_ms - ttft, 0.0)
    prefill_ms, decode_ms = min(prefill_ms, timings.total_ms), min(decode_ms, timings.total_ms)  # rates of one phase of several
    return {
        "total_duration": _ns(timings.total_ms),
        "load_duration": _ns(timings.load_ms),
        "prompt_eval_count": usage.prompt_tokens,
        "prompt_eval_duration": _ns(prefill_ms),
        "eval_count": usage.completion_tokens,
        "eval_duration": _ns(decode_ms),
    }


def _reason(result: GenerationResult) -> str:
    return "length" if result.finish_reason == "length" else "stop"


def _calls(calls: list[ToolCall]) -> list[dict[str, Any]]:
    """Ollama's tool calls: arguments as an object."""
    return [{"id": c.id, "function": {"index": i, "name": c.name, "arguments": arguments_object(c)}} for i, c in enumerate(calls)]


def _piece(
    chat: bool,
    model: str,
    text: str,
    *,
    thinking: str | None = None,
    calls: list[ToolCall] | None = None,
    logprobs: list[TokenLogprob] | None = None,
) -> dict[str, Any]:
    head: dict[str, Any] = {"model": model, "created_at": _stamp()}
    if chat:
        head["message"] = {"role": "assistant", "content": text}
        if thinking:
            head["message"]["thinking"] = thinking
        if calls:
            head["message"]["tool_calls"] = _calls(calls)
    else:
        head["response"] = text
        if thinking:
            head["thinking"] = thinking
    if logprobs is not None:
        head["logprobs"] = msgspec.to_builtins(logprobs)
    head["done"] = False
    return head


def _final(chat: bool, result: GenerationResult, whole: bool) -> dict[str, Any]:
    """The last object; ``whole``: it carries the answer too (not streamed)."""
    m = result.message
    if whole:
        text = m.content if m else (result.text or "")
        out = _piece(chat, tagged(result.model), text, thinking=m.reasoning if m else None, calls=m.tool_calls if m else None, logprobs=result.logprobs)
    else:
        out = _piece(chat, tagged(result.model), "")
    if not chat:
        out["context"] = []
    out.update(done=True, done_reason=_reason(result), **counters(result.usage, result.timings))
    return out


class NdjsonStream(EventStream):
    """NDJSON lines that stop (and close the daemon request) when the client goes away."""

    def __init__(self, content: AsyncIterator[bytes]) -> None:
        super().__init__(content, media_type="application/x-ndjson")


def _line(obj: Any) -> bytes:
    return _encoder.encode(obj) + b"\n"


async def _errors_as_lines(lines: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """A failure after the stream began: one ``{"error": ...}`` line, as Ollama sends."""
    try:
        async for line in lines:
            yield line
    except Exception as exc:
        yield _line({"error": _error_of(exc).message})


class Ollama:
    def __init__(self, daemon: AsyncDaemon) -> None:
        self.daemon = daemon

    # --- models ------------------------------------------------------------------
    async def version(self, request: Request) -> Response:
        return _json({"version": OLLAMA_VERSION, "impetus": __version__})

    async def root(self, request: Request) -> Response:
        return Response("Ollama is running", media_type="text/plain")

    async def tags(self, request: Request) -> Response:
        listing = await self.daemon.call("models.list", type=ModelList)
        models = []
        for e in listing.models:
            if not e.available:
                continue
            meta = e.metadata or {}
            models.append(
                {
                    "name": tagged(e.name),
                    "model": tagged(e.name),
                    "modified_at": _stamp(meta.get("created_at") if isinstance(meta.get("created_at"), float) else None),
                    "size": e.size_bytes or 0,
                    "digest": str(meta.get("digest") or ""),
                    "details": _details(e.format, meta),
                }
            )
        return _json({"models": models})

    async def ps(self, request: Request) -> Response:
        loaded = await self.daemon.call("models.loaded", type=LoadedList)
        models = []
        for m in loaded.models:
            expires = m.expires_at if m.expires_at is not None else time.time() + 100 * 365 * 86400
            models.append(
                {
                    "name": tagged(m.name),
                    "model": tagged(m.name),
                    "size": m.memory_bytes,
                    "digest": "",
                    "details": _details(m.format, {}),
                    "expires_at": _stamp(expires),
                    "size_vram": m.memory_bytes if m.backend == "mlx" else 0,
                    "context_length": m.estimate.context_tokens if m.estimate else 0,
                }
            )
        return _json({"models": models})

    async def show(self, request: Request) -> Response:
        body = await _body(request, NameRequest)
        name = body.ref()
        try:
            info = await self.daemon.call("models.show", {"model": name}, type=ModelInfo)
            fmt, path, meta, created = info.format, info.path, info.metadata, info.created_at
        except ImpetusError as exc:
            if exc.name != "ModelNotFound":
                raise
            # A catalog alias (the bundled model) is listed but not registered.
            listing = await self.daemon.call("models.list", type=ModelList)
            entry = next((e for e in listing.models if e.name == name and e.available), None)
            if entry is None:
                raise
            fmt, path, meta, created = entry.format or "", entry.path or "", entry.metadata, None
        return _json(
            {
                "modelfile": f"# Impetus model {name}\nFROM {path}\n",
                "parameters": "",
                "template": "",
                "details": _details(fmt, meta),
                "model_info": {k: v for k, v in meta.items() if isinstance(v, str | int | float | bool)},
                "capabilities": ["completion", "tools"],  # every model: a template without tools gets the fallback
                "modified_at": _stamp(created),
            }
        )

    async def delete(self, request: Request) -> Response:
        body = await _body(request, NameRequest)
        await self.daemon.call("models.remove", {"model": body.ref()}, type=RemoveResult)
        return Response(status_code=200)

    async def copy(self, request: Request) -> Response:
        body = await _body(request, CopyRequest)
        await self.daemon.call("models.copy", {"source": model_name(body.source), "destination": model_name(body.destination)}, type=ModelInfo)
        return Response(status_code=200)

    async def pull(self, request: Request) -> Response:
        body = await _body(request, NameRequest)
        refuse_not_yet(body)
        exchange = await self.daemon.open("models.pull", {"model": body.ref()})
        if not body.stream:
            try:
                await until_disconnect(request, lambda: _pull_result(exchange))
            finally:
                await exchange.aclose()
            return _json({"status": "success"})
        try:
            first = await exchange.next_event()  # a name that does not resolve still gets its status
        except BaseException:
            await exchange.aclose()
            raise
        return NdjsonStream(_errors_as_lines(_pull_lines(exchange, first)))

    # --- generation --------------------------------------------------------------
    async def chat(self, request: Request) -> Response:
        body = await _body(request, ChatRequest)
        params = chat_params(body)
        if not params.messages:
            return await self._load_or_unload(params.model, body.keep_alive, chat=True)
        return await self._generate(request, "chat", params, chat=True)

    async def generate(self, request: Request) -> Response:
        body = await _body(request, GenerateRequest)
        params = generate_params(body)
        if not body.prompt and not body.system:
            return await self._load_or_unload(params.model, body.keep_alive, chat=False)
        return await self._generate(request, "chat" if isinstance(params, ChatParams) else "complete", params, chat=False)

    async def _load_or_unload(self, model: str, keep: float | str | None, chat: bool) -> Response:
        """An empty prompt loads the model (keep_alive 0: unloads it), as in Ollama."""
        if keep is not None and keep in (0, "0", "0s", "0m"):
            try:
                await self.daemon.call("models.unload", UnloadParams(model=model))
            except ImpetusError as exc:
                if exc.name != "ModelNotLoaded":
                    raise
            reason = "unload"
        else:
            await self.daemon.call("models.load", LoadParams(model=model, keep_alive=keep))
            reason = "load"
        out = _piece(chat, tagged(model), "")
        out.update(done=True, done_reason=reason)
        return _json(out)

    async def _generate(self, request: Request, method: str, params: ChatParams | CompleteParams, *, chat: bool) -> Response:
        if not params.stream:
            return _json(_final(chat, await generate(request, self.daemon, params), whole=True))
        items = await stream(self.daemon, params)
        return NdjsonStream(_errors_as_lines(_generate_lines(items, chat, tagged(params.model))))

    # --- embeddings --------------------------------------------------------------
    async def embed(self, request: Request) -> Response:
        body = await _body(request, EmbedRequest)
        refuse_not_yet(body)
        _no_options(body.options)
        params = EmbedParams(model=model_name(body.model), input=body.input, keep_alive=body.keep_alive)
        result = await until_disconnect(request, lambda: self.daemon.call("embed", params, type=EmbedResult))
        return _json(
            {
                "model": tagged(result.model),
                "embeddings": result.embeddings,
                "total_duration": _ns(result.timings.total_ms),
                "load_duration": _ns(result.timings.load_ms),
                "prompt_eval_count": result.usage.prompt_tokens,
            }
        )

    async def embeddings(self, request: Request) -> Response:
        body = await _body(request, EmbeddingsRequest)
        _no_options(body.options)
        params = EmbedParams(model=model_name(body.model), input=[body.prompt], keep_alive=body.keep_alive)
        result = await until_disconnect(request, lambda: self.daemon.call("embed", params, type=EmbedResult))
        return _json({"embedding": result.embeddings[0] if result.embeddings else []})


def _no_options(options: dict[str, Any] | None) -> None:
    for key, value in (options or {}).items():
        if value is not None:
            raise OllamaBadRequest(f"option '{key}' does not apply to embeddings in Impetus", f"options.{key}")


def _details(fmt: str | None, meta: dict[str, Any]) -> dict[str, Any]:
    family = str(meta.get("architecture") or "")
    params = meta.get("parameters")
    return {
        "parent_model": "",
        "format": fmt or "",
        "family": family,
        "families": [family] if family else None,
        "parameter_size": _size_label(params) if isinstance(params, int) else "",
        "quantization_level": str(meta.get("quantization") or ""),
    }


def _size_label(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}".replace(".0", "")
    return str(n)


async def _pull_result(exchange: Exchange) -> PullResult:
    while not isinstance(item := await exchange.next(), msgspec.Raw):
        pass
    return msgspec.json.decode(bytes(item), type=PullResult)


async def _pull_lines(exchange: Exchange, first: Chunk | PullProgress | msgspec.Raw) -> AsyncIterator[bytes]:
    item = first
    totals: dict[str, int] = {}
    try:
        yield _line({"status": "pulling manifest"})
        while True:
            if isinstance(item, msgspec.Raw):
                result = msgspec.json.decode(bytes(item), type=PullResult)
                if result.status == "cancelled":
                    yield _line({"error": "the pull was cancelled"})
                    return
                for name, total in totals.items():  # the last notification may predate the last bytes
                    yield _line({"status": f"pulling {name}", "digest": name, "total": total, "completed": total})
                yield _line({"status": "verifying sha256 digest"})
                yield _line({"status": "writing manifest"})
                yield _line({"status": "success"})
                return
            if isinstance(item, PullProgress):
                if item.status == "downloading":
                    for f in item.files:
                        totals[f.name] = f.total
                        yield _line({"status": f"pulling {f.name}", "digest": f.name, "total": f.total, "completed": f.done})
                else:
                    yield _line({"status": item.status})
            item = await exchange.next_event()
    finally:
        await exchange.aclose()


async def _generate_lines(items: AsyncIterator[Item], chat: bool, model: str) -> AsyncIterator[bytes]:
    """Text and thinking as they come; tool calls whole, in one object before the last
    (as Ollama sends them)."""
    calls = CallAssembler()
    async for item in items:
        if isinstance(item, GenerationResult):
            taken = calls.take()
            if taken:
                yield _line(_piece(chat, model, "", calls=taken))
            yield _line(_final(chat, item, whole=False))
            return
        if item.kind == "tool_call" and item.tool_call is not None:
            calls.add(item.tool_call)
        elif item.kind == "reasoning":
            yield _line(_piece(chat, model, "", thinking=item.delta, logprobs=item.logprobs))
        else:
            yield _line(_piece(chat, model, item.delta, logprobs=item.logprobs))


def routes(daemon: AsyncDaemon) -> list[Route]:
    api = Ollama(daemon)
    return [
        Route("/", route(api.root), methods=["GET", "HEAD"]),
        Route("/api/version", route(api.version), methods=["GET"]),
        Route("/api/tags", route(api.tags), methods=["GET"]),
        Route("/api/ps", route(api.ps), methods=["GET"]),
        Route("/api/show", route(api.show), methods=["POST"]),
        Route("/api/pull", route(api.pull), methods=["POST"]),
        Route("/api/delete", route(api.delete), methods=["DELETE"]),
        Route("/api/copy", route(api.copy), methods=["POST"]),
        Route("/api/chat", route(api.chat), methods=["POST"]),
        Route("/api/generate", route(api.generate), methods=["POST"]),
        Route("/api/embed", route(api.embed), methods=["POST"]),
        Route("/api/embeddings", route(api.embeddings), methods=["POST"]),
    ]
