"""NVIDIA GPUs as ``nvidia-smi`` reports them, and how many layers of a model to offload.

Read in the worker at load (a CUDA build of llama-server only). The choice:
all layers when the weights, the KV cache and a reserve fit in the free memory of the
GPUs together, else as many layers as fit (the estimate: weights spread evenly over the
layers, the KV cache by layer too), else none.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from dataclasses import dataclass

QUERY = ["--query-gpu=index,name,memory.total,memory.free", "--format=csv,noheader,nounits"]
APPS = ["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
MIB = 1024 * 1024
# CUDA context, cuBLAS workspace and llama.cpp's compute buffers: kept free on top of the estimate.
RESERVE_BYTES = 1024 * MIB


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    total_bytes: int
    free_bytes: int


def _smi(args: list[str], timeout: float = 10.0) -> str | None:
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None
    try:
        done = subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def parse(text: str) -> list[Gpu]:
    gpus = []
    for row in csv.reader(io.StringIO(text), skipinitialspace=True):
        try:
            index, name, total, free = (c.strip() for c in row)
            gpus.append(Gpu(int(index), name, int(float(total) * MIB), int(float(free) * MIB)))
        except ValueError:  # a short row, "[N/A]"
            continue
    return gpus


def query() -> list[Gpu]:
    """The GPUs; empty without nvidia-smi or when it fails."""
    text = _smi(QUERY)
    return parse(text) if text else []


def process_memory(pids: set[int]) -> int | None:
    """GPU memory the processes ``pids`` hold (all GPUs), None when nvidia-smi cannot say."""
    text = _smi(APPS)
    if text is None:
        return None
    used = 0
    for row in csv.reader(io.StringIO(text), skipinitialspace=True):
        try:
            pid, mib = int(row[0]), float(row[1])
        except (ValueError, IndexError):
            continue
        if pid in pids:
            used += int(mib * MIB)
    return used


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
