"""The backend's own table of config.toml, ``[backends.llamacpp]`` (the daemon hands it over
as read), as its workers' environment (``BackendSpec.worker_env``):

- ``server``: the llama-server binary to run (``IMPETUS_LLAMA_SERVER``; unset: scripts/setup's, or PATH's)
- ``gpu_layers``: layers a CUDA llama-server puts on the GPU: a number, ``"all"`` or ``"auto"``
  (``IMPETUS_LLAMACPP_GPU_LAYERS``; unset: what fits)

Earlier config files' ``llama_server`` and ``llamacpp_gpu_layers`` are read into it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from impetusd.plugin_api import InvalidParams

from .binary import BINARY_ENV
from .offload import GPU_LAYERS_ENV
from .rpc import NODES_ENV

KEYS = ("server", "gpu_layers")


def table_env(table: Mapping[str, Any]) -> dict[str, str]:
    """The table's settings as the worker's variables; nothing for what it leaves unset, so
    the daemon's own environment rules."""
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise InvalidParams(f"[backends.llamacpp] has no key {unknown[0]!r} (keys: {', '.join(KEYS)})", field=f"backends.llamacpp.{unknown[0]}")
    env = {BINARY_ENV: str(Path(str(table["server"])).expanduser())} if table.get("server") else {}
    layers = str(table.get("gpu_layers") or "").strip().lower()
    if layers and not (layers.isdigit() or layers in ("all", "auto")):
        raise InvalidParams("[backends.llamacpp] gpu_layers must be a number of layers, 'all' or 'auto'", field="backends.llamacpp.gpu_layers")
    return env | ({GPU_LAYERS_ENV: layers} if layers else {})


def worker_env(table: Mapping[str, Any]) -> dict[str, str]:
    """``table_env``, and no compute nodes unless the load's placement names some (the
    daemon's own ``IMPETUS_LLAMA_RPC`` is not the worker's)."""
    return {NODES_ENV: "", **table_env(table)}
