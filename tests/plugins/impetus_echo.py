"""A third-party-style plugin used by the tests, loaded through IMPETUS_PLUGINS.

It adds a model format (``*.echo`` files), a backend that streams the last user
message back word by word, and an RPC method ``echo.ping``. Everything goes
through the real hooks, the real daemon and a real worker process.

An ``.echo`` file is either a bare number (the delay between words, seconds) or
TOML with the fields of ``EchoSettings``, which also let a test make the engine
misbehave the way real engines do: crash, hang, or fail to allocate memory.

The engine honours ``worker.tune`` and counts warm-ups; a chat whose last
message is ``tuning?`` answers with them as one JSON word, so a test sees what
the daemon told the worker.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any, Callable

import msgspec

from impetusd.plugin_api import (
    BackendSpec,
    DetokenizeOutput,
    DetokenizeRequest,
    EngineInfo,
    EngineResult,
    GenerateRequest,
    MethodSpec,
    ModelFormat,
    ModelSpec,
    PluginRegistry,
    TokenizeOutput,
    TokenizeRequest,
    hookimpl,
)


class PingParams(msgspec.Struct, frozen=True):
    text: str = "ping"


class PingResult(msgspec.Struct, frozen=True):
    text: str
    pid: int


def ping(daemon: Any, params: PingParams, ctx: Any) -> PingResult:
    return PingResult(text=f"echo: {params.text}", pid=os.getpid())


class EchoSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    delay_s: float = 0.0  # between words
    repeat: int = 1  # echo the words this many times
    crash_after: int | None = None  # words sent, then the worker SIGKILLs itself
    hang_after: int | None = None  # words sent, then it sleeps without a sound
    memory_errors: int = 0  # the first N generations in a worker raise MemoryError
    pid_log: str | None = None  # each worker appends its pid here when it starts
    load_s: float = 0.0  # the engine takes this long to load
    working_set_bytes: int | None = None  # reported as an accelerator's recommended working set


def _detect(path: Path) -> bool:
    return path.is_file() and path.suffix == ".echo"


def _inspect(path: Path) -> dict[str, Any]:
    text = path.read_text().strip()
    try:
        return {"delay_s": float(text or 0)}
    except ValueError:
        return msgspec.structs.asdict(msgspec.toml.decode(text, type=EchoSettings))


class EchoEngine:
    def __init__(self, settings: EchoSettings) -> None:
        self.settings = settings
        self.memory_errors_left = settings.memory_errors
        self.tuning: dict[str, Any] = {"max_batch": None, "prefill_chunk": None}
        self.warm_ups = 0
        if settings.load_s:
            time.sleep(settings.load_s)
        if settings.pid_log:
            with open(settings.pid_log, "a") as fh:
                fh.write(f"{os.getpid()}\n")

    def info(self) -> EngineInfo:
        details: dict[str, Any] = {"pid": os.getpid(), **self.report()}
        if self.settings.working_set_bytes:
            details["recommended_working_set_bytes"] = self.settings.working_set_bytes
        return EngineInfo(backend="echo", load_ms=0.0, details=details)

    def tune(self, tuning: Any) -> None:
        self.tuning = msgspec.structs.asdict(tuning)

    def warm_up(self) -> None:
        self.warm_ups += 1

    def report(self) -> dict[str, Any]:
        return {**self.tuning, "warm_ups": self.warm_ups}

    def generate(self, req: GenerateRequest, on_text: Callable[[str], None], should_stop: Callable[[], bool]) -> EngineResult:
        cfg = self.settings
        if self.memory_errors_left > 0:
            self.memory_errors_left -= 1
            raise MemoryError("echo: cannot allocate the KV cache")
        source = req.messages[-1].content if req.messages else (req.prompt or "")
        if source == "tuning?":
            source = msgspec.json.encode(self.report()).decode()
        words = source.split() * cfg.repeat
        sent: list[str] = []
        finish = "stop"
        for i, word in enumerate(words):
            if i == cfg.crash_after:
                os.kill(os.getpid(), signal.SIGKILL)
            if i == cfg.hang_after:
                time.sleep(3600)  # stuck in native code: no tokens, no cancellation checks
            if should_stop():
                finish = "cancelled"
                break
            if i >= req.sampling.max_tokens:
                finish = "length"
                break
            piece = word if i == 0 else " " + word
            on_text(piece)
            sent.append(piece)
            if cfg.delay_s:
                time.sleep(cfg.delay_s)
        return EngineResult(text="".join(sent), finish_reason=finish, prompt_tokens=len(words), completion_tokens=len(sent))  # type: ignore[arg-type]


    def tokenize(self, req: TokenizeRequest) -> TokenizeOutput:
        """One token per word; the id is the word's length (messages: role and content, as a template would)."""
        text = req.text if req.text is not None else " ".join(f"{m.role}: {m.content}" for m in req.messages or [])
        words = text.split()
        return TokenizeOutput(ids=[len(w) for w in words], pieces=words)

    def detokenize(self, req: DetokenizeRequest) -> DetokenizeOutput:
        pieces = ["x" * i for i in req.ids]
        return DetokenizeOutput(text=" ".join(pieces), pieces=pieces)


def _start(spec: ModelSpec) -> EchoEngine:
    return EchoEngine(msgspec.convert(spec.metadata, EchoSettings))


@hookimpl
def impetus_register_model_formats(registry: PluginRegistry[ModelFormat]) -> None:
    registry.add(ModelFormat(name="echo", detect=_detect, inspect=_inspect))


@hookimpl
def impetus_register_backends(registry: PluginRegistry[BackendSpec]) -> None:
    # Deliberately without top_k/min_p/seed: the daemon must refuse those.
    caps = frozenset({"chat", "complete", "tokenize", "max_tokens", "temperature", "top_p", "stop"})
    # A worker with no model library needs ~35 MB; the estimate adds the file's size.
    registry.add(BackendSpec(name="echo", formats=frozenset({"echo"}), capabilities=caps, start=_start, memory_overhead_bytes=32 * 1024 * 1024))


@hookimpl
def impetus_register_methods(registry: PluginRegistry[MethodSpec]) -> None:
    registry.add(MethodSpec("echo.ping", PingParams, PingResult, ping, "Answer with the text sent."))
