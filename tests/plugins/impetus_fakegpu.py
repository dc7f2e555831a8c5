"""A test plugin: a hardware monitor that reports one GPU, and a backend that offloads.

Loaded through IMPETUS_PLUGINS beside ``impetus_echo`` (whose ``.echo`` models it runs), it
goes through the real hooks: the monitor's ``gpus`` gives the daemon's budget its GPU side
(``IMPETUS_FAKE_GPU_BYTES`` of memory), and the ``gpuecho`` backend's ``gpu_layers`` says how
many of a model's 10 layers it would offload. Its weights count 1 GiB (3 GiB for a file whose
name starts with ``big``). The engine is the echo engine; its ``info`` reports the layers the
daemon told the worker (``IMPETUS_GPU_LAYERS``), so a test sees what was planned.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import msgspec
from impetus_echo import EchoEngine, EchoSettings

from impetusd.plugin_api import BackendSpec, EngineInfo, Gpu, HardwareMonitor, ModelSpec, PluginRegistry, hookimpl

GIB = 1 << 30
LAYERS = 10
RUNTIME = 512 * 1024 * 1024  # what the daemon counts beside the layers (its budget.GPU_RUNTIME_BYTES)


def gpus() -> list[Gpu] | None:
    total = int(os.environ.get("IMPETUS_FAKE_GPU_BYTES", "0"))
    return [Gpu(index=0, name="Fake GPU", total_bytes=total, free_bytes=total)] if total else None


def weights(spec: ModelSpec, env: Mapping[str, str] | None = None) -> int:
    return 3 * GIB if Path(spec.path).name.startswith("big") else GIB


def gpu_layers(spec: ModelSpec, env: Mapping[str, str], requested: int | None, room: int) -> tuple[int, int]:
    if requested is not None:
        return min(requested, LAYERS), LAYERS
    per_layer = weights(spec) / LAYERS
    return max(0, min(LAYERS, int((room - RUNTIME) // per_layer))), LAYERS


class GpuEchoEngine(EchoEngine):
    def info(self) -> EngineInfo:
        info = super().info()
        planned = os.environ.get("IMPETUS_GPU_LAYERS")
        return msgspec.structs.replace(info, details={**info.details, "gpu_layers": None if planned is None else int(planned)})


def _start(spec: ModelSpec) -> GpuEchoEngine:
    return GpuEchoEngine(msgspec.convert(spec.metadata, EchoSettings))


@hookimpl
def impetus_register_hardware_monitors(registry: PluginRegistry[HardwareMonitor]) -> None:
    registry.add(HardwareMonitor(name="fakegpu", snapshot=lambda: {"available": True, "gpus": len(gpus() or [])}, gpus=gpus))


@hookimpl
def impetus_register_backends(registry: PluginRegistry[BackendSpec]) -> None:
    caps = frozenset({"chat", "complete", "max_tokens", "temperature", "top_p", "stop"})
    registry.add(
        BackendSpec(
            name="gpuecho",
            formats=frozenset({"echo"}),
            capabilities=caps,
            start=_start,
            devices=frozenset({"cpu", "cuda"}),
            memory_overhead_bytes=32 * 1024 * 1024,
            memory_weights=weights,
            gpu_layers=gpu_layers,
        )
    )
