"""The daemon's own RPC methods, registered through ``impetus_register_methods``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from impetusd import __version__
from impetusd.dispatch.context import RequestContext
from impetusd.dispatch.embed import embed
from impetusd.dispatch.generate import generate
from impetusd.dispatch.observe import OBSERVE_METHODS, hardware_facts
from impetusd.dispatch.store import STORE_METHODS
from impetusd.dispatch.tokenize import detokenize, tokenize
from impetusd.plugin.hookspecs import hookimpl
from impetusd.plugin.registries import MethodSpec, PluginRegistry
from impetusd.protocol.api import (
    ChatParams,
    CompleteParams,
    DaemonInfo,
    Describe,
    DetokenizeParams,
    DetokenizeResult,
    EmbedParams,
    EmbedResult,
    Empty,
    GenerationResult,
    Health,
    LoadedList,
    LoadParams,
    LoadResult,
    Metrics,
    ModelList,
    PluginInfo,
    ShutdownResult,
    TokenizeParams,
    TokenizeResult,
    UnloadParams,
    UnloadResult,
)
from impetusd.residency.options import load_options
from impetusd.store.views import list_models

if TYPE_CHECKING:
    from impetusd.dispatch.services import Services


async def daemon_info(services: Services, params: Empty, ctx: RequestContext) -> DaemonInfo:
    hardware = await anyio.to_thread.run_sync(hardware_facts, services.registries.monitors)
    registries, lifecycle = services.registries, services.lifecycle
    return DaemonInfo(
        name="impetusd",
        version=__version__,
        pid=os.getpid(),
        socket=str(services.config.socket),
        home=str(services.config.home),
        started_at=lifecycle.started_at,
        uptime_s=round(lifecycle.uptime, 3),
        methods=registries.methods.names(),
        plugins=[PluginInfo(name=n, hooks=h) for n, h in services.plugins()],
        formats=registries.formats.names(),
        backends=registries.backends.names(),
        hardware=hardware,
    )


def daemon_health(services: Services, params: Empty, ctx: RequestContext) -> Health:
    failures = services.residency.failures()
    degraded = any(f.state == "failed" for f in failures)
    lifecycle = services.lifecycle
    return Health(
        status="shutting_down" if lifecycle.stopping else ("degraded" if degraded else "ok"),
        uptime_s=round(lifecycle.uptime, 3),
        connections=lifecycle.connections,
        in_flight=sum(1 for c in lifecycle.in_flight if not c.method.startswith("daemon.")),
        loaded_models=len(services.residency.resident),
        failures=failures,
        thermal=services.thermal.state(),
        nodes=services.node_snapshot(),
    )


def daemon_metrics(services: Services, params: Empty, ctx: RequestContext) -> Metrics:
    health = daemon_health(services, params, ctx)
    return Metrics(
        uptime_s=health.uptime_s,
        connections=health.connections,
        in_flight=health.in_flight,
        requests=services.metrics.request_counts(),
        models=services.metrics.model_stats(),
        loaded=[r.describe() for r in services.residency.resident.values()],
        recent=list(services.metrics.recent),
    )


def daemon_describe(services: Services, params: Empty, ctx: RequestContext) -> Describe:
    specs = services.registries.methods.values()
    types = [t for s in specs for t in (s.params, s.result)]
    schemas, components = msgspec.json.schema_components(types, ref_template="#/components/{name}")
    methods: dict[str, Any] = {}
    for i, spec in enumerate(specs):
        methods[spec.name] = {
            "description": spec.doc,
            "params": schemas[2 * i],
            "result": schemas[2 * i + 1],
            "streams": spec.stream,
        }
    return Describe(methods=methods, components=components)


def daemon_shutdown(services: Services, params: Empty, ctx: RequestContext) -> ShutdownResult:
    services.lifecycle.request_stop()
    return ShutdownResult(stopping=True)


def models_list(services: Services, params: Empty, ctx: RequestContext) -> ModelList:
    loaded = {name: r.spec for name, r in services.residency.resident.items()}
    return ModelList(models=list_models(services.store, loaded))


async def models_load(services: Services, params: LoadParams, ctx: RequestContext) -> LoadResult:
    asked = (params.kv_type, params.flash_attn, params.draft, params.ngram, params.ranks) != (None, None, None, None, None)
    options = None
    if asked:
        cfg, residency = services.residency.config, services.residency
        options = load_options(
            cfg, residency.resolve, kv_type=params.kv_type, flash_attn=params.flash_attn, draft=params.draft, ngram=params.ngram, ranks=params.ranks
        )
    resident, _, already = await services.residency.ensure_loaded(
        params.model,
        backend=params.backend,
        keep_alive=params.keep_alive,
        force=True,  # an explicit load resets a failed model
        options=options,
        gpu_layers=params.n_gpu_layers,
        nodes=params.nodes,
    )
    return LoadResult(model=resident.describe(), already_loaded=already)


async def models_unload(services: Services, params: UnloadParams, ctx: RequestContext) -> UnloadResult:
    resident = await services.residency.unload(params.model)
    return UnloadResult(name=resident.spec.name, pid=resident.worker.pid)


def models_loaded(services: Services, params: Empty, ctx: RequestContext) -> LoadedList:
    residency = services.residency
    return LoadedList(models=[r.describe() for r in residency.resident.values()], failed=residency.failed(), memory=residency.memory())


async def chat(services: Services, params: ChatParams, ctx: RequestContext) -> GenerationResult:
    return await generate(services, params, ctx)


async def complete(services: Services, params: CompleteParams, ctx: RequestContext) -> GenerationResult:
    return await generate(services, params, ctx)


METHODS = (
    MethodSpec("daemon.info", Empty, DaemonInfo, daemon_info, "Version, socket, plugins, formats, backends, hardware facts."),
    MethodSpec("daemon.health", Empty, Health, daemon_health, "Liveness and load: connections, requests in flight, models loaded, models failing."),
    MethodSpec(
        "daemon.metrics", Empty, Metrics, daemon_metrics, "Counters since start: requests by model and outcome, tokens, latency histograms, worker restarts."
    ),
    MethodSpec("daemon.describe", Empty, Describe, daemon_describe, "JSON Schema of every method's params and result."),
    MethodSpec("daemon.shutdown", Empty, ShutdownResult, daemon_shutdown, "Stop the daemon gracefully (as SIGTERM does)."),
    MethodSpec("models.list", Empty, ModelList, models_list, "Models known to this machine: catalog aliases and loaded models."),
    MethodSpec("models.load", LoadParams, LoadResult, models_load, "Start a worker for a model (alias, path) and load it."),
    MethodSpec("models.unload", UnloadParams, UnloadResult, models_unload, "End a model's worker process, returning its memory."),
    MethodSpec("models.loaded", Empty, LoadedList, models_loaded, "Models loaded now, with worker pid, memory and keep-alive."),
    MethodSpec("chat", ChatParams, GenerationResult, chat, "Chat completion; with stream=true sends chat.chunk notifications first.", stream=True),
    MethodSpec("complete", CompleteParams, GenerationResult, complete, "Text completion of a raw prompt; streams like chat.", stream=True),
    MethodSpec("embed", EmbedParams, EmbedResult, embed, "Unit-length embedding vectors for one text or a list of texts."),
    MethodSpec("tokenize", TokenizeParams, TokenizeResult, tokenize, "A model's token ids and pieces for a text, or for messages through its chat template."),
    MethodSpec("detokenize", DetokenizeParams, DetokenizeResult, detokenize, "The text (and each id's piece) of a model's token ids."),
)


@hookimpl
def impetus_register_methods(registry: PluginRegistry[MethodSpec]) -> None:
    for spec in (*METHODS, *STORE_METHODS, *OBSERVE_METHODS):
        registry.add(spec)
