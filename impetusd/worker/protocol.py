"""Messages on the daemon ↔ worker pipe (same NDJSON JSON-RPC framing as clients)."""

from __future__ import annotations

import msgspec

from ..backend import EmbedOutput, EngineResult, GenerateRequest, ModelSpec


class StartParams(msgspec.Struct, frozen=True):
    """First request the daemon sends: which backend to start on which model."""

    spec: ModelSpec
    backend: str
    plugins: list[str] = []
    disabled_plugins: list[str] = []


class GenerateParams(msgspec.Struct, frozen=True):
    request: GenerateRequest


class GenerateDone(msgspec.Struct, frozen=True):
    result: EngineResult
    queued_ms: float


class EmbedDone(msgspec.Struct, frozen=True):
    output: EmbedOutput
    queued_ms: float


class TextChunk(msgspec.Struct, frozen=True):
    """Notification ``chunk``: a piece of decoded text for request ``id``."""

    id: int
    text: str


class CancelTarget(msgspec.Struct, frozen=True):
    id: int
