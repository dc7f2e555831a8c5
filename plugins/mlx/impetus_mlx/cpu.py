"""Float32 weights when OpenBLAS is in the worker (the daemon preloads it; see impetusd/workers/blas.py).

MLX's Linux CPU wheel does quantized and float16 products with its own kernels
and float32 ones through BLAS. With OpenBLAS preloaded, float32 weights made
prefill ~7x and four-stream decode ~3x faster than the 4-bit GGUF weights on
these machines, at 4 bytes per parameter; so a model is widened only on the CPU,
only when OpenBLAS is mapped in this process, and only up to FLOAT32_MAX_BYTES.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import mlx.core as mx
import mlx.nn as nn

from .limits import FLOAT32_MAX_BYTES  # the daemon's memory estimate uses the same bound

log = logging.getLogger("impetus_mlx")


def openblas_loaded() -> bool:
    try:
        with open("/proc/self/maps") as fh:
            return any("libopenblas" in line for line in fh)
    except OSError:  # not Linux
        return False


def widen_for_blas(model: nn.Module, details: dict[str, Any], shard: Callable[[nn.Module], None] | None = None) -> str:
    """Dequantize to float32 when that is the fast path here; the cache variant
    ("f32" or "") so prompt caches of other precisions are kept apart. ``shard``
    (a rank of a split model) keeps its part before anything is computed, so a rank
    never holds the whole model widened."""
    from mlx_lm.utils import dequantize_model, get_total_parameters

    def done(variant: str) -> str:
        if shard is not None:
            shard(model)
        mx.eval(model.parameters())
        return variant

    if mx.default_device() != mx.cpu or not openblas_loaded():
        return done("")
    needed = get_total_parameters(model) * 4
    if needed > FLOAT32_MAX_BYTES:
        log.info("keeping quantized weights: float32 would take %.1f GB", needed / 1e9)
        return done("")
    dequantize_model(model)  # lazy: computed by done()'s eval, a rank's part only
    model.set_dtype(mx.float32)
    details["weights"] = "float32 (OpenBLAS)"
    return done("f32")
