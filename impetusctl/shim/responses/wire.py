"""The Responses API's shapes: which request fields are used, accepted at a neutral
value only, or refused (the body is read as an object and checked against these),
the output items, and a response object with its event numbering."""

from __future__ import annotations

import secrets
import time
from typing import Any

from impetusd.protocol.api import GenerationResult, ToolCall

from ..http import sse_event

# Fields that are passed on or echoed back.
USED = {
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
NEUTRAL: dict[str, tuple[Any, ...]] = {
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
WHY = {
    "previous_response_id": "this shim is stateless: send the whole conversation in 'input'",
    "store": "this shim is stateless and stores no responses",
    "conversation": "this shim is stateless: send the whole conversation in 'input'",
}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def message_item(text: str, status: str, item_id: str) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "role": "assistant", "content": [text_part(text)] if status == "completed" else []}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def reasoning_item(text: str, item_id: str) -> dict[str, Any]:
    return {"id": item_id, "type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": text}] if text else []}


def call_item(call: ToolCall, status: str, item_id: str) -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call.id, "name": call.name, "arguments": call.arguments}


class Shape:
    """One response's id and echoed request fields, and its event numbering."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.id = new_id("resp")
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
        return sse_event(kind, {"type": kind, "sequence_number": self.seq - 1, **data})
