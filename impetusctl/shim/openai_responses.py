"""OpenAI's Responses API (``/v1/responses``), stateless, over the daemon's ``chat``.

Input as a string or items (messages, ``function_call``, ``function_call_output``,
``reasoning``), plus ``instructions``; function ``tools``, ``tool_choice``,
``parallel_tool_calls`` and ``text.format`` (json_object, json_schema). Output
items (reasoning, message, function_call) plain or streamed with the Responses
event types. Nothing is stored, so ``previous_response_id`` and ``store: true``
are refused, as is every field this module does not know, each by name. Errors
use OpenAI's error object, as on the other ``/v1`` routes.
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

from impetusd.protocol.api import ChatParams, Chunk, Format, GenerationResult, Message, Tool, ToolCall
from impetusd.protocol.errors import ImpetusError

from ..aclient import AsyncDaemon
from ..client import DaemonUnavailable
from .app import json_response, read_json
from .errors import InvalidRequest, OpenAIError, from_daemon, unavailable
from .generation import BadBody, EventStream, Item, first_refused, generate, stream
from .structured import arguments_text, choice_name, function_tool, named_in, response_format

_encoder = msgspec.json.Encoder()
# Fields that are passed on or echoed back.
_USED = {
    "model",
    "input",
    "instructions",
    "max_output_tokens",
    "temperature",
    "top_p",
    "stream",
    "metadata",
    "user",
    "safety_identifier",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
}
# Fields accepted at these values only (what they mean is what Impetus does anyway).
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "store": (None, False),
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
}
_ROLES: dict[str, Literal["user", "assistant", "system"]] = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
RENAMED = {"format": "text.format"}


def _refuse(name: str) -> InvalidRequest:
    why = _WHY.get(name, "not supported by Impetus")
    return InvalidRequest(f"'{name}' is not supported: {why}", param=name, code="unsupported_parameter")


def _check_fields(body: dict[str, Any]) -> None:
    name = first_refused(body.items(), _NEUTRAL)
    if name is not None:
        raise _refuse(name)
    for name, value in body.items():
        if name not in _USED and name not in _NEUTRAL and name != "text" and value is not None:
            raise _refuse(name)
    text = body.get("text")
    if text is not None:
        if not isinstance(text, dict) or set(text) - {"format", "verbosity"}:
            raise _refuse("text")
        if text.get("verbosity") not in (None, "medium"):
            raise _refuse("text.verbosity")


def format_of(body: dict[str, Any]) -> Format | None:
    """``text.format``: text, json_object, or json_schema (name, schema, strict at its top level)."""
    return response_format((body.get("text") or {}).get("format"), "text.format", flat=True)


def tools_of(given: Any) -> list[Tool] | None:
    """Responses' flat function tools: ``{type: function, name, description, parameters, strict}``."""
    if not given:
        return None
    if not isinstance(given, list):
        raise InvalidRequest("tools must be a list", param="tools")
    tools = []
    for i, t in enumerate(given):
        at = f"tools[{i}]"
        if not isinstance(t, dict) or t.get("type") != "function":
            kind = t.get("type") if isinstance(t, dict) else None
            raise InvalidRequest(f"{at}: only function tools are supported, got type {kind!r}", param=f"{at}.type", code="unsupported_parameter")
        tools.append(function_tool({k: v for k, v in t.items() if k != "type"}, at))
    return tools


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


def _item(item: dict[str, Any], where: str, out: list[Message], thinking: list[str]) -> None:
    """One input item onto the conversation. Consecutive ``function_call`` items are one
    assistant turn; a ``reasoning`` item belongs to the assistant turn after it."""
    kind = item.get("type", "message")
    if kind == "reasoning":
        parts = item.get("content") or item.get("summary") or []
        thinking.extend(str(p.get("text", "")) for p in parts if isinstance(p, dict))
        return
    if kind == "function_call":
        if not isinstance(item.get("call_id"), str) or not isinstance(item.get("name"), str):
            raise InvalidRequest(f"{where}: a function_call needs 'call_id' and 'name'", param=where)
        call = ToolCall(id=item["call_id"], name=item["name"], arguments=arguments_text(item.get("arguments", "{}"), f"{where}.arguments"))
        last = out[-1] if out else None
        if last is not None and last.role == "assistant" and last.tool_calls:
            out[-1] = Message(role="assistant", content=last.content, tool_calls=[*last.tool_calls, call], reasoning=last.reasoning)
        else:
            out.append(Message(role="assistant", content="", tool_calls=[call], reasoning="".join(thinking) or None))
            thinking.clear()
        return
    if kind == "function_call_output":
        if not isinstance(item.get("call_id"), str):
            raise InvalidRequest(f"{where}: a function_call_output needs 'call_id'", param=f"{where}.call_id")
        out.append(Message(role="tool", content=_content(item.get("output", ""), f"{where}.output"), tool_call_id=item["call_id"]))
        return
    if kind != "message":
        raise InvalidRequest(f"{where}: '{kind}' items are not supported", param=f"{where}.type", code="unsupported_parameter")
    extra = set(item) - {"type", "role", "content", "id", "status"}
    if extra:
        raise InvalidRequest(f"{where}: '{sorted(extra)[0]}' is not supported", param=f"{where}.{sorted(extra)[0]}", code="unsupported_parameter")
    role = _ROLES.get(item.get("role", ""))
    if role is None:
        raise InvalidRequest(f"{where}.role must be one of {', '.join(_ROLES)}", param=f"{where}.role")
    reasoning = None
    if role == "assistant":
        reasoning = "".join(thinking) or None
        thinking.clear()
    out.append(Message(role=role, content=_content(item.get("content"), f"{where}.content"), reasoning=reasoning))


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
        raise InvalidRequest("input must be a string or a non-empty list of items", param="input")
    thinking: list[str] = []
    for i, item in enumerate(given):
        if not isinstance(item, dict):
            raise InvalidRequest(f"input[{i}] must be an item", param=f"input[{i}]")
        _item(item, f"input[{i}]", out, thinking)
    return out


