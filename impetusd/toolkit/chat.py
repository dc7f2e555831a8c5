"""A chat request as a chat template's inputs, the same for every engine: messages
with tool calls and tool results, ``tools``, ``enable_thinking``; and the fallback
for templates that cannot render tools (docs/structured.md)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from impetusd.engine.messages import GenerateRequest
from impetusd.protocol.api import Message, Tool
from impetusd.protocol.errors import UnsupportedParameter

TOOL_OPEN = "<tool_call>"  # Hermes / Qwen: what starts a call in the answer
TOOL_OPENER = TOOL_OPEN + "\n"  # what the prompt ends with when a call is forced
TOOL_CLOSE = "</tool_call>"

_FALLBACK_HEADER = (
    "You may call functions to help answer. To call one, reply with exactly:\n"
    '<tool_call>\n{"name": "<function name>", "arguments": {<arguments as JSON>}}\n</tool_call>\n'
    "The functions you may call:\n"
)


_THINK_OPEN = "<think>"


def reasoning_opened(render: Callable[[list[dict[str, Any]], dict[str, Any]], str], template: str | None) -> list[bool | None]:
    """The values of ``think`` (None: the template's default) for which ``template``'s
    generation prompt ends with ``<think>`` (Qwen3-thinking, DeepSeek-R1): the model's
    answer then begins inside its reasoning and only ``</think>`` appears in it.
    ``render(messages, extra)`` renders with the generation prompt; probed with one message."""
    if not template or _THINK_OPEN not in template:
        return []
    opened: list[bool | None] = []
    for think in (None, True, False) if "enable_thinking" in template else (None,):
        try:
            text = render([{"role": "user", "content": "Hi"}], {} if think is None else {"enable_thinking": think})
        except Exception:  # a template that refuses the probe: its answers are read as they come
            continue
        if text.rstrip().endswith(_THINK_OPEN):
            opened.append(think)
    return opened


def _fallback_system(tools: list[Tool]) -> str:
    """The system-prompt text that lists ``tools`` for a template that cannot."""
    lines = [json.dumps({"name": t.function.name, "description": t.function.description or "", "parameters": t.function.parameters}) for t in tools]
    return _FALLBACK_HEADER + "\n".join(lines)


def _call_dict(call: Any) -> dict[str, Any]:
    try:
        arguments = json.loads(call.arguments)
    except ValueError:
        arguments = call.arguments
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": arguments}}


def _native(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [_call_dict(c) for c in m.tool_calls]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.name is not None:
        out["name"] = m.name
    return out


def _fallback(m: Message) -> dict[str, Any]:
    if m.role == "tool":
        return {"role": "user", "content": f"<tool_response>\n{m.content}\n</tool_response>"}
    content = m.content
    for call in m.tool_calls or []:
        body = json.dumps({"name": call.name, "arguments": _call_dict(call)["function"]["arguments"]})
        content += f"{TOOL_OPENER}{body}\n{TOOL_CLOSE}"
    return {"role": m.role, "content": content}


def template_inputs(req: GenerateRequest, template: str | None, backend: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The messages and extra keyword arguments for ``template`` (its source, None
    when the model has none). ``think`` on a template that cannot switch it is refused."""
    source = template or ""
    extra: dict[str, Any] = {}
    if req.think is not None:
        if "enable_thinking" not in source:
            raise UnsupportedParameter("this model's chat template cannot switch reasoning on or off; remove 'think'", param="think", backend=backend)
        extra["enable_thinking"] = req.think
    messages = req.messages or []
    uses_tools = bool(req.tools) or any(m.tool_calls or m.role == "tool" for m in messages)
    native = "tools" in source and "tool_call" in source
    if not uses_tools or native:
        if req.tools:
            extra["tools"] = [
                {
                    "type": "function",
                    "function": {
                        k: v
                        for k, v in (("name", t.function.name), ("description", t.function.description), ("parameters", t.function.parameters))
                        if v is not None
                    },
                }
                for t in req.tools
            ]
        return [_native(m) for m in messages], extra
    rendered = [_fallback(m) for m in messages]
    if req.tools:
        listing = _fallback_system(req.tools)
        if rendered and rendered[0]["role"] == "system":
            rendered[0] = {"role": "system", "content": f"{rendered[0]['content']}\n\n{listing}"}
        else:
            rendered.insert(0, {"role": "system", "content": listing})
    return rendered, extra
