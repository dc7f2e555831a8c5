"""Anthropic's Messages API: requests → the daemon's ``chat`` params, results →
messages, any failure → Anthropic's error object.

System prompts, text blocks, sampling, stop sequences, client tools (``tools``,
``tool_choice``, ``tool_use`` and ``tool_result`` blocks), ``thinking`` on or off.
Server tools, images, documents and the rest are refused by name.
"""

from __future__ import annotations

from typing import Any

import msgspec

from impetusd.protocol.api import ChatParams, GenerationResult, Message, Tool, ToolCall
from impetusd.protocol.errors import ImpetusError

from ..http import common_failure, daemon_message, daemon_status, fields_of, first_refused
from ..structured import arguments_object, arguments_text, function_tool
from .wire import AnthropicError, AssistantMessage, ContentBlock, MessagesRequest, TextBlock, ThinkingBlock, ToolUseBlock, Usage, _Input

NOT_YET = {
    "mcp_servers": "MCP servers are not supported by Impetus",
    "container": "containers are not supported by Impetus",
    "context_management": "context management is not supported by Impetus",
    "output_config": "output configuration (formats, effort) is not supported on this API in Impetus; use tools, or /v1/chat/completions' response_format",
    "inference_geo": "Impetus runs on this machine only",
    "diagnostics": "diagnostics are not supported by Impetus",
    "user_profile_id": "user profiles are not supported by Impetus",
    "workspace_id": "workspaces are not supported by Impetus",
}
_BLOCKS_NOT_YET = {
    "image": "images are not supported by Impetus yet",
    "document": "documents are not supported by Impetus yet",
    "redacted_thinking": "redacted thinking blocks are not supported by Impetus",
}


def _bad(message: str) -> AnthropicError:
    return AnthropicError(400, message)


# --- requests ---------------------------------------------------------------


def refuse(body: msgspec.Struct) -> None:
    name = first_refused(fields_of(body), dict.fromkeys(NOT_YET, (None, [], {})))
    if name is not None:
        raise _bad(f"'{name}' is not supported: {NOT_YET[name]}")
    if getattr(body, "service_tier", None) not in (None, "auto", "standard_only"):
        raise _bad("'service_tier' is not supported by Impetus")
    if getattr(body, "speed", None) not in (None, "standard"):
        raise _bad("'speed' other than 'standard' is not supported by Impetus")


def _text_block(block: dict[str, Any], where: str) -> str:
    kind = block.get("type")
    if kind in _BLOCKS_NOT_YET:
        raise _bad(f"{where}: '{kind}' blocks are not supported: {_BLOCKS_NOT_YET[kind]}")
    if kind != "text" or not isinstance(block.get("text"), str):
        raise _bad(f"{where}: only text, tool_use, tool_result and thinking blocks are supported, got type {kind!r}")
    extra = set(block) - {"type", "text", "cache_control", "citations"}
    if extra or block.get("citations"):
        raise _bad(f"{where}: '{sorted(extra)[0] if extra else 'citations'}' is not supported on text blocks")
    return str(block["text"])


def _text(content: str | list[dict[str, Any]], where: str) -> str:
    if isinstance(content, str):
        return content
    return "".join(_text_block(block, f"{where}[{j}]") for j, block in enumerate(content))


def _tool_result(block: dict[str, Any], where: str) -> Message:
    """A ``tool_result`` block → a ``tool`` message (an error result says so in its text)."""
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise _bad(f"{where}.tool_use_id is required")
    extra = set(block) - {"type", "tool_use_id", "content", "is_error", "cache_control"}
    if extra:
        raise _bad(f"{where}: '{sorted(extra)[0]}' is not supported on tool_result blocks")
    content = block.get("content", "")
    text = _text(content, f"{where}.content") if isinstance(content, str | list) else None
    if text is None:
        raise _bad(f"{where}.content must be a string or text blocks")
    if block.get("is_error"):
        text = f"Error: {text}"
    return Message(role="tool", content=text, tool_call_id=call_id)


def _turn(role: str, content: str | list[dict[str, Any]], where: str) -> list[Message]:
    """One Anthropic message → protocol messages: a user turn's ``tool_result`` blocks
    become ``tool`` messages (before its text); an assistant's ``tool_use`` blocks its calls."""
    if isinstance(content, str):
        return [Message(role="user" if role == "user" else "assistant", content=content)]
    texts: list[str] = []
    results: list[Message] = []
    calls: list[ToolCall] = []
    thinking: list[str] = []
    for j, block in enumerate(content):
        at = f"{where}[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result" and role == "user":
            results.append(_tool_result(block, at))
        elif kind == "tool_use" and role == "assistant":
            if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
                raise _bad(f"{at}: a tool_use block needs 'id' and 'name'")
            calls.append(ToolCall(id=block["id"], name=block["name"], arguments=arguments_text(block.get("input", {}), f"{at}.input")))
        elif kind == "thinking" and role == "assistant":
            thinking.append(str(block.get("thinking", "")))
        elif kind in ("tool_result", "tool_use", "thinking"):
            raise _bad(f"{at}: '{kind}' blocks belong in {'user' if kind == 'tool_result' else 'assistant'} messages")
        else:
            texts.append(_text_block(block, at))
    text = "".join(texts)
    if role == "user":
        return results + ([Message(role="user", content=text)] if text or not results else [])
    return [Message(role="assistant", content=text, tool_calls=calls or None, reasoning="".join(thinking) or None)]