def chat_params(body: dict[str, Any]) -> ChatParams:
    _check_fields(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model is required", param="model")
    limit = body.get("max_output_tokens")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise InvalidRequest("max_output_tokens must be a positive integer", param="max_output_tokens")
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise InvalidRequest("parallel_tool_calls must be true or false", param="parallel_tool_calls")
    try:
        tools = tools_of(body.get("tools"))
        choice = choice_name(body.get("tool_choice"), "tool_choice")
        named_in(choice, tools, "tool_choice")
        fmt = format_of(body)
    except BadBody as exc:
        raise InvalidRequest(exc.message, param=exc.param) from None
    return ChatParams(
        model=model,
        messages=messages_of(body),
        max_tokens=limit,
        temperature=body.get("temperature"),
        top_p=body.get("top_p"),
        stream=bool(body.get("stream")),
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=parallel is not False,
        format=fmt,
    )


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def message_item(text: str, status: str, item_id: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": [text_part(text)] if status == "completed" else []}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def reasoning_item(text: str, item_id: str) -> dict[str, Any]:
    return {"id": item_id, "type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": text}] if text else []}


def call_item(call: ToolCall, status: str, item_id: str) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call.id, "name": call.name, "arguments": call.arguments}


def output_of(message: Message | None) -> list[dict[str, Any]]:
    """A result's message → output items: its reasoning, its text (when there is any, or
    nothing else), then each function call."""
    if message is None:
        return [message_item("", "completed", _id("msg"))]
    items = [reasoning_item(message.reasoning, _id("rs"))] if message.reasoning else []
    if message.content or not message.tool_calls:
        items.append(message_item(message.content, "completed", _id("msg")))
    items.extend(call_item(c, "completed", _id("fc")) for c in message.tool_calls or [])
    return items


