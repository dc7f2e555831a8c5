"""How many layers the llama.cpp backend offloads to the GPU: planned in the daemon for its
memory budget (``offload``, the backend's ``gpu_layers``), read back in the worker."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from impetusd.plugin_api import ModelSpec, PluginError

from . import binary, gpu
from .limits import MAX_CONTEXT

CONTEXT_ENV = "IMPETUS_LLAMACPP_CONTEXT"  # tokens per slot, instead of MAX_CONTEXT
GPU_LAYERS_ENV = "IMPETUS_LLAMACPP_GPU_LAYERS"  # layers on the GPU: a number, "all", or unset/"auto" (gpu.py decides)


def max_context() -> int:
    text = os.environ.get(CONTEXT_ENV, "").strip()
    if not text:
        return MAX_CONTEXT
    if not text.isdigit() or int(text) < 64:
        raise PluginError(f"{CONTEXT_ENV}={text!r}: expected a number of tokens, at least 64", backend="llamacpp")
    return int(text)


def kv_bytes(meta: dict[str, Any], tokens: int) -> int:
    """The f16 KV cache for ``tokens`` (layers × kv_heads × head_dim × 2 × 2 bytes each)."""
    layers, heads, width = (int(meta.get(k) or 0) for k in ("block_count", "head_count", "embedding_length"))
    kv_heads = int(meta.get("head_count_kv") or heads)
    head_dim = int(meta.get("head_dim") or (width // heads if heads else 0))
    return layers * kv_heads * head_dim * tokens * 2 * 2


PLANNED_ENV = "IMPETUS_GPU_LAYERS"  # the layers the daemon's budget planned (offload() below, in the daemon)


def wanted_layers(env: Mapping[str, str], layers: int, requested: int | None = None) -> int | None:
    """The layers asked for: ``requested`` (``models.load``'s ``n_gpu_layers``), else
    ``IMPETUS_LLAMACPP_GPU_LAYERS`` (a number or ``all``); None: what fits (``auto``)."""
    if requested is not None:
        return requested
    text = env.get(GPU_LAYERS_ENV, "").strip().lower()
    if text == "all":
        return max(layers + 1, 999)
    if text and text != "auto":
        if not text.isdigit():
            raise PluginError(f"{GPU_LAYERS_ENV}={text!r}: expected a number of layers, 'all' or 'auto'", backend="llamacpp")
        return int(text)
    return None


def weights_bytes(spec: ModelSpec) -> int:
    return int(spec.metadata.get("size_bytes") or 0) or os.path.getsize(spec.path)


def offload(spec: ModelSpec, env: Mapping[str, str], requested: int | None, room: int, *, context: int, slots: int) -> tuple[int, int]:
    """In the daemon, for its budget: the layers a load will offload (the output layer counts as
    one more when all go), and the model's layers. None on a build without CUDA; the layers asked
    for; else as many as fit in ``room`` (the GPU bytes the daemon's budget can give the load)
    with a KV cache of ``context`` tokens (or the model's) for each of ``slots``."""
    layers = int(spec.metadata.get("block_count") or 0)
    if binary.find().variant != "cuda":
        return 0, layers
    wanted = wanted_layers(env, layers, requested)
    if wanted is not None:
        return wanted, layers
    trained = int(spec.metadata.get("context_length") or 0)
    tokens = (min(trained, context) if trained else context) * slots
    return gpu.layers_that_fit(layers, weights_bytes(spec), kv_bytes(spec.metadata, tokens), room), layers
