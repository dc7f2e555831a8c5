"""Typed params and results of the daemon's RPC methods.

New fields always get defaults; existing field types never change.
Generation params use OpenAI's names where one exists.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

KeepAlive = float | str | None  # seconds, or "5m" / "1h" / "-1"; None = default


class Empty(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A method that takes no params."""


# --- daemon.* -------------------------------------------------------------------
class PluginInfo(msgspec.Struct, frozen=True):
    name: str
    hooks: list[str]


class DaemonInfo(msgspec.Struct, frozen=True):
    name: str
    version: str
    pid: int
    socket: str
    home: str
    started_at: float
    uptime_s: float
    methods: list[str]
    plugins: list[PluginInfo]
    formats: list[str]
    backends: list[str]
    hardware: dict[str, Any]


class ModelFailure(msgspec.Struct, frozen=True):
    """A model whose worker died (crash, signal, hang) within the crash window.

    ``state`` is ``failed`` while its circuit is open (requests are refused with
    ``ModelFailed``), ``recovering`` while the next start is merely delayed.
    """

    name: str
    state: Literal["failed", "recovering"]
    reason: str
    last_cause: str
    failures: int  # within the window
    total_failures: int  # since the daemon started
    hangs: int
    last_failure_at: float
    retry_after_s: float  # until the circuit closes / the backoff ends


class Health(msgspec.Struct, frozen=True):
    status: Literal["ok", "degraded", "shutting_down"]  # degraded: a model is failed
    uptime_s: float
    connections: int
    in_flight: int
    loaded_models: int
    failures: list[ModelFailure] = []


class Describe(msgspec.Struct, frozen=True):
    methods: dict[str, Any]
    components: dict[str, Any]


class ShutdownResult(msgspec.Struct, frozen=True):
    stopping: bool


# --- models.* -------------------------------------------------------------------
class ModelEntry(msgspec.Struct, frozen=True):
    name: str
    path: str | None
    format: str | None
    size_bytes: int | None
    available: bool
    loaded: bool
    source: str
    metadata: dict[str, Any] = {}


class ModelList(msgspec.Struct, frozen=True):
    models: list[ModelEntry]


class LoadParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    model: str
    backend: str | None = None
    keep_alive: KeepAlive = None


class UnloadParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    model: str


class LoadedModel(msgspec.Struct, frozen=True):
    name: str
    path: str
    format: str
    backend: str
    pid: int
    loaded_at: float
    load_ms: float
    expires_at: float | None
    in_flight: int
    requests: int
    rss_bytes: int | None


class LoadResult(msgspec.Struct, frozen=True):
    model: LoadedModel
    already_loaded: bool


class UnloadResult(msgspec.Struct, frozen=True):
    name: str
    pid: int


class LoadedList(msgspec.Struct, frozen=True):
    models: list[LoadedModel]
    failed: list[ModelFailure] = []  # models whose workers keep dying (not loaded)


# --- generation -----------------------------------------------------------------
class Message(msgspec.Struct, frozen=True):
    role: Literal["system", "user", "assistant", "tool"]
    content: str


class SamplingParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Fields shared by ``chat`` and ``complete``. ``None`` means "not asked for"."""

    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    keep_alive: KeepAlive = None


class ChatParams(SamplingParams, frozen=True, forbid_unknown_fields=True, kw_only=True):
    messages: list[Message]


class CompleteParams(SamplingParams, frozen=True, forbid_unknown_fields=True, kw_only=True):
    prompt: str


class Usage(msgspec.Struct, frozen=True):
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0


class Timings(msgspec.Struct, frozen=True):
    queued_ms: float
    load_ms: float
    ttft_ms: float | None
    prefill_tps: float | None
    decode_tps: float | None
    total_ms: float


FinishReason = Literal["stop", "length", "cancelled"]


class GenerationResult(msgspec.Struct, frozen=True, omit_defaults=True):
    model: str
    backend: str
    finish_reason: FinishReason
    usage: Usage
    timings: Timings
    message: Message | None = None
    text: str | None = None


class Chunk(msgspec.Struct, frozen=True):
    """Params of the ``chat.chunk`` notification."""

    id: int | str | None
    delta: str


class CancelParams(msgspec.Struct, frozen=True):
    id: int | str
