"""OpenAI's Responses API: ``/v1/responses`` (and a refusal to retrieve one, since
nothing is stored). Every failure is answered in OpenAI's error shape."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ...aclient import AsyncDaemon
from ..generation import generate, stream
from ..http import EventStream, answering, json_response, read_body
from ..openai.wire import OpenAIError
from .stream import events
from .translate import chat_params, error_of, output_of, status_of
from .wire import Shape

route = answering(error_of)  # every failure in OpenAI's shape, ``format`` as ``text.format``


def routes(daemon: AsyncDaemon) -> list[Route]:
    async def create(request: Request) -> Response:
        body = await read_body(request, dict[str, Any])
        params = chat_params(body)
        shape = Shape(body)
        if not params.stream:
            result = await generate(request, daemon, params)
            return json_response(shape.response(status_of(result), result.model, output_of(result.message), result))
        return EventStream(events(await stream(daemon, params), shape, params.model))

    async def refuse_retrieval(request: Request) -> Response:
        raise OpenAIError(404, "this shim is stateless and stores no responses", param="response_id", code="not_found")

    return [
        Route("/v1/responses", route(create), methods=["POST"]),
        Route("/v1/responses/{response_id}", route(refuse_retrieval), methods=["GET", "DELETE"]),
    ]
