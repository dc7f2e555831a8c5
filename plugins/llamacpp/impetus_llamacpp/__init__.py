"""llama.cpp backend: registers itself; a worker that starts it runs llama-server (engine.py)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from impetusd.plugin_api import (
    SAMPLING_CAPABILITIES,
    BackendSpec,
    CacheTier,
    CacheTierContext,
    CliCommand,
    DoctorCheck,
    Engine,
    Holdings,
    MethodSpec,
    ModelSpec,
    NodePlacement,
    PluginRegistry,
    has_metal,
    hookimpl,
)

from .limits import MAX_CONTEXT as MAX_CONTEXT  # for the benches, which read it from the package

NAME = "llamacpp"
MAX_BATCH = 4  # llama-server's parallel slots: requests decoded together per model
SLOTS_ENV = "IMPETUS_LLAMACPP_SLOTS"  # another number of slots (a GPU decodes 64 streams together at little cost each)


def slot_count() -> int:
    """The slots per model: ``IMPETUS_LLAMACPP_SLOTS`` (1 to 256) or ``MAX_BATCH``. Read where the
    backend registers (the daemon) and where it starts (the worker, which inherits the daemon's environment)."""
    text = os.environ.get(SLOTS_ENV, "").strip()
    if not text:
        return MAX_BATCH
    if not text.isdigit() or not 1 <= int(text) <= 256:
        raise ValueError(f"{SLOTS_ENV}={text!r}: expected a number of slots from 1 to 256")
    return int(text)


# every sampling field (GenerateRequest.sampling), and:
CAPABILITIES = SAMPLING_CAPABILITIES | frozenset(
    {
        "chat",
        "complete",
        # structured output (docs/structured.md): the format kinds this engine enforces
        "format.json_object",
        "format.json_schema",
        "format.gbnf",
        "logprobs",
        "nodes",  # a model split across compute nodes (llama-server --rpc)
        "embed",
        "kv_type",  # load options (LoadOptions)
        "flash_attn",
        "speculative",
    }
)


# Bytes per KV-cache element of each type llama.cpp offers (q8_0: 34 bytes per 32; q4_0: 18 per 32).
KV_ELEMENT_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


# What a llama-server built with llguidance enforces beside them (docs/structured.md).
LLGUIDANCE_CAPABILITIES = frozenset({"format.regex", "format.lark"})


def gpu_layers(spec: ModelSpec, env: Mapping[str, str], requested: int | None, room: int) -> tuple[int, int]:
    """In the daemon: the layers a load will offload, and the model's (offload.py). ``env`` is
    what the daemon adds to the worker's environment, which inherits the daemon's own."""
    from .offload import max_context, offload

    return offload(spec, {**os.environ, **env}, requested, room, context=max_context(), slots=slot_count())


def worker_env(table: Mapping[str, Any]) -> dict[str, str]:
    """In the daemon: its ``[backends.llamacpp]`` table as the worker's environment (settings.py)."""
    from .settings import worker_env as from_table

    return from_table(table)


def nodes(home: Path, held: Callable[[], Holdings]) -> NodePlacement:
    """In the daemon: the compute nodes it may split models across (placer.py)."""
    from .placer import RpcNodes

    return RpcNodes(home, held)


def start(spec: ModelSpec) -> Engine:
    from .engine import LlamaServerEngine  # imports happen here, in the worker

    return LlamaServerEngine.load(spec, slots=slot_count())


@hookimpl
def impetus_register_backends(registry: PluginRegistry[BackendSpec]) -> None:
    from .binary import declared_llguidance
    from .offload import max_context  # IMPETUS_LLAMACPP_CONTEXT, which the worker reads too

    n = slot_count()
    registry.add(
        BackendSpec(
            name=NAME,
            formats=frozenset({"gguf"}),
            capabilities=CAPABILITIES | LLGUIDANCE_CAPABILITIES if declared_llguidance() else CAPABILITIES,
            start=start,
            devices=frozenset({"cpu", "cuda"}),
            description="llama.cpp's llama-server (GGUF; the default where Metal is absent)",
            max_batch=n,
            kv_sequences=n,  # a KV cache per slot
            context_tokens=max_context(),  # the estimate reckons the context the worker will give each slot
            gpu_layers=gpu_layers,
            worker_env=worker_env,
            kv_element_bytes=KV_ELEMENT_BYTES,
            nodes=nodes,
        )
    )


@hookimpl
def impetus_register_methods(registry: PluginRegistry[MethodSpec]) -> None:
    from .node_methods import METHODS

    for method in METHODS:
        registry.add(method)


def _node_command() -> Any:
    from .node_cmd import command

    return command()


@hookimpl
def impetus_register_commands(registry: PluginRegistry[CliCommand]) -> None:
    registry.add(CliCommand("node", _node_command, "Compute nodes a model can be split across (llama.cpp RPC): serve one, add, list, remove."))


def _check_llama_server(config: Any) -> Any:
    from .doctor import llama_server

    return llama_server(config)


@hookimpl
def impetus_register_doctor_checks(registry: PluginRegistry[DoctorCheck]) -> None:
    registry.add(DoctorCheck("llama-server", _check_llama_server))


@hookimpl
def impetus_select_backend(spec: ModelSpec, backends: list[BackendSpec]) -> str | None:
    """Where Metal is absent, llama.cpp runs GGUF several times faster than MLX's CPU
    backend; on Apple Silicon this plugin leaves the choice to others (MLX)."""
    if spec.format == "gguf" and not has_metal() and any(b.name == NAME for b in backends):
        return NAME
    return None


def _disk_tier(ctx: CacheTierContext) -> Any:
    from .slot_files import slot_file_tier

    return slot_file_tier(ctx)


@hookimpl
def impetus_register_cache_tiers(registry: PluginRegistry[CacheTier]) -> None:
    registry.add(
        CacheTier(
            name="llamacpp-disk",
            factory=_disk_tier,
            backends=frozenset({NAME}),
            order=10,
            description="llama-server slot files of hot prefixes under $IMPETUS_HOME/cache/prompts/<model digest>-llamacpp, HMAC-checked, bounded",
        )
    )
