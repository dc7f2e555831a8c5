"""OpenAI's shapes: request bodies (decoded strictly: every field OpenAI defines is
declared, any other is refused), response bodies and chunks, and the error object.

``_Sampling`` holds the sampling fields chat and completions share, in one Struct.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from impetusd.protocol.api import KeepAlive, Sampling, Timings

from ..http import ApiError

NOT_GIVEN: Any = msgspec.UNSET


# --- requests ---------------------------------------------------------------


class StreamOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    include_usage: bool = False


class FunctionCallIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    arguments: str


class ToolCallIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    function: FunctionCallIn
    type: Literal["function"] = "function"


class ChatMessage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    refusal: str | None = None
    reasoning_content: str | None = None  # an earlier answer's thinking, as llama-server returns it


class _Sampling(Sampling, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The daemon's sampling fields (``Sampling``, named there once) and what chat and
    completions share beside them."""

    # OpenAI's token ids come as JSON object keys (strings); translate.py makes them ints.
    logit_bias: dict[str, float] | None = None  # type: ignore[assignment]
    model: str
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    n: int | None = None
    logprobs: Any = None
    user: str | None = None  # an end-user id for the caller's own records; changes nothing
    # Extensions other local servers accept too (top_k and min_p come with Sampling).
    keep_alive: KeepAlive = None
    think: bool | None = None  # reasoning on/off where the model's template supports it (as Ollama's)


class ChatCompletionRequest(_Sampling, frozen=True, forbid_unknown_fields=True, kw_only=True):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    functions: list[Any] | None = None
    function_call: Any = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    modalities: list[str] | None = None
    audio: Any = None
    prediction: Any = None
    reasoning_effort: str | None = None
    service_tier: str | None = None
    web_search_options: Any = None


class CompletionRequest(_Sampling, frozen=True, forbid_unknown_fields=True, kw_only=True):
    prompt: str | list[str]
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None


class EmbeddingRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    model: str
    input: str | list[Any]
    encoding_format: str | None = None
    dimensions: int | None = None
    user: str | None = None
    keep_alive: KeepAlive = None


# --- responses --------------------------------------------------------------


class PromptTokensDetails(msgspec.Struct, frozen=True):
    cached_tokens: int


class CompletionUsage(msgspec.Struct, frozen=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class ImpetusExtension(msgspec.Struct, frozen=True, omit_defaults=True):
    """What the daemon measured (and any warning), under a key of its own."""

    backend: str
    timings: Timings
    warning: str | None = None


class FunctionCall(msgspec.Struct, frozen=True, omit_defaults=True):
    name: str | None = None
    arguments: str | None = None  # "" in a streamed call's first piece, as OpenAI sends it


class OutToolCall(msgspec.Struct, frozen=True):
    id: str
    function: FunctionCall
    type: Literal["function"] = "function"


class DeltaToolCall(msgspec.Struct, frozen=True, omit_defaults=True):
    """One piece of a streamed call: the first has ``id``, ``type`` and the name."""

    index: int
    function: FunctionCall
    id: str | None = None
    type: Literal["function"] | None = None


class TopLogprob(msgspec.Struct, frozen=True):
    token: str
    logprob: float
    bytes: list[int] | None


class ContentLogprob(msgspec.Struct, frozen=True):
    token: str
    logprob: float
    bytes: list[int] | None
    top_logprobs: list[TopLogprob]


class ChoiceLogprobs(msgspec.Struct, frozen=True):
    content: list[ContentLogprob] | None
    refusal: None = None


class LegacyLogprobs(msgspec.Struct, frozen=True):
    """The completions endpoint's logprobs: parallel lists."""

    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]


class AssistantMessage(msgspec.Struct, frozen=True):
    role: Literal["assistant"]
    content: str | None
    refusal: None = None
    tool_calls: list[OutToolCall] | msgspec.UnsetType = msgspec.UNSET
    reasoning_content: str | msgspec.UnsetType = msgspec.UNSET


class ChatChoice(msgspec.Struct, frozen=True):
    index: int
    message: AssistantMessage
    finish_reason: str
    logprobs: ChoiceLogprobs | None = None


class ChatCompletion(msgspec.Struct, frozen=True):
    id: str
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: CompletionUsage
    impetus: ImpetusExtension
    object: Literal["chat.completion"] = "chat.completion"


class Delta(msgspec.Struct, frozen=True, omit_defaults=True):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[DeltaToolCall] | None = None


class ChunkChoice(msgspec.Struct, frozen=True):
    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: ChoiceLogprobs | None = None


class ChatCompletionChunk(msgspec.Struct, frozen=True):
    id: str
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None | msgspec.UnsetType = msgspec.UNSET
    impetus: ImpetusExtension | msgspec.UnsetType = msgspec.UNSET
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"


class TextChoice(msgspec.Struct, frozen=True):
    index: int
    text: str
    finish_reason: str | None = None
    logprobs: LegacyLogprobs | None = None


class TextCompletion(msgspec.Struct, frozen=True):
    id: str
    created: int
    model: str
    system_fingerprint: str
    choices: list[TextChoice]
    usage: CompletionUsage | None | msgspec.UnsetType = msgspec.UNSET
    impetus: ImpetusExtension | msgspec.UnsetType = msgspec.UNSET
    object: Literal["text_completion"] = "text_completion"


class EmbeddingItem(msgspec.Struct, frozen=True):
    index: int
    embedding: list[float] | str
    object: Literal["embedding"] = "embedding"


class EmbeddingUsage(msgspec.Struct, frozen=True):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(msgspec.Struct, frozen=True):
    data: list[EmbeddingItem]
    model: str
    usage: EmbeddingUsage
    object: Literal["list"] = "list"


class ModelCard(msgspec.Struct, frozen=True):
    id: str
    created: int
    owned_by: str
    object: Literal["model"] = "model"


class ModelCardList(msgspec.Struct, frozen=True):
    data: list[ModelCard]
    object: Literal["list"] = "list"


# --- errors -----------------------------------------------------------------

_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


class OpenAIError(ApiError):
    """An error answered in OpenAI's shape: ``{"error": {message, type, param, code}}``."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None, type: str | None = None) -> None:  # noqa: A002
        super().__init__(status, message)
        self.param = param
        self.code = code
        self.type = type or _TYPE.get(status, "server_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(OpenAIError):
    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(400, message, param=param, code=code or "invalid_request")
