"""NVIDIA GPUs in the snapshot, through the one ``nvidia-smi`` reader (``impetusd.toolkit.nvidia``)."""

from __future__ import annotations

from typing import Any

from impetusd.plugin_api import Gpu, nvidia_gpus


def describe(gpu: Gpu) -> dict[str, Any]:
    """One GPU as the snapshot shows it."""
    return {
        "index": gpu.index,
        "name": gpu.name,
        "memory_total_bytes": gpu.total_bytes,
        "memory_free_bytes": gpu.free_bytes,
        "memory_used_bytes": gpu.used_bytes,
        "temp_c": gpu.temp_c,
        "utilization_percent": gpu.utilization_percent,
    }


def query() -> list[dict[str, Any]] | None:
    """The GPUs ``nvidia-smi`` reports; None when it is not installed, or fails."""
    gpus = nvidia_gpus()
    return None if gpus is None else [describe(g) for g in gpus]


def gpus() -> list[Gpu] | None:
    """The GPUs for the memory budget (``HardwareMonitor.gpus``)."""
    return nvidia_gpus()
