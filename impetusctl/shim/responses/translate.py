"""The Responses API (stateless): a request → the daemon's ``chat`` params, a result
→ output items, any failure → OpenAI's error object (the daemon's ``format`` named
``text.format``).

Input as a string or items (messages, ``function_call``, ``function_call_output``,
``reasoning``), plus ``instructions``; function ``tools``, ``tool_choice``,
``parallel_tool_calls`` and ``text.format`` (json_object, json_schema). Nothing is
stored, so ``previous_response_id`` and ``store: true`` are refused, as is every
field not in ``wire``'s tables, each by name.
"""

from __future__ import annotations

from typing import Any, Literal

from impetusd.protocol.api import ChatParams, Format, GenerationResult, Message, Tool, ToolCall

from ..http import first_refused
from ..openai import translate as openai
from ..openai.wire import InvalidRequest, OpenAIError
from ..structured import arguments_text, function_tool, response_format, tool_choice
from .wire import NEUTRAL, USED, WHY, OutputItem, call_item, message_item, new_id, reasoning_item

RENAMED = {"format": "text.format"}
_ROLES: dict[str, Literal["user", "assistant", "system"]] = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


def _refuse(name: str) -> InvalidRequest:
    why = WHY.get(name, "not supported by Impetus")
    return InvalidRequest(f"'{name}' is not supported: {why}", param=name, code="unsupported_parameter")


def _check_fields(body: dict[str, Any]) -> None:
    name = first_refused(body.items(), NEUTRAL)
    if name is not None:
        raise _refuse(name)
    for name, value in body.items():
        if name not in USED and name not in NEUTRAL and name != "text" and value is not None:
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
    tools = tools_of(body.get("tools"))
    choice = tool_choice(body.get("tool_choice"), tools)
    fmt = format_of(body)
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


def output_of(message: Message | None) -> list[OutputItem]:
    """A result's message → output items: its reasoning, its text (when there is any, or
    nothing else), then each function call."""
    if message is None:
        return [message_item("", "completed", new_id("msg"))]
    items: list[OutputItem] = [reasoning_item(message.reasoning, new_id("rs"))] if message.reasoning else []
    if message.content or not message.tool_calls:
        items.append(message_item(message.content, "completed", new_id("msg")))
    items.extend(call_item(c, "completed", new_id("fc")) for c in message.tool_calls or [])
    return items


def status_of(result: GenerationResult) -> str:
    return "incomplete" if result.finish_reason == "length" else "completed"


def error_of(exc: Exception) -> OpenAIError:
    """Any failure → OpenAI's error object, ``format`` spelt ``text.format``."""
    return openai.error_of(exc, RENAMED)
