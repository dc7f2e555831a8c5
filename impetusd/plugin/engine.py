"""What a backend plugin implements, and the messages between daemon and worker.

The daemon only reads a backend's declared ``capabilities`` and ``formats``; the
``start`` callable runs inside the worker process, where heavy imports belong.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, Protocol, runtime_checkable

import msgspec

from impetusd.protocol.api import FinishReason, Format, Message, TokenLogprob, Tool

# Capability names are the request fields they allow (plus "chat", "complete", "embed").
SAMPLING_CAPABILITIES = frozenset(
    {
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "min_p",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
    }
)


class PromptCacheTier(Protocol):
    """One tier instance in a worker: KV caches of earlier prompts, found by the
    longest common token prefix. Cache objects are the backend's own."""

    def match(self, tokens: list[int]) -> int:
        """How many leading ``tokens`` this tier can serve (cheap; nothing loaded)."""
        ...

    def fetch(self, tokens: list[int]) -> tuple[Any, int] | None:
        """A private copy of the cache for the longest stored prefix of ``tokens``
        and its length, or None."""
        ...

    def store(self, tokens: list[int], cache: Any) -> None:
        """Keep ``cache`` (holding exactly ``tokens``), within the tier's budget."""
        ...

    def stats(self) -> dict[str, int]: ...


class TextSink(Protocol):
    """Where an engine sends decoded text: ``on_text(piece)``, or, when the request
    asked for logprobs (``top_logprobs`` not None), ``on_text(piece, logprobs)`` with
    the tokens decoded since the previous call (the piece may be empty)."""

    def __call__(self, text: str, logprobs: list[TokenLogprob] | None = None, /) -> None: ...


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
    max_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    stop: list[str] = []
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = {}
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


class Engine(Protocol):
    """One loaded model inside a worker. Calls happen on the worker's main thread.

    The worker ends with its process (the daemon closes its stdin, or kills it):
    an engine has no ``close``; the operating system frees what it holds. The
    optional capabilities below are found with ``isinstance``."""

    def info(self) -> EngineInfo: ...

    def generate(
        self,
        req: GenerateRequest,
        on_text: TextSink,
        should_stop: Callable[[], bool],
    ) -> EngineResult:
        """Run to completion, calling ``on_text`` per decoded piece and checking
        ``should_stop`` between tokens (then finish with ``"cancelled"``)."""
        ...


@runtime_checkable
class BatchEngine(Protocol):
    """What an engine adds to decode concurrent requests together (continuous
    batching). The worker detects it; engines without it get one ``generate``
    at a time. All calls happen on the worker's main thread, except ``tune``."""

    def submit(
        self,
        req: GenerateRequest,
        on_text: TextSink,
        should_stop: Callable[[], bool],
        on_done: Callable[[EngineResult | Exception], None],
    ) -> None:
        """Queue a generation; it joins the batch between steps. ``on_done`` is
        called exactly once, with the result or the exception that ended it."""
        ...

    def busy(self) -> bool:
        """True while any submitted request is waiting or running."""
        ...

    def step(self) -> None:
        """One unit of work: a decode step for the batch and one prefill chunk
        for prompts joining it; requests join and leave here."""
        ...


@runtime_checkable
class WakeableEngine(Protocol):
    """What a ``BatchEngine`` whose ``step`` waits for news (text from another thread) adds:
    ``wake`` is called from the worker's reader thread when a request arrives, so that
    the waiting ``step`` returns at once and the request joins without waiting out that wait."""

    def wake(self) -> None: ...


@runtime_checkable
class TunableEngine(Protocol):
    """What an engine adds to follow ``worker.tune`` (thermal backoff): batch size
    and prefill chunk limits, each None for the engine's default. Called from the
    worker's reader thread, also while a generation runs; apply between steps."""

    def tune(self, tuning: Tuning) -> None: ...


@runtime_checkable
class WarmUpEngine(Protocol):
    """What an engine adds to run a token through the model before the first
    request, so it does not pay for setup. The daemon postpones it while the
    machine is hot (``worker.warm_up``); a warm-up that raises fails the load."""

    def warm_up(self) -> None: ...


@runtime_checkable
class CacheTierEngine(Protocol):
    """What an engine adds to use prompt-cache tiers (``impetus_register_cache_tiers``).

    ``cache_variant`` names the engine's numeric setup (e.g. ``"f32"`` when it
    widened the weights, ``""`` for none); tiers keep caches of each variant
    apart. After loading, the worker builds the tiers registered for the
    engine's backend, in order, and hands them over once, as ``(name, tier)``."""

    cache_variant: str

    def use_cache_tiers(self, tiers: list[tuple[str, PromptCacheTier]]) -> None: ...


@runtime_checkable
class FatalEngine(Protocol):
    """What an engine adds when something it depends on can die under it (a child
    process): the worker sets ``on_fatal`` after the start, and the engine calls it,
    from any thread, with the reason. The worker tells the daemon the reason (it becomes
    the ``WorkerCrashed`` cause) and exits; ``on_fatal`` does not return."""

    on_fatal: Callable[[str], None]


class Embedder(Protocol):
    """What an engine adds when its backend declares the ``embed`` capability."""

    def embed(self, req: EmbedRequest) -> EmbedOutput: ...


class Tokenizer(Protocol):
    """What an engine adds when its backend declares the ``tokenize`` capability."""

    def tokenize(self, req: TokenizeRequest) -> TokenizeOutput: ...

    def detokenize(self, req: DetokenizeRequest) -> DetokenizeOutput: ...


class BackendSpec(msgspec.Struct, frozen=True):
    """A backend as registered by a plugin."""

    name: str
    formats: frozenset[str]
    capabilities: frozenset[str]
    start: Callable[[ModelSpec], Engine]
    devices: frozenset[str] = frozenset({"cpu"})
    description: str = ""
    # What one worker needs beside the weights and the KV cache (interpreter,
    # libraries, buffers); part of the daemon's memory estimate (impetusd/residency/budget.py).
    memory_overhead_bytes: int = 128 * 1024 * 1024
    # The weights' bytes in the worker when they are not their size on disk (a backend
    # that widens quantized weights), given the worker's environment; None: the files' size.
    memory_weights: Callable[[ModelSpec, Mapping[str, str]], int | None] | None = None
    # A backend that offloads layers to a GPU: given the model, the worker's environment, the
    # layers asked for (``models.load``'s ``n_gpu_layers``; None: the backend's default) and the
    # GPU bytes the load may take, the layers it will offload and the model's layers. The daemon
    # splits the estimate by them (host and GPU sides of the budget) and gives the worker the
    # count as ``IMPETUS_GPU_LAYERS``. None: the backend cannot offload (``n_gpu_layers`` is refused).
    gpu_layers: Callable[[ModelSpec, Mapping[str, str], int | None, int], tuple[int, int]] | None = None
    # Modules a spare worker imports before it is given a model (impetusd/residency/spares.py).
    preload: tuple[str, ...] = ()
    max_batch: int = 1  # requests decoded together per model by default (engines implementing BatchEngine)
    # The memory estimate's KV cache: this many sequences (a KV cache per slot), each of
    # ``min(context_tokens, the model's context)`` tokens; None: the configured estimate context.
    kv_sequences: int = 1
    context_tokens: int | None = None
    # A backend that can split a model across ``ranks`` processes on this machine: given the
    # model and the rank count (> 1), returns, or raises ``NoBackend`` naming why that model
    # cannot be split so (checked in the daemon, before anything loads). None: one process only.
    check_ranks: Callable[[ModelSpec, int], None] | None = None
