"""MLX backend: registers itself; mlx is imported only when a worker starts it.

It runs GGUF llama files, mlx-lm and Hugging Face safetensors LLM folders, and
sentence-embedding encoder folders (BERT) for ``embed``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from impetusd.plugin_api import SAMPLING_CAPABILITIES, BackendSpec, CacheTier, CacheTierContext, Engine, ModelSpec, PluginRegistry, has_metal, hookimpl

from .limits import FLOAT32_MAX_BYTES
from .shardable import check_ranks

# every sampling field (GenerateRequest.sampling), and:
CAPABILITIES = SAMPLING_CAPABILITIES | frozenset(
    {
        "chat",
        "complete",
        # structured output (docs/structured.md): the format kinds this engine enforces
        "format.json_object",
        "format.json_schema",
        "format.regex",
        "format.lark",
        "format.gbnf",
        "logprobs",
        "embed",
        "tokenize",
    }
)
MAX_BATCH = 8  # impetus_mlx.batching.DEFAULT_MAX_BATCH, without importing mlx in the daemon


def memory_weights(spec: ModelSpec, env: Mapping[str, str]) -> int | None:
    """Float32 weights (4 bytes a parameter) when the worker will widen them: on a
    CPU whose workers get OpenBLAS preloaded, up to FLOAT32_MAX_BYTES (cpu.py);
    otherwise None (the files' size)."""
    if has_metal() or "openblas" not in env.get("LD_PRELOAD", "") or spec.metadata.get("kind") == "embedding":
        return None
    params = spec.metadata.get("parameters")
    if isinstance(params, int) and 0 < params * 4 <= FLOAT32_MAX_BYTES:
        return params * 4
    return None


def start(spec: ModelSpec) -> Engine:
    if spec.metadata.get("kind") == "embedding":  # a sentence-embedding encoder (BERT)
        from .embedding_engine import EmbeddingEngine

        return EmbeddingEngine.load(spec)
    if spec.options is not None and spec.options.ranks > 1:  # split across a ring group (sharded.py)
        from .sharded import ShardedEngine

        return ShardedEngine.load(spec)
    from .engine import MLXEngine  # heavy imports happen here, in the worker

    return MLXEngine.load(spec)


def _memory_tier(ctx: CacheTierContext) -> Any:
    from .prompt_cache import memory_tier

    return memory_tier(ctx)


def _disk_tier(ctx: CacheTierContext) -> Any:
    from .disk_cache import disk_tier

    return disk_tier(ctx)


@hookimpl
def impetus_register_backends(registry: PluginRegistry[BackendSpec]) -> None:
    registry.add(
        BackendSpec(
            name="mlx",
            formats=frozenset({"gguf", "mlx", "safetensors"}),
            capabilities=CAPABILITIES,
            start=start,
            devices=frozenset({"metal", "cpu", "cuda"}),
            description="MLX via mlx-lm (Metal on Apple Silicon, CPU elsewhere)",
            preload=("impetus_mlx.engine",),  # mlx, mlx-lm and transformers: most of a cold start
            max_batch=MAX_BATCH,
            memory_weights=memory_weights,
            check_ranks=check_ranks,
        )
    )


@hookimpl
def impetus_select_backend(spec: ModelSpec, backends: list[BackendSpec]) -> str | None:
    """On Apple Silicon MLX runs on the GPU through Metal: the backend of choice there."""
    if has_metal() and any(b.name == "mlx" for b in backends):
        return "mlx"
    return None


@hookimpl
def impetus_register_cache_tiers(registry: PluginRegistry[CacheTier]) -> None:
    registry.add(
        CacheTier(
            name="mlx-memory",
            factory=_memory_tier,
            backends=frozenset({"mlx"}),
            order=0,
            description="KV caches of earlier prompts in memory (LRU bounded by bytes), longest common prefix",
        )
    )
    registry.add(
        CacheTier(
            name="mlx-disk",
            factory=_disk_tier,
            backends=frozenset({"mlx"}),
            order=10,
            description="prefix KV caches under $IMPETUS_HOME/cache/prompts/<model digest>, HMAC-checked, bounded",
        )
    )
