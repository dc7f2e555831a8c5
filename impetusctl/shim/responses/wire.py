"""The Responses API's shapes: which request fields are used, accepted at a neutral
value only, or refused (the body is read as an object and checked against these),
the output items, the response object, and the stream's events (each numbered,
sent as ``event: <type>``)."""

from __future__ import annotations

import secrets
import time
from typing import Any, Literal

import msgspec

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


# --- output items -------------------------------------------------------------


class OutputText(msgspec.Struct, frozen=True, tag="output_text", tag_field="type"):
    text: str
    annotations: list[Any] = []
    logprobs: list[Any] = []


class ReasoningText(msgspec.Struct, frozen=True, tag="reasoning_text", tag_field="type"):
    text: str


class MessageItem(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    type: Literal["message"] = "message"
    status: str
    role: Literal["assistant"] = "assistant"
    content: list[OutputText]


class ReasoningItem(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    type: Literal["reasoning"] = "reasoning"
    summary: list[Any] = []
    content: list[ReasoningText]


class CallItem(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    type: Literal["function_call"] = "function_call"
    status: str
    call_id: str
    name: str
    arguments: str


OutputItem = MessageItem | ReasoningItem | CallItem


def message_item(text: str, status: str, item_id: str) -> MessageItem:
    return MessageItem(id=item_id, status=status, content=[text_part(text)] if status == "completed" else [])


def text_part(text: str) -> OutputText:
    return OutputText(text=text)


def reasoning_item(text: str, item_id: str) -> ReasoningItem:
    return ReasoningItem(id=item_id, content=[ReasoningText(text=text)] if text else [])


def call_item(call: ToolCall, status: str, item_id: str) -> CallItem:
    return CallItem(id=item_id, status=status, call_id=call.id, name=call.name, arguments=call.arguments)


# --- the response -------------------------------------------------------------


class InputDetails(msgspec.Struct, frozen=True):
    cached_tokens: int


class OutputDetails(msgspec.Struct, frozen=True):
    reasoning_tokens: int


class ResponseUsage(msgspec.Struct, frozen=True):
    input_tokens: int
    input_tokens_details: InputDetails
    output_tokens: int
    output_tokens_details: OutputDetails
    total_tokens: int


class Incomplete(msgspec.Struct, frozen=True):
    reason: str


class TextConfig(msgspec.Struct, frozen=True):
    format: Any


class ResponseObject(msgspec.Struct, frozen=True, kw_only=True):
    """A response, with the request's fields echoed as OpenAI does (``Any``: as the client sent them)."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: str
    model: str
    output: list[OutputItem]
    error: None = None
    incomplete_details: Incomplete | None = None
    instructions: Any
    max_output_tokens: Any
    metadata: Any
    parallel_tool_calls: bool
    previous_response_id: None = None
    store: bool = False
    temperature: Any
    top_p: Any
    text: TextConfig
    tool_choice: Any
    tools: Any
    truncation: str = "disabled"
    usage: ResponseUsage | None = None


# --- stream events --------------------------------------------------------------


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    sequence_number: int


class _State(Event, frozen=True, kw_only=True):
    response: ResponseObject


class Created(_State, frozen=True, kw_only=True, tag="response.created"):
    pass


class InProgress(_State, frozen=True, kw_only=True, tag="response.in_progress"):
    pass


class Completed(_State, frozen=True, kw_only=True, tag="response.completed"):
    pass


class Incompleted(_State, frozen=True, kw_only=True, tag="response.incomplete"):
    pass


class ItemAdded(Event, frozen=True, kw_only=True, tag="response.output_item.added"):
    output_index: int
    item: OutputItem


class ItemDone(Event, frozen=True, kw_only=True, tag="response.output_item.done"):
    output_index: int
    item: OutputItem


class PartAdded(Event, frozen=True, kw_only=True, tag="response.content_part.added"):
    part: OutputText
    item_id: str
    output_index: int
    content_index: int


class PartDone(Event, frozen=True, kw_only=True, tag="response.content_part.done"):
    part: OutputText
    item_id: str
    output_index: int
    content_index: int


class TextDelta(Event, frozen=True, kw_only=True, tag="response.output_text.delta"):
    delta: str
    logprobs: list[Any]
    item_id: str
    output_index: int
    content_index: int


class TextDone(Event, frozen=True, kw_only=True, tag="response.output_text.done"):
    text: str
    logprobs: list[Any]
    item_id: str
    output_index: int
    content_index: int


class ReasoningDelta(Event, frozen=True, kw_only=True, tag="response.reasoning_text.delta"):
    delta: str
    item_id: str
    output_index: int
    content_index: int


class ReasoningDone(Event, frozen=True, kw_only=True, tag="response.reasoning_text.done"):
    text: str
    item_id: str
    output_index: int
    content_index: int


class ArgumentsDelta(Event, frozen=True, kw_only=True, tag="response.function_call_arguments.delta"):
    item_id: str
    output_index: int
    delta: str


class ArgumentsDone(Event, frozen=True, kw_only=True, tag="response.function_call_arguments.done"):
    item_id: str
    output_index: int
    name: str
    arguments: str


class ErrorEvent(Event, frozen=True, kw_only=True, tag="error"):
    code: str | None
    message: str
    param: str | None


class Shape:
    """One response's id and echoed request fields, and its event numbering."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.id = new_id("resp")
        self.created = int(time.time())
        self.body = body
        self.seq = 0

    def response(self, status: str, model: str, output: list[OutputItem], result: GenerationResult | None) -> ResponseObject:
        b = self.body
        usage, incomplete = None, None
        if result is not None:
            u = result.usage
            usage = ResponseUsage(
                input_tokens=u.prompt_tokens,
                input_tokens_details=InputDetails(cached_tokens=u.cached_tokens),
                output_tokens=u.completion_tokens,
                output_tokens_details=OutputDetails(reasoning_tokens=0),
                total_tokens=u.prompt_tokens + u.completion_tokens,
            )
            if result.finish_reason == "length":
                incomplete = Incomplete(reason="max_output_tokens")
        return ResponseObject(
            id=self.id,
            created_at=self.created,
            status=status,
            model=model,
            output=output,
            incomplete_details=incomplete,
            instructions=b.get("instructions"),
            max_output_tokens=b.get("max_output_tokens"),
            metadata=b.get("metadata") or {},
            parallel_tool_calls=b.get("parallel_tool_calls") is not False,
            temperature=b.get("temperature", 1.0),
            top_p=b.get("top_p", 1.0),
            text=TextConfig(format=(b.get("text") or {}).get("format") or {"type": "text"}),
            tool_choice=b.get("tool_choice") or "auto",
            tools=b.get("tools") or [],
            usage=usage,
        )

    def event(self, kind: type[Event], **data: Any) -> bytes:
        """The next event of this response, numbered."""
        self.seq += 1
        return sse_event(str(kind.__struct_config__.tag), kind(sequence_number=self.seq - 1, **data))
