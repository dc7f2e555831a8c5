"""OpenAI's Responses API (``/v1/responses``), stateless, over the daemon's ``chat``.

Text in (a string or message items, plus ``instructions``), text out, plain or
streamed with the Responses event types. Nothing is stored, so
``previous_response_id`` and ``store: true`` are refused, as are tools,
``text.format`` other than text, and every field this module does not know,
each by name. Errors use OpenAI's error object, as on the other ``/v1`` routes.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from impetusd.protocol.api import ChatParams, GenerationResult, Message
from impetusd.protocol.errors import ImpetusError

from ..aclient import AsyncDaemon, Exchange
from ..client import DaemonUnavailable
from .app import EventStream, json_response, read_json, until_disconnect
from .errors import InvalidRequest, OpenAIError, from_daemon, unavailable

_encoder = msgspec.json.Encoder()
# Fields that are passed on or echoed back.
_USED = {"model", "input", "instructions", "max_output_tokens", "temperature", "top_p", "stream", "metadata", "user", "safety_identifier"}
# Fields accepted at these values only (what they mean is what Impetus does anyway).
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "store": (None, False),
    "tools": (None, []),
    "tool_choice": (None, "none", "auto"),
    "parallel_tool_calls": (None, True, False),
    "truncation": (None, "disabled"),
    "include": (None, []),
    "service_tier": (None, "auto", "default"),
    "top_logprobs": (None, 0),
    "background": (None, False),
    "reasoning": (None,),
    "stream_options": (None, {}),
    "prompt_cache_key": (),  # any value: a hint; Impetus caches prompt prefixes on its own
}
_WHY = {
    "previous_response_id": "this shim is stateless: send the whole conversation in 'input'",
    "store": "this shim is stateless and stores no responses",
    "conversation": "this shim is stateless: send the whole conversation in 'input'",
    "tools": "tool calling is not built yet in Impetus (another issue)",
    "tool_choice": "tool calling is not built yet in Impetus (another issue)",
    "text.format": "structured outputs are not built yet in Impetus (another issue)",
}
_ROLES: dict[str, Literal["user", "assistant", "system"]] = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def _refuse(name: str) -> InvalidRequest:
    why = _WHY.get(name, "not supported by Impetus")
    return InvalidRequest(f"'{name}' is not supported: {why}", param=name, code="unsupported_parameter")


def _check_fields(body: dict[str, Any]) -> None:
    for name, value in body.items():
        if name in _USED or name == "text":
            continue
        if name in _NEUTRAL:
            if _NEUTRAL[name] and value not in _NEUTRAL[name]:
                raise _refuse(name)
            continue
        if value is not None:
            raise _refuse(name)
    text = body.get("text")
    if text is not None:
        if not isinstance(text, dict) or set(text) - {"format", "verbosity"}:
            raise _refuse("text")
        if text.get("format") not in (None, {"type": "text"}):
            raise _refuse("text.format")
        if text.get("verbosity") not in (None, "medium"):
            raise _refuse("text.verbosity")


def _content(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"{where} must be a string or a list of text parts", param=where)
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("input_text", "output_text") or not isinstance(part.get("text"), str):
            raise InvalidRequest(f"{where}[{j}]: '{kind}' parts are not supported; only input_text", param=f"{where}[{j}]", code="unsupported_parameter")
        texts.append(part["text"])
    return "".join(texts)


def messages_of(body: dict[str, Any]) -> list[Message]:
    out: list[Message] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise InvalidRequest("instructions must be a string", param="instructions")
        out.append(Message(role="system", content=instructions))
    given = body.get("input")
    if isinstance(given, str):
        out.append(Message(role="user", content=given))
        return out
    if not isinstance(given, list) or not given:
        raise InvalidRequest("input must be a string or a non-empty list of message items", param="input")
    for i, item in enumerate(given):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{where} must be a message item", param=where)
        kind = item.get("type", "message")
        if kind != "message":
            raise InvalidRequest(f"{where}: '{kind}' items are not supported; only messages", param=f"{where}.type", code="unsupported_parameter")
        extra = set(item) - {"type", "role", "content", "id", "status"}
        if extra:
            raise InvalidRequest(f"{where}: '{sorted(extra)[0]}' is not supported", param=f"{where}.{sorted(extra)[0]}", code="unsupported_parameter")
        role = _ROLES.get(item.get("role", ""))
        if role is None:
            raise InvalidRequest(f"{where}.role must be one of {', '.join(_ROLES)}", param=f"{where}.role")
        out.append(Message(role=role, content=_content(item.get("content"), f"{where}.content")))
    return out


def chat_params(body: dict[str, Any]) -> ChatParams:
    _check_fields(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model is required", param="model")
    limit = body.get("max_output_tokens")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise InvalidRequest("max_output_tokens must be a positive integer", param="max_output_tokens")
    return ChatParams(
        model=model,
        messages=messages_of(body),
        max_tokens=limit,
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        stream=bool(body.get("stream")),
    )


class _Shape:
    """One response's ids and echoed request fields."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.id = f"resp_{secrets.token_hex(12)}"
        self.item = f"msg_{secrets.token_hex(12)}"
        self.created = int(time.time())
        self.body = body
        self.seq = 0

    def response(self, status: str, model: str, text: str | None, result: GenerationResult | None) -> dict[str, Any]:
        b = self.body
        out: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "model": model,
            "output": [self.message(text, "completed")] if text is not None else [],
            "error": None,
            "incomplete_details": None,
            "instructions": b.get("instructions"),
            "max_output_tokens": b.get("max_output_tokens"),
            "metadata": b.get("metadata") or {},
            "parallel_tool_calls": True,
            "previous_response_id": None,
            "store": False,
            "temperature": b.get("temperature", 1.0),
            "top_p": b.get("top_p", 1.0),
            "text": {"format": {"type": "text"}},
            "tool_choice": "auto",
            "tools": [],
            "truncation": "disabled",
            "usage": None,
        }
        if result is not None:
            u = result.usage
            out["usage"] = {
                "input_tokens": u.prompt_tokens,
                "input_tokens_details": {"cached_tokens": u.cached_tokens},
                "output_tokens": u.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": u.prompt_tokens + u.completion_tokens,
            }
            if result.finish_reason == "length":
                out["incomplete_details"] = {"reason": "max_output_tokens"}
        return out

    def message(self, text: str | None, status: str) -> dict[str, Any]:
        content = [] if text is None else [self.part(text)]
        return {"id": self.item, "type": "message", "status": status, "role": "assistant", "content": content}

    @staticmethod
    def part(text: str) -> dict[str, Any]:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def event(self, kind: str, **data: Any) -> bytes:
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + _encoder.encode({"type": kind, "sequence_number": self.seq - 1, **data}) + b"\n\n"


