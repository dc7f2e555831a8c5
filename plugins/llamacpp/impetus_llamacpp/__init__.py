"""llama.cpp backend: registers itself; a worker that starts it runs llama-server (engine.py)."""

from __future__ import annotations

from impetusd.plugin_api import BackendSpec, Engine, ModelSpec, PluginRegistry, has_metal, hookimpl

NAME = "llamacpp"
MAX_BATCH = 4  # llama-server's parallel slots: requests decoded together per model

CAPABILITIES = frozenset(
    {
        "chat",
        "complete",
        # structured output (docs/structured.md): the format kinds this engine enforces
        "format.json_object",
        "format.json_schema",
        "format.gbnf",
        "logprobs",
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


def start(spec: ModelSpec) -> Engine:
    from .engine import LlamaServerEngine  # imports happen here, in the worker

    return LlamaServerEngine.load(spec, slots=MAX_BATCH)


@hookimpl
def impetus_register_backends(registry: PluginRegistry[BackendSpec]) -> None:
    registry.add(
        BackendSpec(
            name=NAME,
            formats=frozenset({"gguf"}),
            capabilities=CAPABILITIES,
            start=start,
            devices=frozenset({"cpu"}),
            description="llama.cpp's llama-server (GGUF; the default where Metal is absent)",
            max_batch=MAX_BATCH,
        )
    )


@hookimpl
def impetus_select_backend(spec: ModelSpec, backends: list[BackendSpec]) -> str | None:
    """Where Metal is absent, llama.cpp runs GGUF several times faster than MLX's CPU
    backend; on Apple Silicon this plugin leaves the choice to others (MLX)."""
    if spec.format == "gguf" and not has_metal() and any(b.name == NAME for b in backends):
        return NAME
    return None
