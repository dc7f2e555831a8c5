"""Ollama's shapes: request bodies (decoded strictly), and the error object
(``{"error": "..."}`` with Ollama's status codes)."""

from __future__ import annotations

from typing import Any

import msgspec

from ..http import ApiError


class OllamaError(ApiError):
    """An error in Ollama's shape: ``{"error": "..."}``."""

    def body(self) -> dict[str, Any]:
        return {"error": self.message}


class OllamaBadRequest(OllamaError):
    """A request Ollama's API would answer with 400; ``field`` names what is wrong."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(400, message)
        self.field = field


class OllamaMessage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    role: str
    content: str = ""
    images: list[str] | None = None
    tool_calls: list[Any] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None
    thinking: str | None = None


class _Generation(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    model: str
    stream: bool = True  # Ollama streams unless told not to
    format: Any = None
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None  # the daemon's own: seconds or "5m"; 0 unloads; negative keeps
    think: bool | str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None


class ChatRequest(_Generation, frozen=True, forbid_unknown_fields=True, kw_only=True):
    messages: list[OllamaMessage] = []
    tools: list[Any] | None = None


class GenerateRequest(_Generation, frozen=True, forbid_unknown_fields=True, kw_only=True):
    prompt: str | None = None
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool | None = None
    images: list[str] | None = None


class EmbedRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    model: str
    input: str | list[str]
    truncate: bool | None = None  # over-long input is refused either way, never cut
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None
    dimensions: int | None = None


class EmbeddingsRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    model: str
    prompt: str
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None


class NameRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """show / delete / pull: ``model`` (or the older ``name``)."""

    model: str | None = None
    name: str | None = None
    verbose: bool | None = None  # show: the full tensor listing; Impetus has no more to add
    stream: bool = True
    insecure: bool | None = None


class CopyRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    source: str
    destination: str