class _Shape:
    """One response's id and echoed request fields, and its event numbering."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.id = _id("resp")
        self.created = int(time.time())
        self.body = body
        self.seq = 0

    def response(self, status: str, model: str, output: list[dict[str, Any]], result: GenerationResult | None) -> dict[str, Any]:
        b = self.body
        out: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "model": model,
            "output": output,
            "error": None,
            "incomplete_details": None,
            "instructions": b.get("instructions"),
            "max_output_tokens": b.get("max_output_tokens"),
            "metadata": b.get("metadata") or {},
            "parallel_tool_calls": b.get("parallel_tool_calls") is not False,
            "previous_response_id": None,
            "store": False,
            "temperature": b.get("temperature", 1.0),
            "top_p": b.get("top_p", 1.0),
            "text": {"format": (b.get("text") or {}).get("format") or {"type": "text"}},
            "tool_choice": b.get("tool_choice") or "auto",
            "tools": b.get("tools") or [],
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

    def event(self, kind: str, **data: Any) -> bytes:
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + _encoder.encode({"type": kind, "sequence_number": self.seq - 1, **data}) + b"\n\n"


def _status(result: GenerationResult) -> str:
    return "incomplete" if result.finish_reason == "length" else "completed"


class _Open:
    """The output item being streamed: a message, a reasoning item or a function call."""

    def __init__(self, kind: str, index: int, call: ToolCall | None = None) -> None:
        self.kind = kind
        self.index = index
        self.id = _id({"message": "msg", "reasoning": "rs", "function_call": "fc"}[kind])
        self.call = call
        self.text: list[str] = []


class _Items:
    """Chunks → the Responses events of each output item, opened and closed in turn."""

    def __init__(self, shape: _Shape) -> None:
        self.shape = shape
        self.open: _Open | None = None
        self.done: list[dict[str, Any]] = []
        self.call_index = -1

    def switch(self, kind: str, call: ToolCall | None = None) -> list[bytes]:
        if self.open is not None and self.open.kind == kind and call is None:
            return []
        events = self.close()
        self.open = item = _Open(kind, len(self.done), call)
        ev = self.shape.event
        if kind == "message":
            events.append(ev("response.output_item.added", output_index=item.index, item=message_item("", "in_progress", item.id)))
            events.append(ev("response.content_part.added", part=text_part(""), **self._at()))
        elif kind == "reasoning":
            events.append(ev("response.output_item.added", output_index=item.index, item=reasoning_item("", item.id)))
        else:
            assert call is not None
            events.append(ev("response.output_item.added", output_index=item.index, item=call_item(call, "in_progress", item.id)))
        return events

    def _at(self) -> dict[str, Any]:
        assert self.open is not None
        return {"item_id": self.open.id, "output_index": self.open.index, "content_index": 0}

    def close(self) -> list[bytes]:
        item, ev = self.open, self.shape.event
        if item is None:
            return []
        text = "".join(item.text)
        if item.kind == "message":
            done = message_item(text, "completed", item.id)
            events = [
                ev("response.output_text.done", text=text, logprobs=[], **self._at()),
                ev("response.content_part.done", part=text_part(text), **self._at()),
            ]
        elif item.kind == "reasoning":
            done = reasoning_item(text, item.id)
            events = [ev("response.reasoning_text.done", text=text, **self._at())]
        else:
            assert item.call is not None
            call = ToolCall(id=item.call.id, name=item.call.name, arguments=text or "{}")
            done = call_item(call, "completed", item.id)
            events = [ev("response.function_call_arguments.done", item_id=item.id, output_index=item.index, name=call.name, arguments=call.arguments)]
        events.append(ev("response.output_item.done", output_index=item.index, item=done))
        self.done.append(done)
        self.open = None
        return events

    def add(self, chunk: Chunk) -> list[bytes]:
        ev = self.shape.event
        if chunk.kind == "tool_call" and chunk.tool_call is not None:
            t = chunk.tool_call
            events = self.switch("function_call", ToolCall(id=t.id, name=t.name or "", arguments="")) if t.id is not None else []
            if t.arguments and self.open is not None:
                self.open.text.append(t.arguments)
                events.append(ev("response.function_call_arguments.delta", item_id=self.open.id, output_index=self.open.index, delta=t.arguments))
            return events
        kind = "reasoning" if chunk.kind == "reasoning" else "message"
        events = self.switch(kind)
        assert self.open is not None
        self.open.text.append(chunk.delta)
        name = "response.reasoning_text.delta" if kind == "reasoning" else "response.output_text.delta"
        extra: dict[str, Any] = {} if kind == "reasoning" else {"logprobs": []}
        events.append(ev(name, delta=chunk.delta, **extra, **self._at()))
        return events


async def _events(items: AsyncIterator[Item], shape: _Shape, model: str) -> AsyncIterator[bytes]:
    out = _Items(shape)
    try:
        yield shape.event("response.created", response=shape.response("in_progress", model, [], None))
        yield shape.event("response.in_progress", response=shape.response("in_progress", model, [], None))
        async for item in items:
            if isinstance(item, GenerationResult):
                if out.open is None and not out.done:  # nothing was said: one empty message
                    for event in out.switch("message"):
                        yield event
                for event in out.close():
                    yield event
                status = _status(item)
                yield shape.event(f"response.{status}", response=shape.response(status, item.model, out.done, item))
                continue
            for event in out.add(item):
                yield event
    except (ImpetusError, DaemonUnavailable) as exc:
        err = from_daemon(exc, RENAMED) if isinstance(exc, ImpetusError) else unavailable(exc)
        yield shape.event("error", code=err.code, message=err.message, param=err.param)


def routes(daemon: AsyncDaemon) -> list[Route]:
    async def create(request: Request) -> Response:
        body = await read_json(request, dict[str, Any])
        params = chat_params(body)
        shape = _Shape(body)
        try:
            if not params.stream:
                result = await generate(request, daemon, params)
                return json_response(shape.response(_status(result), result.model, output_of(result.message), result))
            return EventStream(_events(await stream(daemon, params), shape, params.model))
        except ImpetusError as exc:
            raise from_daemon(exc, RENAMED) from None

    async def refuse_retrieval(request: Request) -> Response:
        raise OpenAIError(404, "this shim is stateless and stores no responses", param="response_id", code="not_found")

    return [
        Route("/v1/responses", create, methods=["POST"]),
        Route("/v1/responses/{response_id}", refuse_retrieval, methods=["GET", "DELETE"]),
    ]
