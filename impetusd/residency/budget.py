"""The memory budget, and what a model will need before it is loaded.

The estimate (docs/design.md, Residency) is

    weights + KV cache for ``context`` tokens × sequences + the backend's runtime overhead
    KV cache = layers × kv_heads × head_dim × context × 2 (K and V) × element bytes

(sequences: the backend's KV caches per model, e.g. one per slot; element bytes: the
backend's for the load's KV type, ``BackendSpec.kv_element_bytes``, 2 for f16 by default;
a draft model adds its own)

with every figure read from the metadata the format plugin reported at
inspection (GGUF header, config.json) and the weights from the files' sizes.
Nothing here touches an ML library.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec
import psutil

from impetusd.engine.messages import ModelSpec
from impetusd.observe.rss import tree_rss
from impetusd.protocol.api import MemoryEstimate

MIB = 1024 * 1024
UNLIMITED = 1 << 60  # cgroup v1 reports "no limit" as a huge number


class Budget(msgspec.Struct, frozen=True):
    """The budget's size and where the figure came from."""

    bytes: int
    source: Literal["config", "ram", "cgroup", "working-set"]


def _cgroup_limit_files() -> list[Path]:
    files: list[Path] = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return files
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if controllers == "":  # cgroup v2
            files += [Path("/sys/fs/cgroup") / rel / "memory.max", Path("/sys/fs/cgroup/memory.max")]
        elif "memory" in controllers.split(","):
            base = Path("/sys/fs/cgroup/memory")
            files += [base / rel / "memory.limit_in_bytes", base / "memory.limit_in_bytes"]
    return files


def cgroup_memory_limit() -> int | None:
    """The memory limit of this process's cgroup, if one is set (Linux)."""
    for path in _cgroup_limit_files():
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < UNLIMITED:
            return int(text)
        if text == "max" or text.isdigit():
            return None
    return None


def machine_budget(fraction: float, working_set: int | None = None) -> Budget:
    """``fraction`` of the RAM (or of the cgroup's limit, when lower), capped by the
    accelerator's recommended working set when a backend has reported one."""
    total = psutil.virtual_memory().total
    limit = cgroup_memory_limit()
    source: Literal["cgroup", "ram"] = "cgroup" if limit is not None and limit < total else "ram"
    base = limit if limit is not None and source == "cgroup" else total
    budget = int(base * fraction)
    if working_set is not None and 0 < working_set < budget:
        return Budget(bytes=working_set, source="working-set")
    return Budget(bytes=budget, source=source)


def weights_bytes(spec: ModelSpec) -> int:
    """The model's files on disk: its weights, as they will be mapped or read."""
    path = Path(spec.path)
    size = spec.metadata.get("size_bytes")
    if isinstance(size, int) and size > 0:
        return size
    try:
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.iterdir() if p.is_file())
    except OSError:
        return 0


def _int(meta: dict[str, Any], key: str) -> int | None:
    value = meta.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


F16_ONLY = {"f16": 2.0}  # a backend that names no KV types of its own


def kv_cache_bytes(meta: dict[str, Any], context: int, kv_type: str = "f16", element_bytes: Mapping[str, float] | None = None) -> int:
    """layers × kv_heads × head_dim × context × 2 × dtype bytes (``element_bytes`` of
    ``kv_type``: the backend's figures); 0 without the layer count. Without head counts,
    the KV width is taken as the embedding width (no grouped-query attention: the larger figure)."""
    layers = _int(meta, "block_count")
    if layers is None:
        return 0
    heads = _int(meta, "head_count")
    kv_heads = _int(meta, "head_count_kv") or heads
    embedding = _int(meta, "embedding_length")
    head_dim = _int(meta, "head_dim") or (embedding // heads if heads and embedding else None)
    width = kv_heads * head_dim if kv_heads and head_dim else (_int(meta, "embedding_length") or 0)
    dtype_bytes = 4.0 if meta.get("quantization") == "F32" and kv_type == "f16" else (element_bytes or F16_ONLY).get(kv_type, 2.0)
    return int(layers * width * context * 2 * dtype_bytes)


def estimate(
    spec: ModelSpec,
    overhead_bytes: int,
    context_tokens: int,
    weights: int | None = None,
    *,
    sequences: int = 1,
    element_bytes: Mapping[str, float] | None = None,
) -> MemoryEstimate:
    """What ``spec`` should need with ``sequences`` KV caches (one per slot) of
    ``min(context_tokens, its context)`` tokens each, of the load's KV type; a draft model
    (speculative decoding) adds its weights and KV caches. ``weights``: the backend's own
    figure for the weights in memory, when it differs from the files' size
    (``BackendSpec.memory_weights``); ``element_bytes``: its KV element sizes (``BackendSpec.kv_element_bytes``)."""
    meta = spec.metadata
    context = min(context_tokens, _int(meta, "context_length") or context_tokens)
    weights = weights_bytes(spec) if weights is None else weights
    kv_type = spec.options.kv_type if spec.options is not None else "f16"
    kv = kv_cache_bytes(meta, context, kv_type, element_bytes) * max(sequences, 1)
    draft = spec.options.draft if spec.options is not None else None
    if draft is not None:
        weights += weights_bytes(draft)
        kv += kv_cache_bytes(draft.metadata, min(context, _int(draft.metadata, "context_length") or context)) * max(sequences, 1)
    return MemoryEstimate(
        total_bytes=weights + kv + overhead_bytes,
        weights_bytes=weights,
        kv_cache_bytes=kv,
        overhead_bytes=overhead_bytes,
        context_tokens=context,
    )


def worker_rss(pid: int) -> int | None:
    """The worker's resident bytes, its child processes' included."""
    return tree_rss(pid)


# The CUDA context, cuBLAS workspace and compute buffers of a worker that offloads
# (docs/gpu.md: ~0.5 GiB beside weights and KV cache on the H200), counted on the GPU side.
GPU_RUNTIME_BYTES = 512 * MIB


def split(need: MemoryEstimate, layers: int, offloaded: int) -> MemoryEstimate:
    """``need`` with its GPU part: ``offloaded`` of the model's ``layers`` take their share of
    the weights and the KV cache to the GPU (all of it when ``offloaded`` covers every layer,
    or the model's layers are unknown), plus the GPU's runtime buffers; the rest stays host memory."""
    if offloaded <= 0:
        return msgspec.structs.replace(need, gpu_bytes=0, gpu_layers=0)
    share = 1.0 if layers <= 0 or offloaded >= layers else offloaded / layers
    gpu = int((need.weights_bytes + need.kv_cache_bytes) * share) + GPU_RUNTIME_BYTES
    return msgspec.structs.replace(need, total_bytes=need.total_bytes + GPU_RUNTIME_BYTES, gpu_bytes=gpu, gpu_layers=offloaded)
