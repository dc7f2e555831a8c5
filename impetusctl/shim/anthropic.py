"""Anthropic's Messages API (``/v1/messages``, ``/v1/messages/count_tokens``) over the daemon.

Text in, text out: system prompts, text blocks, sampling, stop sequences,
streaming with Anthropic's event sequence. Tool use, images, documents and
thinking are refused by name. Errors use Anthropic's error object.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from impetusd.protocol.api import ChatParams, GenerationResult, Message, TokenizeResult
from impetusd.protocol.errors import ImpetusError

from ..aclient import AsyncDaemon, Exchange
from ..client import DaemonUnavailable
from .app import MAX_BODY, ClientGone, EventStream, until_disconnect
from .errors import OpenAIError, from_daemon

T = TypeVar("T")
_encoder = msgspec.json.Encoder()
Handler = Callable[[Request], Awaitable[Response]]
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
}
NOT_YET = {
    "tools": "tool calling is not built yet in Impetus (another issue)",
    "tool_choice": "tool calling is not built yet in Impetus (another issue)",
    "thinking": "extended thinking is not supported by Impetus",
    "mcp_servers": "MCP servers are not supported by Impetus",
    "container": "containers are not supported by Impetus",
    "context_management": "context management is not supported by Impetus",
    "output_config": "output configuration (formats, effort) is not built yet in Impetus (structured outputs are another issue)",
    "inference_geo": "Impetus runs on this machine only",
    "diagnostics": "diagnostics are not supported by Impetus",
    "user_profile_id": "user profiles are not supported by Impetus",
    "workspace_id": "workspaces are not supported by Impetus",
}
_BLOCKS_NOT_YET = {
    "tool_use": "tool calling is not built yet in Impetus (another issue)",
    "tool_result": "tool calling is not built yet in Impetus (another issue)",
    "image": "images are not supported by Impetus yet",
    "document": "documents are not supported by Impetus yet",
    "thinking": "thinking blocks are not supported by Impetus",
    "redacted_thinking": "thinking blocks are not supported by Impetus",
}


class AnthropicError(Exception):
    def __init__(self, status: int, message: str, kind: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind or _TYPES.get(status, "overloaded_error" if status == 503 else "api_error")

    def body(self) -> dict[str, Any]:
        return {"type": "error", "error": {"type": self.kind, "message": self.message}}


def _bad(message: str) -> AnthropicError:
    return AnthropicError(400, message)


class InputMessage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    role: str
    content: str | list[dict[str, Any]]


class _Input(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    model: str
    messages: list[InputMessage]
    system: str | list[dict[str, Any]] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    thinking: Any = None
    mcp_servers: list[Any] | None = None
    context_management: Any = None
    output_config: Any = None
    cache_control: Any = None  # a caching hint: Impetus caches prompt prefixes on its own
    speed: str | None = None
    user_profile_id: str | None = None
    workspace_id: str | None = None


class MessagesRequest(_Input, frozen=True, forbid_unknown_fields=True, kw_only=True):
    max_tokens: int
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stream: bool = False
    metadata: dict[str, Any] | None = None  # a user id for the caller's records; changes nothing
    service_tier: str | None = None
    container: Any = None
    inference_geo: str | None = None
    diagnostics: Any = None


def _refuse(body: msgspec.Struct) -> None:
    for name in body.__struct_fields__:
        if name in NOT_YET and getattr(body, name) not in (None, [], {}):
            raise _bad(f"'{name}' is not supported: {NOT_YET[name]}")
    if getattr(body, "service_tier", None) not in (None, "auto", "standard_only"):
        raise _bad("'service_tier' is not supported by Impetus")
    if getattr(body, "speed", None) not in (None, "standard"):
        raise _bad("'speed' other than 'standard' is not supported by Impetus")


def _text(content: str | list[dict[str, Any]], where: str) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for j, block in enumerate(content):
        kind = block.get("type")
        if kind in _BLOCKS_NOT_YET:
            raise _bad(f"{where}[{j}]: '{kind}' blocks are not supported: {_BLOCKS_NOT_YET[kind]}")
        if kind != "text" or not isinstance(block.get("text"), str):
            raise _bad(f"{where}[{j}]: only text blocks are supported, got type {kind!r}")
        extra = set(block) - {"type", "text", "cache_control", "citations"}
        if extra or block.get("citations"):
            raise _bad(f"{where}[{j}]: '{sorted(extra)[0] if extra else 'citations'}' is not supported on text blocks")
        texts.append(block["text"])
    return "".join(texts)


def messages_of(body: _Input) -> list[Message]:
    out: list[Message] = []
    if body.system is not None:
        system = _text(body.system, "system")
        if system:
            out.append(Message(role="system", content=system))
    for i, m in enumerate(body.messages):
        if m.role not in ("user", "assistant"):
            raise _bad(f"messages[{i}].role must be 'user' or 'assistant'")
        out.append(Message(role="user" if m.role == "user" else "assistant", content=_text(m.content, f"messages[{i}].content")))
    if not body.messages:
        raise _bad("messages: at least one message is required")
    return out


def chat_params(body: MessagesRequest) -> ChatParams:
    _refuse(body)
    if body.max_tokens < 1:
        raise _bad("max_tokens: must be at least 1")
    return ChatParams(
        model=body.model,
        messages=messages_of(body),
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        stop=body.stop_sequences or None,
        stream=body.stream,
    )


def _error_of(exc: Exception) -> AnthropicError:
    if isinstance(exc, AnthropicError):
        return exc
    if isinstance(exc, ImpetusError):
        err = from_daemon(exc)
        return AnthropicError(err.status, err.message)
    if isinstance(exc, DaemonUnavailable):
        return AnthropicError(503, f"the Impetus daemon is not reachable: {exc}")
    if isinstance(exc, OpenAIError):
        return AnthropicError(exc.status, exc.message)
    return AnthropicError(500, f"internal error in the shim: {type(exc).__name__}: {exc}")


def route(handler: Handler) -> Handler:
    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except ClientGone:
            return Response(status_code=499)
        except Exception as exc:
            err = _error_of(exc)
            return Response(_encoder.encode(err.body()), status_code=err.status, media_type="application/json")

    return run


async def _body(request: Request, kind: type[T]) -> T:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY:
            raise AnthropicError(413, f"request body exceeds {MAX_BODY} bytes")
    data = b"".join(chunks)
    try:
        return msgspec.json.decode(data, type=kind)
    except msgspec.ValidationError as exc:
        raise _bad(f"invalid request: {exc}") from None
    except msgspec.DecodeError as exc:
        raise _bad(f"the request body is not valid JSON: {exc}") from None


def stop_reason(result: GenerationResult) -> str:
    if result.finish_reason == "length":
        return "max_tokens"
    return "stop_sequence" if result.stop_sequence else "end_turn"


def usage(result: GenerationResult) -> dict[str, Any]:
    u = result.usage
    return {
        "input_tokens": u.prompt_tokens,
        "output_tokens": u.completion_tokens,
        "cache_read_input_tokens": u.cached_tokens,
        "cache_creation_input_tokens": 0,
    }


def _message(mid: str, model: str, content: list[dict[str, Any]], result: GenerationResult | None) -> dict[str, Any]:
    return {
        "id": mid,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(result) if result else None,
        "stop_sequence": result.stop_sequence if result else None,
        "usage": usage(result) if result else {"input_tokens": 0, "output_tokens": 0},
    }


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + _encoder.encode({"type": kind, **data}) + b"\n\n"


async def _events(exchange: Exchange, first: str | msgspec.Raw, mid: str, model: str) -> AsyncIterator[bytes]:
    item = first
    try:
        yield _event("message_start", {"message": _message(mid, model, [], None)})
        yield _event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        yield _event("ping", {})
        while not isinstance(item, msgspec.Raw):
            yield _event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": item}})
            item = await exchange.next()
        result = msgspec.json.decode(bytes(item), type=GenerationResult)
        yield _event("content_block_stop", {"index": 0})
        # Input tokens are known at the end only; message_delta's usage counts are totals.
        delta = {"stop_reason": stop_reason(result), "stop_sequence": result.stop_sequence}
        yield _event("message_delta", {"delta": delta, "usage": usage(result)})
        yield _event("message_stop", {})
    except Exception as exc:
        err = _error_of(exc)
        yield b"event: error\ndata: " + _encoder.encode(err.body()) + b"\n\n"
    finally:
        await exchange.aclose()


class Anthropic:
    def __init__(self, daemon: AsyncDaemon) -> None:
        self.daemon = daemon

    async def messages(self, request: Request) -> Response:
        body = await _body(request, MessagesRequest)
        params = chat_params(body)
        mid = f"msg_{secrets.token_hex(12)}"
        exchange = await self.daemon.open("chat", params)
        if not body.stream:

            async def collect() -> GenerationResult:
                while not isinstance(item := await exchange.next(), msgspec.Raw):
                    pass
                return msgspec.json.decode(bytes(item), type=GenerationResult)

            try:
                result = await until_disconnect(request, collect)
            finally:
                await exchange.aclose()
            text = result.message.content if result.message else ""
            return Response(_encoder.encode(_message(mid, result.model, [{"type": "text", "text": text}], result)), media_type="application/json")
        try:
            first = await exchange.next()  # load and validation errors still get a proper status
        except BaseException:
            await exchange.aclose()
            raise
        return EventStream(_events(exchange, first, mid, body.model))

    async def count_tokens(self, request: Request) -> Response:
        body = await _body(request, _Input)
        _refuse(body)
        params = {"model": body.model, "messages": [msgspec.to_builtins(m) for m in messages_of(body)]}
        result = await until_disconnect(request, lambda: self.daemon.call("tokenize", params, type=TokenizeResult))
        return Response(_encoder.encode({"input_tokens": result.count}), media_type="application/json")


def routes(daemon: AsyncDaemon) -> list[Route]:
    api = Anthropic(daemon)
    return [
        Route("/v1/messages", route(api.messages), methods=["POST"]),
        Route("/v1/messages/count_tokens", route(api.count_tokens), methods=["POST"]),
    ]
