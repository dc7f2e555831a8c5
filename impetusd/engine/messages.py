"""What the daemon and a worker hand an engine, and what it hands back: typed, frozen Structs."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from impetusd.protocol.api import FinishReason, Format, Message, ResolvedSampling, TokenLogprob, Tool


class Tuning(msgspec.Struct, frozen=True):
    """Notification ``worker.tune``: scheduling settings (None = the engine's default)."""

    max_batch: int | None = None
    prefill_chunk: int | None = None


KvType = Literal["f16", "q8_0", "q4_0"]
FlashAttn = Literal["auto", "on", "off"]


class ModelSpec(msgspec.Struct, frozen=True):
    """A model resolved to something a backend can start."""

    name: str
    path: str
    format: str
    source: str = "path"
    metadata: dict[str, Any] = {}
    options: LoadOptions | None = None  # how to load it (models.load, config); None: the defaults


class LoadOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Per-load engine settings (``models.load`` params over the configuration). Backends
    that cannot honour one refuse the load; the llama.cpp backend honours them all."""

    kv_type: KvType = "f16"  # the KV cache's element type (K and V)
    flash_attn: FlashAttn = "auto"
    draft: ModelSpec | None = None  # speculative decoding with this draft model
    ngram: bool = False  # speculative decoding from n-grams of the context (no draft model)
    ranks: int = 1  # processes on this machine the model is split across (backends with ``check_ranks``)


class GenerateRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Daemon → worker: one generation, every option already validated."""

    kind: Literal["chat", "complete"]
    messages: list[Message] | None = None
    prompt: str | None = None
    sampling: ResolvedSampling = msgspec.field(default_factory=ResolvedSampling)  # how each token is picked
    format: Format | None = None  # the answer must match it (already validated; docs/structured.md)
    top_logprobs: int | None = None  # None: no logprobs; else per token its logprob and this many alternatives (0-20)
    tools: list[Tool] | None = None  # rendered into the prompt (the template's way, or the fallback)
    think: bool | None = None  # the template's ``enable_thinking``; None: its default
    prefix: str = ""  # the answer so far: appended to the rendered prompt, generation continues it


class EmbedRequest(msgspec.Struct, frozen=True):
    """Daemon → worker: texts to embed (backends declaring the ``embed`` capability)."""

    texts: list[str]


class TokenizeRequest(msgspec.Struct, frozen=True, kw_only=True):
    """Daemon → worker (backends declaring ``tokenize``): ``text`` as it is, or
    ``messages`` rendered through the model's chat template with the generation
    prompt, exactly as a chat's prompt is built."""

    text: str | None = None
    messages: list[Message] | None = None


class TokenizeOutput(msgspec.Struct, frozen=True):
    """Worker → daemon: the token ids and each one's text piece."""

    ids: list[int]
    pieces: list[str]


class DetokenizeRequest(msgspec.Struct, frozen=True):
    ids: list[int]


class DetokenizeOutput(msgspec.Struct, frozen=True):
    text: str
    pieces: list[str]


class EmbedOutput(msgspec.Struct, frozen=True):
    """Worker → daemon: one vector per text, in order (unit length unless the model says otherwise)."""

    vectors: list[list[float]]
    prompt_tokens: int


class EngineResult(msgspec.Struct, frozen=True, kw_only=True):
    """Worker → daemon: how a generation ended."""

    text: str
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    ttft_ms: float | None = None
    prefill_tps: float | None = None
    decode_tps: float | None = None
    batch_size: int | None = None  # most sequences that decoded together with this one (batch engines)
    batch_limit: int | None = None  # the engine's batch size limit when this request finished
    queued_ms: float | None = None  # time a batch engine held the request before it joined the batch
    stop_sequence: str | None = None  # the stop string that ended the text (finish_reason "stop")
    draft_tokens: int | None = None  # speculative decoding: tokens drafted, and of them accepted
    draft_accepted: int | None = None
    logprobs: list[TokenLogprob] | None = None  # when the request asked (top_logprobs not None)


class EngineInfo(msgspec.Struct, frozen=True):
    """Worker → daemon once the model is loaded."""

    backend: str
    load_ms: float
    context_length: int | None = None
    details: dict[str, Any] = {}
    # the values of ``think`` (None: the template's default) for which the chat template's
    # generation prompt ends inside ``<think>``: the answer then starts in its reasoning
    reasoning_opened: list[bool | None] = []
