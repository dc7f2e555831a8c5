"""llama.cpp backend: registers itself; a worker that starts it runs llama-server (engine.py)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from impetusd.plugin_api import BackendSpec, Engine, ModelSpec, PluginRegistry, has_metal, hookimpl

NAME = "llamacpp"
MAX_BATCH = 4  # llama-server's parallel slots: requests decoded together per model
SLOTS_ENV = "IMPETUS_LLAMACPP_SLOTS"  # another number of slots (a GPU decodes 64 streams together at little cost each)


def slots() -> int:
    """The slots per model: ``IMPETUS_LLAMACPP_SLOTS`` (1 to 256) or ``MAX_BATCH``. Read where the
    backend registers (the daemon) and where it starts (the worker, which inherits the daemon's environment)."""
    text = os.environ.get(SLOTS_ENV, "").strip()
    if not text:
        return MAX_BATCH
    if not text.isdigit() or not 1 <= int(text) <= 256:
        raise ValueError(f"{SLOTS_ENV}={text!r}: expected a number of slots from 1 to 256")
    return int(text)


CAPABILITIES = frozenset(
    {
        "chat",
        "complete",
        "embed",
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


def gpu_layers(spec: ModelSpec, env: Mapping[str, str], requested: int | None, room: int) -> tuple[int, int]:
    """In the daemon: the layers a load will offload, and the model's (offload.py)."""
    from .offload import max_context, offload

    return offload(spec, env, requested, room, context=max_context(), slots=slots())


def start(spec: ModelSpec) -> Engine:
    from .engine import LlamaServerEngine  # imports happen here, in the worker

    return LlamaServerEngine.load(spec, slots=slots())


@hookimpl
def impetus_register_backends(registry: PluginRegistry[BackendSpec]) -> None:
    n = slots()
    registry.add(
        BackendSpec(
            name=NAME,
            formats=frozenset({"gguf"}),
            capabilities=CAPABILITIES,
            start=start,
            devices=frozenset({"cpu", "cuda"}),
            description="llama.cpp's llama-server (GGUF; the default where Metal is absent)",
            max_batch=n,
            gpu_layers=gpu_layers,
        )
    )


@hookimpl
def impetus_select_backend(spec: ModelSpec, backends: list[BackendSpec]) -> str | None:
    """Where Metal is absent, llama.cpp runs GGUF several times faster than MLX's CPU
    backend; on Apple Silicon this plugin leaves the choice to others (MLX)."""
    if spec.format == "gguf" and not has_metal() and any(b.name == NAME for b in backends):
        return NAME
    return None
