"""The ``Engine`` protocol a backend's ``start`` returns, and its optional capabilities, each
checked with ``isinstance`` (runtime-checkable protocols)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from impetusd.engine.messages import (
    DetokenizeOutput,
    DetokenizeRequest,
    EmbedOutput,
    EmbedRequest,
    EngineInfo,
    EngineResult,
    GenerateRequest,
    TokenizeOutput,
    TokenizeRequest,
    Tuning,
)
from impetusd.protocol.api import TokenLogprob


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
