"""OpenAI's routes: ``/v1/models``, ``/v1/chat/completions``, ``/v1/completions``,
``/v1/embeddings``. Every failure is answered in OpenAI's error shape."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from impetusd.protocol.api import ChatParams, CompleteParams, DaemonInfo, EmbedResult, ModelList

from ...aclient import AsyncDaemon
from ..generation import generate, stream
from ..http import EventStream, answering, json_response, read_body, until_disconnect
from . import translate
from .stream import events
from .translate import error_of
from .wire import ChatCompletionRequest, CompletionRequest, EmbeddingRequest, InvalidRequest, OpenAIError

route = answering(error_of)  # every failure in OpenAI's shape


class OpenAI:
    def __init__(self, daemon: AsyncDaemon) -> None:
        self.daemon = daemon

    async def models(self, request: Request) -> Response:
        listing = await self.daemon.call("models.list", type=ModelList)
        info = await self.daemon.call("daemon.info", type=DaemonInfo)
        return json_response(translate.model_cards(listing.models, info.started_at))

    async def model(self, request: Request) -> Response:
        wanted = request.path_params["model"]
        listing = await self.daemon.call("models.list", type=ModelList)
        info = await self.daemon.call("daemon.info", type=DaemonInfo)
        for card in translate.model_cards(listing.models, info.started_at).data:
            if card.id == wanted:
                return json_response(card)
        raise OpenAIError(404, f"model {wanted!r} not found", param="model", code="model_not_found")

    async def embeddings(self, request: Request) -> Response:
        body = await read_body(request, EmbeddingRequest)
        params = translate.embed_params(body)
        result = await until_disconnect(request, lambda: self.daemon.call("embed", params, type=EmbedResult))
        width = len(result.embeddings[0]) if result.embeddings else 0
        if body.dimensions is not None and body.dimensions != width:
            raise InvalidRequest(
                f"this model's embeddings have {width} dimensions; dimensions={body.dimensions} cannot be honoured",
                param="dimensions",
                code="unsupported_parameter",
            )
        return json_response(translate.embedding_list(result, body.encoding_format))

    async def chat_completions(self, request: Request) -> Response:
        body = await read_body(request, ChatCompletionRequest)
        params = translate.chat_params(body)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await self._generate(request, params, include_usage)

    async def completions(self, request: Request) -> Response:
        body = await read_body(request, CompletionRequest)
        params = translate.complete_params(body)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await self._generate(request, params, include_usage)

    async def _generate(self, request: Request, params: ChatParams | CompleteParams, include_usage: bool) -> Response:
        chat = isinstance(params, ChatParams)
        rid = translate.new_id("chatcmpl" if chat else "cmpl")
        created = translate.now()
        if not params.stream:
            result = await generate(request, self.daemon, params)
            return json_response(translate.chat_completion(rid, created, result) if chat else translate.text_completion(rid, created, result))
        items = await stream(self.daemon, params)
        return EventStream(events(items, chat=chat, rid=rid, created=created, model=params.model, n=params.n, include_usage=include_usage))


def routes(daemon: AsyncDaemon) -> list[Route]:
    api = OpenAI(daemon)
    return [
        Route("/v1/models", route(api.models), methods=["GET"]),
        Route("/v1/models/{model:path}", route(api.model), methods=["GET"]),
        Route("/v1/chat/completions", route(api.chat_completions), methods=["POST"]),
        Route("/v1/completions", route(api.completions), methods=["POST"]),
        Route("/v1/embeddings", route(api.embeddings), methods=["POST"]),
    ]
