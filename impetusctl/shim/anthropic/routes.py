"""Anthropic's Messages API: ``/v1/messages``, ``/v1/messages/count_tokens``. Every
failure is answered in Anthropic's error shape."""

from __future__ import annotations

import json
import secrets
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from impetusd.protocol.api import TokenizeResult

from ...aclient import AsyncDaemon
from ..generation import generate, stream
from ..http import EventStream, answering, json_response, read_body, until_disconnect
from .stream import events
from .translate import chat_params, content_of, error_of, message_of, messages_of, refuse, tools_of
from .wire import MessagesRequest, _Input

route = answering(error_of)  # every failure in Anthropic's shape


class Anthropic:
    def __init__(self, daemon: AsyncDaemon) -> None:
        self.daemon = daemon

    async def messages(self, request: Request) -> Response:
        body = await read_body(request, MessagesRequest)
        params = chat_params(body)
        mid = f"msg_{secrets.token_hex(12)}"
        if not body.stream:
            result = await generate(request, self.daemon, params)
            return json_response(message_of(mid, result.model, content_of(result.message), result))
        return EventStream(events(await stream(self.daemon, params), mid, body.model))

    async def count_tokens(self, request: Request) -> Response:
        body = await read_body(request, _Input)
        refuse(body)
        params: dict[str, Any] = {"model": body.model, "messages": [msgspec.to_builtins(m) for m in messages_of(body)]}
        tools = tools_of(body.tools)
        if tools:  # the daemon counts what the template renders; tools listed as the fallback would be
            params["messages"].insert(0, {"role": "system", "content": json.dumps([msgspec.to_builtins(t) for t in tools])})
        result = await until_disconnect(request, lambda: self.daemon.call("tokenize", params, type=TokenizeResult))
        return json_response({"input_tokens": result.count})


def routes(daemon: AsyncDaemon) -> list[Route]:
    api = Anthropic(daemon)
    return [
        Route("/v1/messages", route(api.messages), methods=["POST"]),
        Route("/v1/messages/count_tokens", route(api.count_tokens), methods=["POST"]),
    ]
