"""Residency: resolve models, lease them to requests, start and stop their workers,
keep-alive, the memory budget."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
from anyio.abc import TaskGroup, TaskStatus

from impetusd.config import parse_keep_alive
from impetusd.engine.backend import BackendSpec
from impetusd.engine.messages import LoadOptions, ModelSpec, Tuning
from impetusd.observe.events import Event
from impetusd.protocol.api import MemoryBudget, MemoryEstimate, ModelEntry, ModelFailure, NodeInfo
from impetusd.protocol.errors import (
    ImpetusError,
    InsufficientMemory,
    InvalidParams,
    ModelFailed,
    ModelLoadFailed,
    ModelNotFound,
    ModelNotLoaded,
    NoBackend,
    Overloaded,
    ShuttingDown,
    UnsupportedParameter,
)
from impetusd.residency.budget import estimate, split
from impetusd.residency.cachedir import cache_settings
from impetusd.residency.choice import choose_backend
from impetusd.residency.crashes import CrashHistory
from impetusd.residency.lease import Lease, Queued
from impetusd.residency.nodes import Node, NodeBook
from impetusd.residency.options import check_options, for_backend
from impetusd.residency.placement import Placement, place, refuse
from impetusd.residency.resident import MemoryLedger, Resident
from impetusd.residency.spares import Spares
from impetusd.residency.thermal import ThermalWatch
from impetusd.store.catalog import CATALOG
from impetusd.store.detect import detect_format
from impetusd.store.registry import ModelStore
from impetusd.workers.blas import binary_env, worker_env
from impetusd.workers.handle import WorkerHandle

if TYPE_CHECKING:
    import pluggy

    from impetusd.config import Config
    from impetusd.observe.metrics import MetricsRecorder
    from impetusd.plugin.registries import Registries

log = logging.getLogger(__name__)
NODE_PROBE_S = 10.0  # how often the compute nodes are probed for daemon.health


class ModelManager:
    """Which models are in memory. Runs as a service (``tg.start(models.run)``):
    its task group holds the workers' tasks and the keep-alive reaper."""

    def __init__(
        self,
        config: Config,
        store: ModelStore,
        registries: Registries,
        hook: pluggy.HookRelay,
        emit: Callable[[Event], None],
        metrics: MetricsRecorder,
        thermal: ThermalWatch,
        spares: Spares,
    ) -> None:
        self.config = config
        self.store = store
        self.registries = registries
        self.hook = hook  # impetus_resolve_model, impetus_select_backend
        self.emit = emit
        self.metrics = metrics
        self.thermal = thermal
        self.spares = spares
        self.resident: dict[str, Resident] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self._workers: TaskGroup | None = None  # while ``run`` runs
        self.changed = anyio.Event()
        self.crashes: dict[str, CrashHistory] = {}
        self.admitted: dict[str, int] = {}  # model name -> generation requests running or queued
        self.ledger = MemoryLedger(config, list(registries.monitors.values()))
        self.nodes = NodeBook(config.home / "nodes.json")
        self.wanted_nodes: dict[str, list[str]] = {}  # model name -> the nodes its last models.load asked for
        # model name -> the options of its last models.load: a reload after a crash, an unload or a
        # keep-alive expiry brings the model back as it was asked for, not with the defaults
        self.wanted_options: dict[str, LoadOptions] = {}

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Hold the workers' task group and unload models whose keep-alive ran
        out, until cancelled."""
        async with anyio.create_task_group() as tg:
            self._workers = tg
            await self.ledger.read_gpus()
            tg.start_soon(self._probe_nodes)
            task_status.started()
            try:
                await self._reap()
            finally:
                self._workers = None

    async def _probe_nodes(self) -> None:
        """Keep ``daemon.health``'s view of the nodes fresh (nodes.list probes at once)."""
        while True:
            await self.probe_nodes()
            await anyio.sleep(NODE_PROBE_S)

    async def probe_nodes(self, nodes: list[Node] | None = None) -> list[NodeInfo]:
        """Each node now (see ``_probe_free``)."""
        return [info for _, info in await self._probe_free(nodes)]

    async def _probe_free(self, nodes: list[Node] | None = None) -> list[tuple[Node, NodeInfo]]:
        """Each node now, with the node narrowed to a port no loaded model holds.

        A port serving a loaded model is not probed: an rpc-server serves one client at a
        time and queues one more (listen backlog 1), so a probe would only wait behind
        llama-server; the model's requests watch it instead. A node with a free port
        (``clients`` > 1) is probed there; one with none is ``busy``, naming its models.
        ``held_bytes``: what the models on it hold there (an idle CPU rpc-server reports
        all of its memory free whatever its siblings hold)."""
        todo = list(self.nodes.nodes.values()) if nodes is None else nodes
        holders: dict[str, tuple[str, int]] = {}  # address -> (model, bytes there)
        for r in self.resident.values():
            for share in r.placement.shares[1:] if r.placement else []:
                holders[share.address or ""] = (r.spec.name, share.bytes)
        found: list[tuple[Node, NodeInfo]] = [(n, NodeInfo(name=n.name, address=n.address, state="unknown", clients=n.clients)) for n in todo]

        async def one(i: int, node: Node) -> None:
            held = [holders[a] for a in node.addresses if a in holders]
            users = [model for model, _ in held]
            extra = {"used_by": users, "held_bytes": sum(b for _, b in held), "address": node.address, "clients": node.clients}
            free = [a for a in node.addresses if a not in holders]
            if not free:
                last = self.nodes.last.get(node.name) or found[i][1]
                error = f"serving {', '.join(users)} (each of its {node.clients} rpc-server(s) serves one model at a time; node serve --clients for more)"
                found[i] = (node, msgspec.structs.replace(last, state="busy", error=error, **extra))
                return
            port = node.at(free[0])
            info = await anyio.to_thread.run_sync(self.nodes.probe, port)
            found[i] = (port, msgspec.structs.replace(info, **extra))

        async with anyio.create_task_group() as tg:
            for i, node in enumerate(todo):
                tg.start_soon(one, i, node)
        for _, info in found:
            if info.name in self.nodes.nodes:
                self.nodes.last[info.name] = info
        return found

    async def _place_nodes(self, spec: ModelSpec, chosen: BackendSpec, need: MemoryEstimate, refs: list[str]) -> Placement:
        """Probe the requested nodes and split ``need`` across them and this machine
        (backends declaring the ``nodes`` capability)."""
        backend = chosen.name
        if "nodes" not in chosen.capabilities:
            ranks = "; it can split a model across processes on this machine instead (ranks)" if chosen.check_ranks is not None else ""
            raise NoBackend(
                f"{spec.name}: splitting a model across nodes needs the llama.cpp backend (llama-server --rpc); {backend} runs on this machine only{ranks}",
                backend=backend,
                reason="no-nodes",
            )
        placement = place(spec, need, await self._probe_free([self.nodes.resolve(ref) for ref in refs]))
        if placement.dropped:
            log.warning("%s: loading without %s", spec.name, ", ".join(placement.dropped))
        return placement

    def memory(self) -> MemoryBudget:
        return self.ledger.describe(self.resident)

    # --- failure-loop prevention ------------------------------------------------
    def history(self, name: str) -> CrashHistory:
        history = self.crashes.get(name)
        if history is None:
            cfg = self.config
            history = self.crashes[name] = CrashHistory(cfg.crash_limit, cfg.crash_window_s, cfg.restart_backoff_s, cfg.restart_backoff_max_s)
        return history

    def failures(self) -> list[ModelFailure]:
        """Models with a worker death inside the crash window (failed or recovering)."""
        return [h.describe(name) for name, h in sorted(self.crashes.items()) if h.is_open() or h.recent()]

    def failed(self) -> list[ModelFailure]:
        return [f for f in self.failures() if f.state == "failed"]

    def _check_circuit(self, name: str) -> None:
        history = self.crashes.get(name)
        if history is not None and history.is_open():
            retry = history.retry_after()
            raise ModelFailed(
                f"{name} is failed: {history.reason()}; requests are refused for {retry:.0f} s (or force a restart with models.load)",
                model=name,
                reason=history.reason(),
                cause=history.last_cause,
                retry_after_s=round(retry, 3),
            )

    # --- resolution -------------------------------------------------------------
    def resolve(self, ref: str) -> ModelSpec:
        if ref in self.resident:
            return self.resident[ref].spec
        registered = self.store.get(ref)
        if registered is not None:
            return ModelSpec(
                name=registered.name,
                path=registered.path,
                format=registered.format,
                source=registered.source.describe(),
                metadata=registered.metadata,
            )
        spec = self.hook.impetus_resolve_model(ref=ref, config=self.config)
        if spec is None:
            raise ModelNotFound(f"model {ref!r} not found (not a registered model, an alias, a loaded model or an existing path)", model=ref)
        current = self.resident.get(spec.name)
        if current is not None:
            return current.spec  # already inspected at load: no header read per request
        if not spec.format:
            fmt, meta = self.detect(Path(spec.path))
            spec = ModelSpec(name=spec.name, path=spec.path, format=fmt, source=spec.source, metadata=meta)
        return spec

    def detect(self, path: Path) -> tuple[str, dict[str, Any]]:
        """The format plugin that recognises ``path``, and what it reads from it."""
        return detect_format(self.registries.formats, path)

    def default_options(self) -> LoadOptions:
        return LoadOptions(kv_type=self.config.kv_cache_type, flash_attn=self.config.flash_attn)

    def choose_backend(self, spec: ModelSpec, wanted: str | None) -> BackendSpec:
        return choose_backend(self.registries, self.hook, self.config.backend, spec, wanted)

    # --- leases -----------------------------------------------------------------------
    @asynccontextmanager
    async def lease(self, ref: str, *, keep_alive: float | str | None, queued: Queued | None = None) -> AsyncIterator[Lease]:
        """Hold ``ref``'s model for one request: admit it against the model's
        queue (when ``queued`` is given: ``Overloaded`` beyond the limit), load the
        model if needed, and when the lease ends restart its keep-alive (0:
        unload it now). The request counts as in flight while it uses the worker."""
        if queued is not None:
            self._admit(ref, queued)
        resident, load_ms, _ = await self.ensure_loaded(ref, keep_alive=keep_alive)
        lease = Lease(resident, load_ms, self.unload_idle)
        try:
            yield lease
        finally:
            if lease.counted:
                await self._release(resident)

    def _admit(self, ref: str, request: Queued) -> None:
        """Count a generation request against its model until the request is over.

        A worker runs up to its backend's ``max_batch`` requests together (one
        for backends that do not batch); beyond ``max_queued_per_model``
        waiting behind those, the request is refused with ``Overloaded`` at once.
        """
        spec = self.resolve(ref)
        name = spec.name
        limit = self.config.max_queued_per_model
        running = self._batch_capacity(spec)
        count = self.admitted.get(name, 0)
        if count >= limit + running:
            raise Overloaded(
                f"{name} has {count - running} request(s) queued (limit {limit}); try again later",
                model=name,
                limit=limit,
                reason="queue",
            )
        self.admitted[name] = count + 1

        def leave() -> None:
            left = self.admitted[name] - 1
            if left:
                self.admitted[name] = left
            else:
                del self.admitted[name]

        request.finalizers.append(leave)

    def _batch_capacity(self, spec: ModelSpec) -> int:
        """How many requests the model's worker runs at once: its backend's batch size."""
        resident = self.resident.get(spec.name)
        if resident is not None:
            return max(1, resident.backend.max_batch)
        try:
            return max(1, self.choose_backend(spec, None).max_batch)
        except ImpetusError:
            return 1  # the load will say why

    # --- load / unload ------------------------------------------------------------
    async def ensure_loaded(
        self,
        ref: str,
        *,
        backend: str | None = None,
        keep_alive: float | str | None = None,
        force: bool = False,
        options: LoadOptions | None = None,
        gpu_layers: int | None = None,
        nodes: list[str] | None = None,
    ) -> tuple[Resident, float, bool]:
        """The resident model for ``ref``, loading it if needed.

        A model whose circuit is open is refused with ``ModelFailed`` unless
        ``force`` (an explicit ``models.load``) resets it; after a recent crash
        the start waits out the backoff. ``options`` (an explicit ``models.load``'s) other
        than the loaded model's reload it. Returns ``(resident, load_ms_caused, already_loaded)``.
        """
        spec = self.resolve(ref)
        ka = parse_keep_alive(keep_alive, self.config.keep_alive_s)
        if force and spec.name in self.crashes:
            self.crashes[spec.name].reset()
        if spec.name not in self.resident:
            self._check_circuit(spec.name)  # at once, without queueing behind a load
        lock = self._locks.setdefault(spec.name, anyio.Lock())
        async with lock:
            current = self.resident.get(spec.name)
            spec = msgspec.structs.replace(spec, options=options or self.wanted_options.get(spec.name) or self.default_options())
            if current is not None and current.worker.alive and options is not None and options != current.spec.options:
                if current.in_flight:
                    busy = f"{spec.name} is running {current.in_flight} request(s)"
                    raise NoBackend(f"{busy}; load it with other settings when they have finished", backend=backend)
                await self._stop(current, "unloaded to load with other settings")
                current = None
            if current is not None and current.worker.alive and backend and backend != current.backend.name:
                if current.in_flight:  # switching would cut its requests short
                    raise NoBackend(
                        f"{spec.name} is running {current.in_flight} request(s) on {current.backend.name}; load it on {backend} when they have finished",
                        backend=backend,
                        loaded_on=current.backend.name,
                    )
                self.choose_backend(spec, backend)  # an unknown or unable backend is refused before the unload
                await self._stop(current, f"unloaded to switch to {backend}")
                current = None
            if current is not None and current.worker.alive and nodes is not None and nodes != current.requested_nodes:
                if current.in_flight:
                    raise InvalidParams(
                        f"{spec.name} is running {current.in_flight} request(s) on nodes {current.requested_nodes or 'none'}; "
                        "load it on others when they have finished",
                        model=spec.name,
                    )
                await self._stop(current, f"unloaded to move to nodes {nodes or 'none'}")
                current = None
            if nodes is not None:
                self.wanted_nodes[spec.name] = list(nodes)
            if options is not None:
                self.wanted_options[spec.name] = options
            wanted = self.wanted_nodes.get(spec.name, list(self.config.nodes))
            if current is not None and current.worker.alive:
                current.touch(ka if keep_alive is not None else current.keep_alive)
                return current, 0.0, True
            chosen = self.choose_backend(spec, backend)
            check_options(spec, chosen, options is not None, lambda path: self.detect(path)[1])
            spec = msgspec.structs.replace(spec, options=for_backend(spec.options, chosen))
            if gpu_layers is not None and chosen.gpu_layers is None:
                raise UnsupportedParameter(f"backend {chosen.name!r} cannot offload layers to a GPU (n_gpu_layers)", param="n_gpu_layers", backend=chosen.name)
            self._check_circuit(spec.name)
            started = time.monotonic()
            if spec.name in self.crashes:
                wait = self.crashes[spec.name].backoff_left()
                if wait > 0:
                    log.info("restarting %s in %.2f s (backoff after a failure)", spec.name, wait)
                    await anyio.sleep(wait)
            cfg = self.config
            env = {"IMPETUS_LOG_LEVEL": cfg.log_level, **worker_env(cfg.worker_blas), **binary_env(cfg.llama_server, cfg.llamacpp_gpu_layers)}
            weights = chosen.memory_weights(spec, env) if chosen.memory_weights is not None else None
            context = chosen.context_tokens or cfg.memory_estimate_context  # a backend that fixes its context says so
            ranks = spec.options.ranks if spec.options else 1  # each rank a process: its own overhead, a share of the rest
            need = estimate(spec, chosen.memory_overhead_bytes * ranks, context, weights, sequences=chosen.kv_sequences)
            if "nodes" not in chosen.capabilities and spec.name not in self.wanted_nodes:
                wanted = []  # the config's default nodes are for the backends that can use them
            placement = await self._place_nodes(spec, chosen, need, wanted) if wanted else None
            if placement is None:  # on this machine: its GPU takes what fits (a split across nodes stays on the CPUs)
                need = await self._place(spec, chosen, env, gpu_layers, need)
            try:
                await self.ledger.reserve(
                    spec, placement.local if placement else need, self.resident, lambda victim: self._stop(victim, "evicted", to_load=spec.name)
                )
            except InsufficientMemory as exc:
                raise refuse(spec, placement, exc) if placement else exc from None
            env["IMPETUS_LLAMA_RPC"] = ""  # none unless placed below (not the daemon's own environment's)
            if placement is not None and placement.nodes:
                env["IMPETUS_LLAMA_RPC"] = ",".join(n.address for n in placement.nodes)
                env["IMPETUS_LLAMA_RPC_LAYERS"] = str(placement.layers if placement.layers < placement.total_layers else 999)
            data = {"backend": chosen.name, "estimate_bytes": need.total_bytes, "gpu_bytes": need.gpu_bytes}
            self.emit(Event(kind="model.loading", model=spec.name, data=data))
            thermal = self.thermal
            tuning = thermal.tuning()
            try:
                worker = await WorkerHandle.start(
                    self._task_group(),
                    spec,
                    chosen.name,
                    plugins=list(cfg.plugins),
                    disabled_plugins=list(cfg.disabled_plugins),
                    timeout=cfg.worker_start_timeout_s,
                    hung_timeout=cfg.hung_timeout_s,
                    env=env,
                    cache=cache_settings(cfg, self.store, spec),
                    process=self.spares.take(chosen),
                    tuning=tuning if thermal.throttled else None,
                    warm_up=not thermal.throttled,  # postponed while the machine is hot
                )
            except ImpetusError as exc:
                if isinstance(exc, ModelLoadFailed):  # the worker died or stalled while loading
                    self.history(spec.name).record(str(exc.fields.get("cause", exc.message)))
                self.emit(Event(kind="model.failed", model=spec.name, data={"error": exc.message}))
                raise
            finally:
                self.ledger.release(spec.name)
                self.spares.refill(chosen)
            load_ms = (time.monotonic() - started) * 1000
            self.metrics.worker_started(spec.name)
            resident = Resident(spec, chosen, worker, load_ms, ka, need, placement=placement, requested_nodes=wanted)
            self.ledger.learn(worker)
            worker.on_exit = self._on_worker_exit
            self.resident[spec.name] = resident
            self._changed()
            if thermal.tuning() != tuning:  # the thermal state changed while it started
                await worker.tune(thermal.tuning())
            log.info("loaded %s on %s (pid %s) in %.0f ms", spec.name, chosen.name, worker.pid, load_ms)
            self.emit(
                Event(
                    kind="model.loaded",
                    model=spec.name,
                    data={
                        "backend": chosen.name,
                        "pid": worker.pid,
                        "load_ms": load_ms,
                        "warmup_ms": resident.warmup_ms,
                        "estimate_bytes": need.total_bytes,
                    },
                )
            )
            return resident, load_ms, False

    async def _place(self, spec: ModelSpec, chosen: BackendSpec, env: dict[str, str], wanted: int | None, need: MemoryEstimate) -> MemoryEstimate:
        """Split ``need`` into host and GPU parts by the layers ``chosen`` will offload, and tell
        the worker that count (``IMPETUS_GPU_LAYERS`` in ``env``). Without a GPU in the budget the
        backend decides in the worker (a count asked for is passed on as it is)."""
        if chosen.gpu_layers is None:
            return need
        if self.ledger.gpu() is None:
            if wanted is not None:
                env["IMPETUS_GPU_LAYERS"] = str(wanted)
            return need
        plan, room = chosen.gpu_layers, self.ledger.gpu_room(self.resident)
        offloaded, layers = await anyio.to_thread.run_sync(lambda: plan(spec, env, wanted, room))
        env["IMPETUS_GPU_LAYERS"] = str(offloaded)
        return split(need, layers, offloaded)

    def _task_group(self) -> TaskGroup:
        """Where workers' tasks run: the manager's own, while it runs."""
        if self._workers is None:
            raise ShuttingDown("the daemon is shutting down; no model is loaded")
        return self._workers

    def find(self, ref: str) -> Resident:
        if ref in self.resident:
            return self.resident[ref]
        try:
            name = self.resolve(ref).name
        except ImpetusError:
            name = ref
        if name not in self.resident:
            raise ModelNotLoaded(f"model {ref!r} is not loaded", model=ref)
        return self.resident[name]

    async def unload(self, ref: str) -> Resident:
        resident = self.find(ref)
        await self._stop(resident, "unloaded")
        return resident

    async def unload_idle(self, keep: str) -> list[str]:
        """Unload every model with no request in flight except ``keep``; their names."""
        idle = [r for name, r in self.resident.items() if name != keep and r.in_flight == 0]
        for resident in idle:
            await self._stop(resident, "unloaded to free memory")
        return [r.spec.name for r in idle]

    async def _stop(self, resident: Resident, why: str, to_load: str | None = None) -> None:
        self.resident.pop(resident.spec.name, None)
        await resident.worker.stop()
        self._changed()
        extra = f" to make room for {to_load}" if to_load else ""
        log.info("%s %s (pid %s)%s", why, resident.spec.name, resident.worker.pid, extra)
        data: dict[str, Any] = {"reason": why, "pid": resident.worker.pid}
        if to_load:
            data["for"] = to_load
        self.emit(Event(kind="model.unloaded", model=resident.spec.name, data=data))

    def _on_worker_exit(self, worker: WorkerHandle) -> None:
        resident = self.resident.get(worker.spec.name)
        if resident is not None and resident.worker is worker:
            del self.resident[worker.spec.name]
            history = self.history(worker.spec.name)
            history.record(worker.exit_reason or "unknown", hung=worker.hung)
            self.metrics.worker_crashed(worker.spec.name)
            self._changed()
            log.warning("worker for %s exited: %s (%s)", worker.spec.name, worker.exit_reason, history.reason())
            self.emit(Event(kind="model.failed", model=worker.spec.name, data={"cause": worker.exit_reason}))

    async def stop_all(self) -> None:
        await self.spares.stop_all()
        async with anyio.create_task_group() as tg:
            for resident in list(self.resident.values()):
                tg.start_soon(self._stop, resident, "stopped")

    def _changed(self) -> None:
        self.changed.set()
        self.changed = anyio.Event()

    async def retune(self, tuning: Tuning, restored: bool) -> tuple[list[str], list[str]]:
        """Tell every worker the thermal ``tuning``; once ``restored``, run the
        warm-ups postponed while the machine was hot. The models told, and warmed up."""
        workers = list(self.resident.values())
        told = [r.spec.name for r in workers if await r.worker.tune(tuning)]
        warmed: list[str] = []
        if restored:
            for r in workers:
                if r.worker.warm_up_pending and r.worker.alive:
                    if r.requests == 0:  # a request since the load already did the warming
                        await r.worker.warm_up()
                        warmed.append(r.spec.name)
                    r.worker.warm_up_pending = False
        return told, warmed

    async def _reap(self) -> None:
        """Unload models whose keep-alive ran out."""
        while True:
            soonest = 60.0
            for resident in list(self.resident.values()):
                left = resident.expires_in()
                if left is None:
                    continue
                if left <= 0:
                    await self._stop(resident, "expired")
                else:
                    soonest = min(soonest, left)
            with anyio.move_on_after(soonest):
                await self.changed.wait()

    async def _release(self, resident: Resident) -> None:
        """A request finished: keep-alive restarts; 0 means unload now."""
        resident.in_flight -= 1
        resident.last_used = time.monotonic()
        if resident.keep_alive == 0 and resident.in_flight == 0 and self.resident.get(resident.spec.name) is resident:
            await self._stop(resident, "expired")
        else:
            self._changed()

    # --- listing --------------------------------------------------------------------
    def list_models(self) -> list[ModelEntry]:
        entries: list[ModelEntry] = []
        seen: set[str] = set()
        for model in self.store.all():
            entries.append(
                ModelEntry(
                    name=model.name,
                    path=model.path,
                    format=model.format,
                    size_bytes=model.size_bytes,
                    available=True,
                    loaded=model.name in self.resident,
                    source=model.source.describe(),
                    metadata=model.metadata,
                )
            )
            seen.add(model.name)
        for alias, item in sorted(CATALOG.items()):
            if alias in seen:
                continue
            path = item.local_path()
            size = (sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if item.folder else path.stat().st_size) if path else None
            fmt = "gguf" if item.file.endswith(".gguf") else ("safetensors" if item.folder else None)
            entries.append(
                ModelEntry(
                    name=alias,
                    path=str(path) if path else None,
                    format=fmt,
                    size_bytes=size,
                    available=path is not None,
                    loaded=alias in self.resident,
                    source=item.repo,
                )
            )
            seen.add(alias)
        for name, resident in sorted(self.resident.items()):
            if name in seen:
                continue
            p = Path(resident.spec.path)
            entries.append(
                ModelEntry(
                    name=name,
                    path=str(p),
                    format=resident.spec.format,
                    size_bytes=p.stat().st_size if p.is_file() else None,
                    available=True,
                    loaded=True,
                    source=resident.spec.source,
                    metadata=resident.spec.metadata,
                )
            )
        return entries
