"""Ollama's native API (``/api/*``, and ``/``'s "Ollama is running"). Every failure
is answered in Ollama's error shape."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from impetusd.protocol.api import (
    ChatParams,
    CompleteParams,
    EmbedParams,
    EmbedResult,
    LoadedList,
    LoadParams,
    ModelInfo,
    ModelList,
    PullResult,
    RemoveResult,
    UnloadParams,
)
from impetusd.protocol.errors import ImpetusError
from impetusd.protocol.version import __version__

from ...aclient import AsyncDaemon, Exchange
from ..generation import generate, stream
from ..http import NdjsonStream, answering, json_response, read_body, until_disconnect
from .stream import errors_as_lines, generate_lines, pull_lines
from .translate import (
    chat_params,
    embed_of,
    error_of,
    final,
    generate_params,
    model_name,
    name_of,
    piece,
    ps_of,
    refuse_not_yet,
    show_of,
    tagged,
    tags_of,
)
from .wire import (
    ChatRequest,
    CopyRequest,
    EmbeddingResponse,
    EmbeddingsRequest,
    EmbedRequest,
    GenerateRequest,
    NameRequest,
    OllamaBadRequest,
    PullStatus,
    Version,
)

T = TypeVar("T")
# The Ollama API level these routes follow (clients gate features on it).
OLLAMA_VERSION = "0.6.3"
route = answering(error_of)  # every failure in Ollama's shape


async def _body(request: Request, kind: type[T]) -> T:
    return await read_body(request, kind, empty=b"{}")


class Ollama:
    def __init__(self, daemon: AsyncDaemon) -> None:
        self.daemon = daemon

    # --- models ------------------------------------------------------------------
    async def version(self, request: Request) -> Response:
        return json_response(Version(version=OLLAMA_VERSION, impetus=__version__))

    async def root(self, request: Request) -> Response:
        return Response("Ollama is running", media_type="text/plain")

    async def tags(self, request: Request) -> Response:
        return json_response(tags_of(await self.daemon.call("models.list", type=ModelList)))

    async def ps(self, request: Request) -> Response:
        return json_response(ps_of(await self.daemon.call("models.loaded", type=LoadedList)))

    async def show(self, request: Request) -> Response:
        name = name_of(await _body(request, NameRequest))
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
        return json_response(show_of(name, fmt, path, meta, created))

    async def delete(self, request: Request) -> Response:
        body = await _body(request, NameRequest)
        await self.daemon.call("models.remove", {"model": name_of(body)}, type=RemoveResult)
        return Response(status_code=200)

    async def copy(self, request: Request) -> Response:
        body = await _body(request, CopyRequest)
        await self.daemon.call("models.copy", {"source": model_name(body.source), "destination": model_name(body.destination)}, type=ModelInfo)
        return Response(status_code=200)

    async def pull(self, request: Request) -> Response:
        body = await _body(request, NameRequest)
        refuse_not_yet(body)
        exchange = await self.daemon.open("models.pull", {"model": name_of(body)})
        if not body.stream:
            try:
                await until_disconnect(request, lambda: _pull_result(exchange))
            finally:
                await exchange.aclose()
            return json_response(PullStatus(status="success"))
        try:
            first = await exchange.next_event()  # a name that does not resolve still gets its status
        except BaseException:
            await exchange.aclose()
            raise
        return NdjsonStream(errors_as_lines(pull_lines(exchange, first)))

    # --- generation --------------------------------------------------------------
    async def chat(self, request: Request) -> Response:
        body = await _body(request, ChatRequest)
        params = chat_params(body)
        if not params.messages:
            return await self._load_or_unload(params.model, body.keep_alive, chat=True)
        return await self._generate(request, params, chat=True)

    async def generate(self, request: Request) -> Response:
        body = await _body(request, GenerateRequest)
        params = generate_params(body)
        if not body.prompt and not body.system:
            return await self._load_or_unload(params.model, body.keep_alive, chat=False)
        return await self._generate(request, params, chat=False)

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
        return json_response(piece(chat, tagged(model), "", done=True, done_reason=reason))

    async def _generate(self, request: Request, params: ChatParams | CompleteParams, *, chat: bool) -> Response:
        if not params.stream:
            return json_response(final(chat, await generate(request, self.daemon, params), whole=True))
        items = await stream(self.daemon, params)
        return NdjsonStream(errors_as_lines(generate_lines(items, chat, tagged(params.model))))

    # --- embeddings --------------------------------------------------------------
    async def embed(self, request: Request) -> Response:
        body = await _body(request, EmbedRequest)
        refuse_not_yet(body)
        _no_options(body.options)
        params = EmbedParams(model=model_name(body.model), input=body.input, keep_alive=body.keep_alive)
        result = await until_disconnect(request, lambda: self.daemon.call("embed", params, type=EmbedResult))
        return json_response(embed_of(result))

    async def embeddings(self, request: Request) -> Response:
        body = await _body(request, EmbeddingsRequest)
        _no_options(body.options)
        params = EmbedParams(model=model_name(body.model), input=[body.prompt], keep_alive=body.keep_alive)
        result = await until_disconnect(request, lambda: self.daemon.call("embed", params, type=EmbedResult))
        return json_response(EmbeddingResponse(embedding=result.embeddings[0] if result.embeddings else []))


def _no_options(options: dict[str, Any] | None) -> None:
    for key, value in (options or {}).items():
        if value is not None:
            raise OllamaBadRequest(f"option '{key}' does not apply to embeddings in Impetus", f"options.{key}")


async def _pull_result(exchange: Exchange) -> PullResult:
    while not isinstance(item := await exchange.next(), msgspec.Raw):
        pass
    return msgspec.json.decode(bytes(item), type=PullResult)


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
