"""``/tokenize`` and ``/detokenize``: the daemon's methods of the same names over
HTTP (its params and results as they are; errors in OpenAI's shape)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from impetusd.protocol.api import DetokenizeParams, DetokenizeResult, TokenizeParams, TokenizeResult

from ..aclient import AsyncDaemon
from .app import json_response, read_json, until_disconnect


def routes(daemon: AsyncDaemon) -> list[Route]:
    async def tokenize(request: Request) -> Response:
        params = await read_json(request, TokenizeParams)
        return json_response(await until_disconnect(request, lambda: daemon.call("tokenize", params, type=TokenizeResult)))

    async def detokenize(request: Request) -> Response:
        params = await read_json(request, DetokenizeParams)
        return json_response(await until_disconnect(request, lambda: daemon.call("detokenize", params, type=DetokenizeResult)))

    return [Route("/tokenize", tokenize, methods=["POST"]), Route("/detokenize", detokenize, methods=["POST"])]
