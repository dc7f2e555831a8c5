"""The daemon's own RPC methods, registered through ``impetus_register_methods``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import anyio
import msgspec

from impetusd import __version__
from impetusd.protocol.api import (
    ChatParams,
    CompleteParams,
    DaemonInfo,
    Describe,
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
    UnloadParams,
    UnloadResult,
)
from impetusd.dispatch.embed import embed
from impetusd.dispatch.generate import generate
from impetusd.plugin.hookspecs import hookimpl
from impetusd.plugin.manager import plugin_summary
from impetusd.plugin.registries import MethodSpec, PluginRegistry
from impetusd.dispatch.dispatcher import RequestContext
from impetusd.dispatch.observe import OBSERVE_METHODS
from impetusd.dispatch.store import STORE_METHODS

if TYPE_CHECKING:
    from impetusd.daemon import Daemon


def hardware_facts(daemon: Daemon) -> dict[str, Any]:
    """Every monitor's snapshot. Blocking (monitors measure and run tools): call
    it through ``anyio.to_thread.run_sync``."""
    facts: dict[str, Any] = {}
    for monitor in daemon.registries.monitors.values():
        try:
            facts[monitor.name] = monitor.snapshot()
        except Exception as exc:  # a monitor's failure is reported, not fatal
            facts[monitor.name] = {"error": f"{type(exc).__name__}: {exc}"}
    return facts


async def daemon_info(daemon: Daemon, params: Empty, ctx: RequestContext) -> DaemonInfo:
    hardware = await anyio.to_thread.run_sync(hardware_facts, daemon)
    return DaemonInfo(
        name="impetusd",
        version=__version__,
        pid=os.getpid(),
        socket=str(daemon.config.socket),
        home=str(daemon.config.home),
        started_at=daemon.started_at,
        uptime_s=round(daemon.uptime, 3),
        methods=daemon.registries.methods.names(),
        plugins=[PluginInfo(name=n, hooks=h) for n, h in plugin_summary(daemon.pm)],
        formats=daemon.registries.formats.names(),
        backends=daemon.registries.backends.names(),
        hardware=hardware,
    )


def daemon_health(daemon: Daemon, params: Empty, ctx: RequestContext) -> Health:
    failures = daemon.models.failures()
    degraded = any(f.state == "failed" for f in failures)
    return Health(
        status="shutting_down" if daemon.stopping else ("degraded" if degraded else "ok"),
        uptime_s=round(daemon.uptime, 3),
        connections=daemon.connections,
        in_flight=sum(1 for c in daemon.in_flight if not c.method.startswith("daemon.")),
        loaded_models=len(daemon.models.resident),
        failures=failures,
        thermal=daemon.thermal.state(),
    )


def daemon_metrics(daemon: Daemon, params: Empty, ctx: RequestContext) -> Metrics:
    health = daemon_health(daemon, params, ctx)
    return Metrics(
        uptime_s=health.uptime_s,
        connections=health.connections,
        in_flight=health.in_flight,
        requests=daemon.metrics.request_counts(),
        models=daemon.metrics.model_stats(),
        loaded=[r.describe() for r in daemon.models.resident.values()],
        recent=list(daemon.metrics.recent),
    )


def daemon_describe(daemon: Daemon, params: Empty, ctx: RequestContext) -> Describe:
    specs = daemon.registries.methods.values()
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


def daemon_shutdown(daemon: Daemon, params: Empty, ctx: RequestContext) -> ShutdownResult:
    daemon.request_stop()
    return ShutdownResult(stopping=True)


def models_list(daemon: Daemon, params: Empty, ctx: RequestContext) -> ModelList:
    return ModelList(models=daemon.models.list_models())


async def models_load(daemon: Daemon, params: LoadParams, ctx: RequestContext) -> LoadResult:
    resident, _, already = await daemon.models.ensure_loaded(
        params.model, backend=params.backend, keep_alive=params.keep_alive, force=True  # an explicit load resets a failed model
    )
    return LoadResult(model=resident.describe(), already_loaded=already)


async def models_unload(daemon: Daemon, params: UnloadParams, ctx: RequestContext) -> UnloadResult:
    resident = await daemon.models.unload(params.model)
    return UnloadResult(name=resident.spec.name, pid=resident.worker.pid)


def models_loaded(daemon: Daemon, params: Empty, ctx: RequestContext) -> LoadedList:
    return LoadedList(
        models=[r.describe() for r in daemon.models.resident.values()], failed=daemon.models.failed(), memory=daemon.models.memory()
    )


async def chat(daemon: Daemon, params: ChatParams, ctx: RequestContext) -> GenerationResult:
    return await generate(daemon, params, ctx)


async def complete(daemon: Daemon, params: CompleteParams, ctx: RequestContext) -> GenerationResult:
    return await generate(daemon, params, ctx)


METHODS = (
    MethodSpec("daemon.info", Empty, DaemonInfo, daemon_info, "Version, socket, plugins, formats, backends, hardware facts."),
    MethodSpec("daemon.health", Empty, Health, daemon_health, "Liveness and load: connections, requests in flight, models loaded, models failing."),
    MethodSpec("daemon.metrics", Empty, Metrics, daemon_metrics, "Counters since start: requests by model and outcome, tokens, latency histograms, worker restarts."),
    MethodSpec("daemon.describe", Empty, Describe, daemon_describe, "JSON Schema of every method's params and result."),
    MethodSpec("daemon.shutdown", Empty, ShutdownResult, daemon_shutdown, "Stop the daemon gracefully (as SIGTERM does)."),
    MethodSpec("models.list", Empty, ModelList, models_list, "Models known to this machine: catalog aliases and loaded models."),
    MethodSpec("models.load", LoadParams, LoadResult, models_load, "Start a worker for a model (alias, path) and load it."),
    MethodSpec("models.unload", UnloadParams, UnloadResult, models_unload, "End a model's worker process, returning its memory."),
    MethodSpec("models.loaded", Empty, LoadedList, models_loaded, "Models loaded now, with worker pid, memory and keep-alive."),
    MethodSpec("chat", ChatParams, GenerationResult, chat, "Chat completion; with stream=true sends chat.chunk notifications first.", stream=True),
    MethodSpec("complete", CompleteParams, GenerationResult, complete, "Text completion of a raw prompt; streams like chat.", stream=True),
    MethodSpec("embed", EmbedParams, EmbedResult, embed, "Unit-length embedding vectors for one text or a list of texts."),
)


@hookimpl
def impetus_register_methods(registry: PluginRegistry[MethodSpec]) -> None:
    for spec in (*METHODS, *STORE_METHODS, *OBSERVE_METHODS):
        registry.add(spec)
