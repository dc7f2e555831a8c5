"""Messages on the daemon ↔ worker pipe (same NDJSON JSON-RPC framing as clients).

The daemon calls ``worker.start`` (StartParams → EngineInfo) once, then
``generate`` (GenerateParams → GenerateDone), ``embed`` (EmbedRequest →
EmbedDone), ``tokenize`` (TokenizeRequest → TokenizeOutput) and ``detokenize``
(DetokenizeRequest → DetokenizeOutput); it notifies ``worker.tune`` (Tuning), ``worker.warm_up`` and
``worker.shutdown``, and ``$/cancel {id}`` (the protocol's own). The worker
notifies ``chunk`` (TextChunk, routed to its generate call), ``heartbeat``, and
``worker.fatal`` (Fatal: why it is about to exit, e.g. its engine's child process died).
"""

from __future__ import annotations

import msgspec

from impetusd.engine.messages import EmbedOutput, EngineResult, GenerateRequest, ModelSpec, Tuning
from impetusd.protocol.api import TokenLogprob
from impetusd.protocol.messages import RequestId

# daemon → worker: requests
START = "worker.start"
GENERATE = "generate"
EMBED = "embed"
TOKENIZE = "tokenize"
DETOKENIZE = "detokenize"
# daemon → worker: notifications
TUNE = "worker.tune"
WARM_UP = "worker.warm_up"
SHUTDOWN = "worker.shutdown"
# worker → daemon: notifications
CHUNK = "chunk"
HEARTBEAT = "heartbeat"
FATAL = "worker.fatal"


class CacheSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Where and how much the worker's prompt-cache tiers may keep."""

    model_digest: str
    directory: str | None = None  # $IMPETUS_HOME/cache/prompts/<digest>; None: no disk tier
    memory_bytes: int = 0
    disk_bytes: int = 0


class StartParams(msgspec.Struct, frozen=True):
    """First request the daemon sends: which backend to start on which model."""

    spec: ModelSpec
    backend: str
    plugins: list[str] = []
    disabled_plugins: list[str] = []
    tuning: Tuning | None = None  # start with these settings (the daemon is backing off)
    warm_up: bool = True  # False: postponed until the daemon sends worker.warm_up
    cache: CacheSettings | None = None


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

    id: RequestId  # the generate request's, as the daemon sent it (the daemon numbers its calls)
    text: str
    logprobs: list[TokenLogprob] | None = None  # the tokens decoded since the previous chunk, when asked


class Fatal(msgspec.Struct, frozen=True):
    """Worker → daemon, just before the worker exits: why (part of the crash cause)."""

    reason: str
