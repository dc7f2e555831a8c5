"""Memory facts of the MLX device, for the daemon's budget (read inside the worker)."""

from __future__ import annotations

from typing import Any


def device_memory() -> dict[str, Any]:
    """``recommended_working_set_bytes`` where MLX reports one (Metal on Apple
    Silicon: what the GPU can keep resident without paging); empty elsewhere."""
    import mlx.core as mx

    if not mx.metal.is_available():
        return {}
    info_fn = getattr(mx, "device_info", None) or mx.metal.device_info
    value = info_fn().get("max_recommended_working_set_size")
    return {"recommended_working_set_bytes": int(value)} if isinstance(value, (int, float)) and value > 0 else {}
