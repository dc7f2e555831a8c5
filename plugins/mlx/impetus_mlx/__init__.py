"""MLX backend: registers itself; mlx is imported only when a worker starts it.

It runs GGUF llama files, mlx-lm and Hugging Face safetensors LLM folders, and
sentence-embedding encoder folders (BERT) for ``embed``.
"""

from __future__ import annotations

from impetusd import machine
from impetusd.backend import BackendSpec, Engine, ModelSpec
from impetusd.hookspecs import hookimpl
from impetusd.registries import Registry

CAPABILITIES = frozenset(
    {
        "chat", "complete", "embed",
        "max_tokens", "temperature", "top_p", "top_k", "min_p", "stop", "seed",
        "presence_penalty", "frequency_penalty", "logit_bias",
    }
)


def start(spec: ModelSpec) -> Engine:
    if spec.metadata.get("kind") == "embedding":  # a sentence-embedding encoder (BERT)
        from .embedding_engine import EmbeddingEngine

        return EmbeddingEngine.load(spec)
    from .engine import MLXEngine  # heavy imports happen here, in the worker

    return MLXEngine.load(spec)


@hookimpl
def impetus_register_backends(registry: Registry[BackendSpec]) -> None:
    registry.add(
        BackendSpec(
            name="mlx",
            formats=frozenset({"gguf", "mlx", "safetensors"}),
            capabilities=CAPABILITIES,
            start=start,
            devices=frozenset({"metal", "cpu", "cuda"}),
            description="MLX via mlx-lm (Metal on Apple Silicon, CPU elsewhere)",
            preload=("impetus_mlx.engine",),  # mlx, mlx-lm and transformers: most of a cold start
        )
    )


@hookimpl
def impetus_select_backend(spec: ModelSpec, backends: list[BackendSpec]) -> str | None:
    """On Apple Silicon MLX runs on the GPU through Metal: the backend of choice there."""
    if machine.has_metal() and any(b.name == "mlx" for b in backends):
        return "mlx"
    return None
