"""A backend as a plugin registers it: what it runs, what it can do, how it starts in a worker,
and what the daemon needs to launch and place it: its workers' environment (from its own
table of the configuration), its memory arithmetic, and optionally its placement on a GPU,
across compute nodes or across ranks.

The daemon only reads a backend's declared ``capabilities`` and ``formats`` and calls its
planning callables; the ``start`` callable runs inside the worker process, where heavy
imports belong."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from impetusd.engine.capabilities import Engine
from impetusd.engine.messages import ModelSpec
from impetusd.engine.placement import MakePlacement
from impetusd.protocol.api import Sampling

# Capability names are the request fields they allow (plus "chat", "complete", "embed"):
# a backend lists those of Sampling's fields it honours, or all of them with this set.
SAMPLING_CAPABILITIES = frozenset(Sampling.__struct_fields__)


class BackendSpec(msgspec.Struct, frozen=True):
    """A backend as registered by a plugin."""

    name: str
    formats: frozenset[str]
    capabilities: frozenset[str]
    start: Callable[[ModelSpec], Engine]
    devices: frozenset[str] = frozenset({"cpu"})
    description: str = ""
    # What one worker needs beside the weights and the KV cache (interpreter,
    # libraries, buffers); part of the daemon's memory estimate (impetusd/residency/budget.py).
    memory_overhead_bytes: int = 128 * 1024 * 1024
    # The weights' bytes in the worker when they are not their size on disk (a backend
    # that widens quantized weights), given the worker's environment; None: the files' size.
    memory_weights: Callable[[ModelSpec, Mapping[str, str]], int | None] | None = None
    # A backend that offloads layers to a GPU: given the model, the worker's environment, the
    # layers asked for (``models.load``'s ``n_gpu_layers``; None: the backend's default) and the
    # GPU bytes the load may take, the layers it will offload and the model's layers. The daemon
    # splits the estimate by them (host and GPU sides of the budget) and gives the worker the
    # count as ``IMPETUS_GPU_LAYERS``. None: the backend cannot offload (``n_gpu_layers`` is refused).
    gpu_layers: Callable[[ModelSpec, Mapping[str, str], int | None, int], tuple[int, int]] | None = None
    # Modules a spare worker imports before it is given a model (impetusd/residency/spares.py).
    preload: tuple[str, ...] = ()
    max_batch: int = 1  # requests decoded together per model by default (engines implementing BatchEngine)
    # The memory estimate's KV cache: this many sequences (a KV cache per slot), each of
    # ``min(context_tokens, the model's context)`` tokens; None: the configured estimate context.
    kv_sequences: int = 1
    context_tokens: int | None = None
    # A backend that can split a model across ``ranks`` processes on this machine: given the
    # model and the rank count (> 1), returns, or raises ``NoBackend`` naming why that model
    # cannot be split so (checked in the daemon, before anything loads). None: one process only.
    check_ranks: Callable[[ModelSpec, int], None] | None = None
    # Its workers' environment beside the daemon's, from its own table of config.toml
    # (``[backends.<name>]``, handed over as read): binaries, settings. Raise ``InvalidParams``
    # naming a bad key. None: nothing of its own.
    worker_env: Callable[[Mapping[str, Any]], dict[str, str]] | None = None
    # Bytes per KV-cache element of each ``kv_type`` it offers (the memory estimate's KV cache;
    # impetusd/residency/budget.py). None: f16 only, 2 bytes.
    kv_element_bytes: Mapping[str, float] | None = None
    # A backend that can split a model across compute nodes (the ``nodes`` capability): makes
    # the daemon's ``NodePlacement`` (impetusd/engine/placement.py). None: this machine only.
    nodes: MakePlacement | None = None
