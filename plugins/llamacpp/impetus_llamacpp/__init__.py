"""llama.cpp backend: registers itself; llama_cpp is imported only when a worker starts it."""

from __future__ import annotations

from impetusd.plugin_api import BackendSpec, Engine, ModelSpec, PluginRegistry, has_metal, hookimpl

NAME = "llamacpp"

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


def start(spec: ModelSpec) -> Engine:
    from .engine import LlamaCppEngine  # heavy imports happen here, in the worker

    return LlamaCppEngine.load(spec)


@hookimpl
def impetus_register_backends(registry: PluginRegistry[BackendSpec]) -> None:
    registry.add(
        BackendSpec(
            name=NAME,
            formats=frozenset({"gguf"}),
            capabilities=CAPABILITIES,
            start=start,
            devices=frozenset({"cpu"}),  # no layers offloaded, on Apple Silicon too (docs/macos.md)
            description="llama.cpp via llama-cpp-python, on the CPU (GGUF; the default where Metal is absent)",
        )
    )


@hookimpl
def impetus_select_backend(spec: ModelSpec, backends: list[BackendSpec]) -> str | None:
    """Where Metal is absent, llama.cpp runs GGUF several times faster than MLX's CPU
    backend; on Apple Silicon this plugin leaves the choice to others (MLX)."""
    if spec.format == "gguf" and not has_metal() and any(b.name == NAME for b in backends):
        return NAME
    return None
