"""Anthropic's shapes: the Messages API's request bodies (decoded strictly) and
its error object."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from ..http import ApiError

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
}


class AnthropicError(ApiError):
    """An error in Anthropic's shape: ``{"type": "error", "error": {type, message}}``."""

    def __init__(self, status: int, message: str, kind: str | None = None) -> None:
        super().__init__(status, message)
        self.kind = kind or _TYPES.get(status, "overloaded_error" if status == 503 else "api_error")

    def body(self) -> dict[str, Any]:
        return {"type": "error", "error": {"type": self.kind, "message": self.message}}


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


# --- responses --------------------------------------------------------------


class Usage(msgspec.Struct, frozen=True):
    """Token counts; the cache counts are left out of ``message_start``'s (known at the end only)."""

    input_tokens: int
    output_tokens: int
    cache_read_input_tokens: int | msgspec.UnsetType = msgspec.UNSET
    cache_creation_input_tokens: int | msgspec.UnsetType = msgspec.UNSET


class TextBlock(msgspec.Struct, frozen=True, tag="text", tag_field="type"):
    text: str


class ThinkingBlock(msgspec.Struct, frozen=True, tag="thinking", tag_field="type"):
    thinking: str
    signature: str = ""


class ToolUseBlock(msgspec.Struct, frozen=True, tag="tool_use", tag_field="type"):
    id: str
    name: str
    input: dict[str, Any]


ContentBlock = TextBlock | ThinkingBlock | ToolUseBlock


class AssistantMessage(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[ContentBlock]
    stop_reason: str | None
    stop_sequence: str | None
    usage: Usage


# --- stream events (each sent as ``event: <type>``) ------------------------------


class TextDelta(msgspec.Struct, frozen=True, tag="text_delta", tag_field="type"):
    text: str


class ThinkingDelta(msgspec.Struct, frozen=True, tag="thinking_delta", tag_field="type"):
    thinking: str


class InputJsonDelta(msgspec.Struct, frozen=True, tag="input_json_delta", tag_field="type"):
    partial_json: str


class MessageStart(msgspec.Struct, frozen=True, tag="message_start", tag_field="type"):
    message: AssistantMessage


class BlockStart(msgspec.Struct, frozen=True, tag="content_block_start", tag_field="type"):
    index: int
    content_block: ContentBlock


class BlockDelta(msgspec.Struct, frozen=True, tag="content_block_delta", tag_field="type"):
    index: int
    delta: TextDelta | ThinkingDelta | InputJsonDelta


class BlockStop(msgspec.Struct, frozen=True, tag="content_block_stop", tag_field="type"):
    index: int


class StopDelta(msgspec.Struct, frozen=True):
    stop_reason: str
    stop_sequence: str | None


class MessageDelta(msgspec.Struct, frozen=True, tag="message_delta", tag_field="type"):
    delta: StopDelta
    usage: Usage


class MessageStop(msgspec.Struct, frozen=True, tag="message_stop", tag_field="type"):
    pass


class Ping(msgspec.Struct, frozen=True, tag="ping", tag_field="type"):
    pass


StreamEvent = MessageStart | BlockStart | BlockDelta | BlockStop | MessageDelta | MessageStop | Ping