def _status(result: GenerationResult) -> str:
    return "incomplete" if result.finish_reason == "length" else "completed"


async def _events(exchange: Exchange, first: str | msgspec.Raw, shape: _Shape, model: str) -> AsyncIterator[bytes]:
    item = first
    at = {"item_id": shape.item, "output_index": 0, "content_index": 0}
    texts: list[str] = []
    try:
        yield shape.event("response.created", response=shape.response("in_progress", model, None, None))
        yield shape.event("response.in_progress", response=shape.response("in_progress", model, None, None))
        yield shape.event("response.output_item.added", output_index=0, item=shape.message(None, "in_progress"))
        yield shape.event("response.content_part.added", part=shape.part(""), **at)
        while not isinstance(item, msgspec.Raw):
            texts.append(item)
            yield shape.event("response.output_text.delta", delta=item, logprobs=[], **at)
            item = await exchange.next()
        result = msgspec.json.decode(bytes(item), type=GenerationResult)
        text = "".join(texts)
        yield shape.event("response.output_text.done", text=text, logprobs=[], **at)
        yield shape.event("response.content_part.done", part=shape.part(text), **at)
        yield shape.event("response.output_item.done", output_index=0, item=shape.message(text, "completed"))
        status = _status(result)
        yield shape.event(f"response.{status}", response=shape.response(status, result.model, text, result))
    except (ImpetusError, DaemonUnavailable) as exc:
        err = from_daemon(exc) if isinstance(exc, ImpetusError) else unavailable(exc)
        yield shape.event("error", code=err.code, message=err.message, param=err.param)
    finally:
        await exchange.aclose()


def routes(daemon: AsyncDaemon) -> list[Route]:
    async def create(request: Request) -> Response:
        body = await read_json(request, dict[str, Any])
        params = chat_params(body)
        shape = _Shape(body)
        exchange = await daemon.open("chat", params)
        if not params.stream:

            async def collect() -> GenerationResult:
                while not isinstance(item := await exchange.next(), msgspec.Raw):
                    pass
                return msgspec.json.decode(bytes(item), type=GenerationResult)

            try:
                result = await until_disconnect(request, collect)
            finally:
                await exchange.aclose()
            text = result.message.content if result.message else ""
            return json_response(shape.response(_status(result), result.model, text, result))
        try:
            first = await exchange.next()  # load and validation errors still get a proper status
        except BaseException:
            await exchange.aclose()
            raise
        return EventStream(_events(exchange, first, shape, params.model))

    async def refuse_retrieval(request: Request) -> Response:
        raise OpenAIError(404, "this shim is stateless and stores no responses", param="response_id", code="not_found")

    return [
        Route("/v1/responses", create, methods=["POST"]),
        Route("/v1/responses/{response_id}", refuse_retrieval, methods=["GET", "DELETE"]),
    ]
