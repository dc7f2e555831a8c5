"""A test plugin whose model writes a script: what a real model might write, verbatim,
so a test can make it do what a small real model will not on cue (open a call inside
its reasoning, write several calls, put a line break after a call).

A ``*.script`` file is TOML: ``answer`` (the whole answer, across every phase the
daemon runs), ``opened`` (the template opens the reasoning: the engine reports
``EngineInfo.reasoning_opened``) and ``piece`` (characters per token).

The engine behaves as an engine does, through the real hooks and a real worker:
generation continues where ``GenerateRequest.prefix`` leaves off in the script (the
daemon's own markers are written in the script exactly as the daemon writes them),
stops at the request's stop strings (reporting ``stop_sequence``), ends a JSON
``format`` where the JSON value ends (a grammar-constrained model can only end
there), honours ``max_tokens``, and counts tokens the way llama-server and mlx-lm
do: every sampled token, the one that completes a stop string and the
end-of-sequence token included.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import msgspec

from impetusd.plugin_api import BackendSpec, EngineInfo, EngineResult, GenerateRequest, JsonSchemaFormat, ModelFormat, ModelSpec, PluginError, PluginRegistry, hookimpl


class ScriptSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    answer: str = ""
    opened: bool = False  # the template's generation prompt ends inside <think>
    piece: int = 3  # characters per token


def _detect(path: Path) -> bool:
    return path.is_file() and path.suffix == ".script"


def _inspect(path: Path) -> dict[str, Any]:
    return msgspec.structs.asdict(msgspec.toml.decode(path.read_text(), type=ScriptSettings))


def _json_end(text: str) -> int:
    """Where the JSON value at the start of ``text`` (after whitespace) ends."""
    start = len(text) - len(text.lstrip())
    _, end = json.JSONDecoder().raw_decode(text, start)
    return end


class ScriptEngine:
    def __init__(self, settings: ScriptSettings) -> None:
        self.settings = settings

    def info(self) -> EngineInfo:
        return EngineInfo(backend="script", load_ms=0.0, details={"pid": os.getpid()}, reasoning_opened=[None] if self.settings.opened else [])

    def generate(self, req: GenerateRequest, on_text: Callable[[str], None], should_stop: Callable[[], bool]) -> EngineResult:
        script = self.settings.answer
        if not script.startswith(req.prefix):
            raise PluginError(f"script: the prefix {req.prefix!r} is not the start of the script")
        rest = script[len(req.prefix) :]
        stop, end = None, len(rest)
        if isinstance(req.format, JsonSchemaFormat):
            end = _json_end(rest)
        else:
            for s in req.sampling.stop:
                at = rest.find(s)
                if at >= 0 and (stop is None or at < end):
                    stop, end = s, at
        step = self.settings.piece
        pieces = [rest[i : min(i + step, end)] for i in range(0, end, step)]
        sent: list[str] = []
        for piece in pieces:
            if len(sent) >= req.sampling.max_tokens or should_stop():
                break
            on_text(piece)
            sent.append(piece)
        text = "".join(sent)
        if len(sent) < len(pieces):
            finish = "cancelled" if len(sent) < req.sampling.max_tokens else "length"
            return EngineResult(text=text, finish_reason=finish, prompt_tokens=1, completion_tokens=len(sent))  # type: ignore[arg-type]
        # the token that ends it: the last one of the stop string, or end-of-sequence
        if len(sent) >= req.sampling.max_tokens:
            return EngineResult(text=text, finish_reason="length", prompt_tokens=1, completion_tokens=len(sent))
        return EngineResult(text=text, finish_reason="stop", stop_sequence=stop, prompt_tokens=1, completion_tokens=len(sent) + 1)


def _start(spec: ModelSpec) -> ScriptEngine:
    return ScriptEngine(msgspec.convert(spec.metadata, ScriptSettings))


@hookimpl
def impetus_register_model_formats(registry: PluginRegistry[ModelFormat]) -> None:
    registry.add(ModelFormat(name="script", detect=_detect, inspect=_inspect))


@hookimpl
def impetus_register_backends(registry: PluginRegistry[BackendSpec]) -> None:
    caps = frozenset({"chat", "max_tokens", "temperature", "stop", "format.json_schema"})
    registry.add(BackendSpec(name="script", formats=frozenset({"script"}), capabilities=caps, start=_start, memory_overhead_bytes=32 * 1024 * 1024))
