"""OpenAI response shapes, built from the daemon's typed results."""

from __future__ import annotations

import array
import base64
import secrets
import time
from typing import Any, Literal

import msgspec

from impetusd import __version__
from impetusd.protocol.api import EmbedResult, GenerationResult, ModelEntry, Timings, Usage

NOT_GIVEN: Any = msgspec.UNSET


class PromptTokensDetails(msgspec.Struct, frozen=True):
    cached_tokens: int


class CompletionUsage(msgspec.Struct, frozen=True):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class ImpetusExtension(msgspec.Struct, frozen=True):
    """What the daemon measured, under a key of its own."""

    backend: str
    timings: Timings


class AssistantMessage(msgspec.Struct, frozen=True):
    role: Literal["assistant"]
    content: str
    refusal: None = None


class ChatChoice(msgspec.Struct, frozen=True):
    index: int
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


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


class ChunkChoice(msgspec.Struct, frozen=True):
    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: None = None


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
    logprobs: None = None


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


def chat_completion(rid: str, created: int, result: GenerationResult) -> ChatCompletion:
    content = result.message.content if result.message else ""
    return ChatCompletion(
        id=rid,
        created=created,
        model=result.model,
        system_fingerprint=fingerprint(),
        choices=[ChatChoice(index=0, message=AssistantMessage(role="assistant", content=content), finish_reason=finish(result.finish_reason))],
        usage=usage_of(result.usage),
        impetus=ImpetusExtension(backend=result.backend, timings=result.timings),
    )


def text_completion(rid: str, created: int, result: GenerationResult) -> TextCompletion:
    return TextCompletion(
        id=rid,
        created=created,
        model=result.model,
        system_fingerprint=fingerprint(),
        choices=[TextChoice(index=0, text=result.text or "", finish_reason=finish(result.finish_reason))],
        usage=usage_of(result.usage),
        impetus=ImpetusExtension(backend=result.backend, timings=result.timings),
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
