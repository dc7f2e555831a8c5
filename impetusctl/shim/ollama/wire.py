"""Ollama's shapes: request bodies (decoded strictly), the objects it answers
(streamed as NDJSON lines, the last with ``done: true``) and the error object
(``{"error": "..."}`` with Ollama's status codes)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from impetusd.protocol.api import TokenLogprob

from ..http import ApiError


class OllamaError(ApiError):
    """An error in Ollama's shape: ``{"error": "..."}``."""

    def body(self) -> ErrorBody:
        return ErrorBody(error=self.message)


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


# --- answers ----------------------------------------------------------------


class ErrorBody(msgspec.Struct, frozen=True):
    error: str


class Version(msgspec.Struct, frozen=True):
    version: str  # the Ollama API level followed
    impetus: str


class FunctionOut(msgspec.Struct, frozen=True):
    index: int
    name: str
    arguments: dict[str, Any]


class ToolCallOut(msgspec.Struct, frozen=True):
    id: str
    function: FunctionOut


class AssistantOut(msgspec.Struct, frozen=True):
    role: Literal["assistant"]
    content: str
    thinking: str | msgspec.UnsetType = msgspec.UNSET
    tool_calls: list[ToolCallOut] | msgspec.UnsetType = msgspec.UNSET


class ChatPiece(msgspec.Struct, frozen=True, kw_only=True):
    """One object of ``/api/chat``: a piece of the answer, or the last (``done``) with
    the reason and the counters (nanoseconds)."""

    model: str
    created_at: str
    message: AssistantOut
    logprobs: list[TokenLogprob] | msgspec.UnsetType = msgspec.UNSET
    done: bool = False
    done_reason: str | msgspec.UnsetType = msgspec.UNSET
    total_duration: int | msgspec.UnsetType = msgspec.UNSET
    load_duration: int | msgspec.UnsetType = msgspec.UNSET
    prompt_eval_count: int | msgspec.UnsetType = msgspec.UNSET
    prompt_eval_duration: int | msgspec.UnsetType = msgspec.UNSET
    eval_count: int | msgspec.UnsetType = msgspec.UNSET
    eval_duration: int | msgspec.UnsetType = msgspec.UNSET


class GeneratePiece(msgspec.Struct, frozen=True, kw_only=True):
    """One object of ``/api/generate``, as ``ChatPiece`` with the text as ``response``
    (and the legacy ``context``, always empty, in the last)."""

    model: str
    created_at: str
    response: str
    thinking: str | msgspec.UnsetType = msgspec.UNSET
    logprobs: list[TokenLogprob] | msgspec.UnsetType = msgspec.UNSET
    done: bool = False
    context: list[int] | msgspec.UnsetType = msgspec.UNSET
    done_reason: str | msgspec.UnsetType = msgspec.UNSET
    total_duration: int | msgspec.UnsetType = msgspec.UNSET
    load_duration: int | msgspec.UnsetType = msgspec.UNSET
    prompt_eval_count: int | msgspec.UnsetType = msgspec.UNSET
    prompt_eval_duration: int | msgspec.UnsetType = msgspec.UNSET
    eval_count: int | msgspec.UnsetType = msgspec.UNSET
    eval_duration: int | msgspec.UnsetType = msgspec.UNSET


class Details(msgspec.Struct, frozen=True):
    parent_model: str
    format: str
    family: str
    families: list[str] | None
    parameter_size: str
    quantization_level: str


class Tag(msgspec.Struct, frozen=True):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: Details


class Tags(msgspec.Struct, frozen=True):
    models: list[Tag]


class Running(msgspec.Struct, frozen=True):
    name: str
    model: str
    size: int
    digest: str
    details: Details
    expires_at: str
    size_vram: int
    context_length: int


class RunningList(msgspec.Struct, frozen=True):
    models: list[Running]


class ShowResponse(msgspec.Struct, frozen=True):
    modelfile: str
    parameters: str
    template: str
    details: Details
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: str


class EmbedResponse(msgspec.Struct, frozen=True):
    model: str
    embeddings: list[list[float]]
    total_duration: int
    load_duration: int
    prompt_eval_count: int


class EmbeddingResponse(msgspec.Struct, frozen=True):
    embedding: list[float]


class PullStatus(msgspec.Struct, frozen=True):
    """One line of a pull: a phase, or a file's progress (``digest`` names the file)."""

    status: str
    digest: str | msgspec.UnsetType = msgspec.UNSET
    total: int | msgspec.UnsetType = msgspec.UNSET
    completed: int | msgspec.UnsetType = msgspec.UNSET