def messages_of(body: _Input) -> list[Message]:
    out: list[Message] = []
    if body.system is not None:
        system = _text(body.system, "system")
        if system:
            out.append(Message(role="system", content=system))
    for i, m in enumerate(body.messages):
        if m.role not in ("user", "assistant"):
            raise _bad(f"messages[{i}].role must be 'user' or 'assistant'")
        out.extend(_turn(m.role, m.content, f"messages[{i}].content"))
    if not body.messages:
        raise _bad("messages: at least one message is required")
    return out


def tools_of(given: list[Any] | None) -> list[Tool] | None:
    """Anthropic's ``{name, description, input_schema}`` client tools; server tools are refused."""
    if not given:
        return None
    tools = []
    for i, t in enumerate(given):
        at = f"tools[{i}]"
        if not isinstance(t, dict) or t.get("type", "custom") != "custom":
            kind = t.get("type") if isinstance(t, dict) else None
            raise _bad(f"{at}: server tools ({kind!r}) are not supported by Impetus; only client tools with an input_schema")
        extra = set(t) - {"type", "name", "description", "input_schema", "cache_control", "strict"}
        if extra:
            raise _bad(f"{at}: '{sorted(extra)[0]}' is not supported on tools")
        if not isinstance(t.get("input_schema"), dict):
            raise _bad(f"{at}.input_schema: a JSON schema object is required")
        fields = {"name": t.get("name"), "description": t.get("description"), "parameters": t["input_schema"], "strict": t.get("strict")}
        tools.append(function_tool(fields, at))
    return tools


def choice_of(given: Any, tools: list[Tool] | None) -> tuple[str | None, bool]:
    """``tool_choice`` → (the protocol's choice, whether parallel calls are allowed)."""
    if given is None:
        return None, True
    kind = given.get("type") if isinstance(given, dict) else None
    if kind not in ("auto", "any", "tool", "none") or set(given) - {"type", "name", "disable_parallel_tool_use"}:
        raise _bad("tool_choice: must be {'type': 'auto' | 'any' | 'tool' | 'none'} (with 'name' for 'tool')")
    parallel = not given.get("disable_parallel_tool_use", False)
    if kind == "tool":
        name = given.get("name")
        if not isinstance(name, str) or name not in {t.function.name for t in tools or []}:
            raise _bad(f"tool_choice: names {name!r}, which is not among the tools")
        return name, parallel
    return {"auto": "auto", "any": "required", "none": "none"}[kind], parallel


def think_of(given: Any) -> bool | None:
    if given is None:
        return None
    kind = given.get("type") if isinstance(given, dict) else None
    if kind not in ("enabled", "disabled", "adaptive"):
        raise _bad("thinking: must be {'type': 'enabled', 'budget_tokens': N} or {'type': 'disabled'}")
    return kind != "disabled"  # the budget is not enforced: thinking ends when the model ends it (max_tokens bounds both)


def chat_params(body: MessagesRequest) -> ChatParams:
    refuse(body)
    if body.max_tokens < 1:
        raise _bad("max_tokens: must be at least 1")
    tools = tools_of(body.tools)
    choice, parallel = choice_of(body.tool_choice, tools)
    return ChatParams(
        model=body.model,
        messages=messages_of(body),
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        stop=body.stop_sequences or None,
        stream=body.stream,
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=parallel,
        think=think_of(body.thinking),
    )


# --- results ----------------------------------------------------------------


def stop_reason(result: GenerationResult) -> str:
    if result.finish_reason == "length":
        return "max_tokens"
    if result.finish_reason == "tool_calls":
        return "tool_use"
    return "stop_sequence" if result.stop_sequence else "end_turn"


def usage(result: GenerationResult) -> Usage:
    u = result.usage
    return Usage(input_tokens=u.prompt_tokens, output_tokens=u.completion_tokens, cache_read_input_tokens=u.cached_tokens, cache_creation_input_tokens=0)


def message_of(mid: str, model: str, content: list[ContentBlock], result: GenerationResult | None) -> AssistantMessage:
    return AssistantMessage(
        id=mid,
        model=model,
        content=content,
        stop_reason=stop_reason(result) if result else None,
        stop_sequence=result.stop_sequence if result else None,
        usage=usage(result) if result else Usage(input_tokens=0, output_tokens=0),
    )


def content_of(message: Message | None) -> list[ContentBlock]:
    """A result's message → content blocks: thinking, text, then each ``tool_use``."""
    if message is None:
        return [TextBlock(text="")]
    blocks: list[ContentBlock] = []
    if message.reasoning:
        blocks.append(ThinkingBlock(thinking=message.reasoning))
    if message.content or not message.tool_calls:
        blocks.append(TextBlock(text=message.content))
    blocks.extend(ToolUseBlock(id=c.id, name=c.name, input=arguments_object(c)) for c in message.tool_calls or [])
    return blocks


# --- errors -----------------------------------------------------------------


def error_of(exc: Exception) -> AnthropicError:
    """Any failure → Anthropic's error object."""
    if isinstance(exc, AnthropicError):
        return exc
    if isinstance(exc, ImpetusError):
        return AnthropicError(daemon_status(exc), daemon_message(exc))
    return AnthropicError(*common_failure(exc))
