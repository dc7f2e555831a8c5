"""A third-party-style plugin used by the tests, loaded through IMPETUS_PLUGINS.

It adds a model format (``*.echo`` files: a small TOML-ish text naming a delay),
a backend that streams the last user message back word by word, and an RPC
method ``echo.ping``. Everything goes through the real hooks, the real daemon and
a real worker process.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import msgspec

from impetusd.backend import BackendSpec, EngineInfo, EngineResult, GenerateRequest, ModelSpec
from impetusd.hookspecs import hookimpl
from impetusd.registries import MethodSpec, ModelFormat, Registry


class PingParams(msgspec.Struct, frozen=True):
    text: str = "ping"


class PingResult(msgspec.Struct, frozen=True):
    text: str
    pid: int


def ping(daemon: Any, params: PingParams, ctx: Any) -> PingResult:
    return PingResult(text=f"echo: {params.text}", pid=os.getpid())


def _detect(path: Path) -> bool:
    return path.is_file() and path.suffix == ".echo"


def _inspect(path: Path) -> dict[str, Any]:
    return {"delay_s": float(path.read_text().strip() or 0)}


class EchoEngine:
    def __init__(self, delay: float) -> None:
        self.delay = delay

    def info(self) -> EngineInfo:
        return EngineInfo(backend="echo", load_ms=0.0, details={"pid": os.getpid()})

    def generate(self, req: GenerateRequest, on_text: Callable[[str], None], should_stop: Callable[[], bool]) -> EngineResult:
        source = req.messages[-1].content if req.messages else (req.prompt or "")
        words = source.split()
        sent: list[str] = []
        finish = "stop"
        for i, word in enumerate(words):
            if should_stop():
                finish = "cancelled"
                break
            if i >= req.max_tokens:
                finish = "length"
                break
            piece = word if i == 0 else " " + word
            on_text(piece)
            sent.append(piece)
            time.sleep(self.delay)
        return EngineResult(text="".join(sent), finish_reason=finish, prompt_tokens=len(words), completion_tokens=len(sent))  # type: ignore[arg-type]

    def close(self) -> None:
        pass


def _start(spec: ModelSpec) -> EchoEngine:
    return EchoEngine(float(spec.metadata.get("delay_s", 0.0)))


@hookimpl
def impetus_register_model_formats(registry: Registry[ModelFormat]) -> None:
    registry.add(ModelFormat(name="echo", detect=_detect, inspect=_inspect))


@hookimpl
def impetus_register_backends(registry: Registry[BackendSpec]) -> None:
    # Deliberately without top_k/min_p/seed: the daemon must refuse those.
    caps = frozenset({"chat", "complete", "max_tokens", "temperature", "top_p", "stop"})
    registry.add(BackendSpec(name="echo", formats=frozenset({"echo"}), capabilities=caps, start=_start))


@hookimpl
def impetus_register_methods(registry: Registry[MethodSpec]) -> None:
    registry.add(MethodSpec("echo.ping", PingParams, PingResult, ping, "Answer with the text sent."))
