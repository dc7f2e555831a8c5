"""OpenAI response shapes, built from the daemon's typed results."""

from __future__ import annotations

import array
import base64
import secrets
import time
from typing import Any, Literal

import msgspec

from impetusd import __version__
from impetusd.protocol.api import Choice, EmbedResult, GenerationResult, Message, ModelEntry, Timings, TokenLogprob, ToolCall, Usage

NOT_GIVEN: Any = msgspec.UNSET


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


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def fingerprint() -> str:
    return f"impetus-{__version__}"


def finish(reason: str) -> str:
    # "cancelled" only reaches a client that is already gone; OpenAI has no such value.
    return "stop" if reason == "cancelled" else reason


def usage_of(usage: Usage) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.prompt_tokens + usage.completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_tokens),
    )


def choices_of(result: GenerationResult) -> list[Choice]:
    """Every choice of a result (one, unless ``n`` > 1)."""
    if result.choices:
        return result.choices
    one = Choice(index=0, finish_reason=result.finish_reason, message=result.message, text=result.text, logprobs=result.logprobs)
    return [one]


def tool_calls_of(calls: list[ToolCall] | None) -> list[OutToolCall] | msgspec.UnsetType:
    if not calls:
        return msgspec.UNSET
    return [OutToolCall(id=c.id, function=FunctionCall(name=c.name, arguments=c.arguments)) for c in calls]


def assistant(message: Message | None) -> AssistantMessage:
    if message is None:
        return AssistantMessage(role="assistant", content="")
    calls = tool_calls_of(message.tool_calls)
    content = None if calls and not message.content else message.content
    reasoning = message.reasoning if message.reasoning else msgspec.UNSET
    return AssistantMessage(role="assistant", content=content, tool_calls=calls, reasoning_content=reasoning)


def chat_logprobs(tokens: list[TokenLogprob] | None) -> ChoiceLogprobs | None:
    if tokens is None:
        return None
    return ChoiceLogprobs(
        content=[ContentLogprob(t.token, t.logprob, t.bytes, [TopLogprob(a.token, a.logprob, a.bytes) for a in t.top_logprobs]) for t in tokens]
    )


def legacy_logprobs(tokens: list[TokenLogprob] | None, offset: int = 0) -> LegacyLogprobs | None:
    """``offset``: where these tokens' text starts in the whole completion."""
    if tokens is None:
        return None
    offsets = []
    for t in tokens:
        offsets.append(offset)
        offset += len(t.token)
    tops = [{a.token: a.logprob for a in t.top_logprobs} for t in tokens]
    return LegacyLogprobs(
        tokens=[t.token for t in tokens],
        token_logprobs=[t.logprob for t in tokens],
        top_logprobs=tops if any(tops) else None,
        text_offset=offsets,
    )


def chat_completion(rid: str, created: int, result: GenerationResult) -> ChatCompletion:
    return ChatCompletion(
        id=rid,
        created=created,
        model=result.model,
        system_fingerprint=fingerprint(),
        choices=[
            ChatChoice(index=c.index, message=assistant(c.message), finish_reason=finish(c.finish_reason), logprobs=chat_logprobs(c.logprobs))
            for c in choices_of(result)
        ],
        usage=usage_of(result.usage),
        impetus=ImpetusExtension(backend=result.backend, timings=result.timings, warning=result.warning),
    )


def text_completion(rid: str, created: int, result: GenerationResult) -> TextCompletion:
    return TextCompletion(
        id=rid,
        created=created,
        model=result.model,
        system_fingerprint=fingerprint(),
        choices=[
            TextChoice(index=c.index, text=c.text or "", finish_reason=finish(c.finish_reason), logprobs=legacy_logprobs(c.logprobs))
            for c in choices_of(result)
        ],
        usage=usage_of(result.usage),
        impetus=ImpetusExtension(backend=result.backend, timings=result.timings, warning=result.warning),
    )


def embedding_list(result: EmbedResult, encoding: str | None) -> EmbeddingList:
    def encode(vector: list[float]) -> list[float] | str:
        if encoding != "base64":
            return vector
        return base64.b64encode(array.array("f", vector).tobytes()).decode("ascii")  # little-endian float32

    return EmbeddingList(
        data=[EmbeddingItem(index=i, embedding=encode(v)) for i, v in enumerate(result.embeddings)],
        model=result.model,
        usage=EmbeddingUsage(prompt_tokens=result.usage.prompt_tokens, total_tokens=result.usage.prompt_tokens),
    )


def model_cards(entries: list[ModelEntry], started: float) -> ModelCardList:
    cards = [ModelCard(id=e.name, created=int(started), owned_by="impetus") for e in entries if e.available]
    return ModelCardList(data=cards)


def now() -> int:
    return int(time.time())
