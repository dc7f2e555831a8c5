"""NVIDIA GPUs (through the daemon's one ``nvidia-smi`` reader), and how many layers of a model to offload.

Read in the worker at load (a CUDA build of llama-server only). The choice:
all layers when the weights, the KV cache and a reserve fit in the free memory of the
GPUs together, else as many layers as fit (the estimate: weights spread evenly over the
layers, the KV cache by layer too), else none.
"""

from __future__ import annotations

from impetusd.plugin_api import Gpu, nvidia_gpus, nvidia_process_memory

MIB = 1024 * 1024
# CUDA context, cuBLAS workspace and llama.cpp's compute buffers: kept free on top of the estimate.
RESERVE_BYTES = 1024 * MIB


def query() -> list[Gpu]:
    """The GPUs (the one nvidia-smi reader, ``impetusd.toolkit.nvidia``); empty without nvidia-smi."""
    return nvidia_gpus() or []


def process_memory(pids: set[int]) -> int | None:
    """GPU memory the processes ``pids`` hold (all GPUs), None when nvidia-smi cannot say."""
    return nvidia_process_memory(pids)


def layers_that_fit(layers: int, weights: int, kv_cache: int, free: int) -> int:
    """All ``layers`` (plus the output layer, llama.cpp's ``layers + 1``) when everything fits
    in ``free`` with the reserve; otherwise the whole layers that fit; 0 when none does."""
    if layers <= 0:
        return 0
    room = free - RESERVE_BYTES
    if weights + kv_cache <= room:
        return layers + 1
    per_layer = (weights + kv_cache) / layers
    return max(0, min(layers, int(room // per_layer))) if per_layer > 0 else 0
