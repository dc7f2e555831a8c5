"""Residency: resolve models, admit and lease them to requests, load (a ``LoadPlan``
from ``plan.py``, carried out by ``launch.py``), unload, and the keep-alive reaper; the
map of resident models and the per-model locks."""

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
from impetusd.engine.placement import Holdings, NodePlacement
from impetusd.observe.events import Event
from impetusd.protocol.api import MemoryBudget, ModelFailure
from impetusd.protocol.errors import ImpetusError, ModelFailed, ModelNotFound, ModelNotLoaded, Overloaded, ShuttingDown
from impetusd.residency.choice import choose_backend
from impetusd.residency.crashes import CrashHistory
from impetusd.residency.launch import Launcher
from impetusd.residency.lease import Lease, Queued
from impetusd.residency.plan import LoadRequest, choose, plan_load
from impetusd.residency.reload import busy, needs_reload
from impetusd.residency.resident import MemoryLedger, Resident
from impetusd.residency.spares import Spares
from impetusd.residency.thermal import ThermalWatch
from impetusd.store.detect import detect_format
from impetusd.store.registry import ModelStore
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
        self.launcher = Launcher(config, store, self.ledger, thermal, spares, emit, metrics)
        # the compute nodes of each backend that can split a model across them (BackendSpec.nodes)
        self.placers: dict[str, NodePlacement] = {b.name: b.nodes(config.home, self._holdings) for b in registries.backends.values() if b.nodes is not None}
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
        """Keep ``daemon.health``'s view of the compute nodes fresh (``nodes.list`` probes at once)."""
        while True:
            for placer in self.placers.values():
                await placer.probe()
            await anyio.sleep(NODE_PROBE_S)

    def _holdings(self) -> Holdings:
        """What the loaded models split across compute nodes hold on each (address -> model, bytes)."""
        return {share.address or "": (r.spec.name, share.bytes) for r in self.resident.values() for share in (r.placement.shares[1:] if r.placement else [])}

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
        the start waits out the backoff. ``options``, ``backend`` or ``nodes`` (an explicit
        ``models.load``'s) other than the loaded model's reload it (``needs_reload``).
        Returns ``(resident, load_ms_caused, already_loaded)``.
        """
        request = LoadRequest(backend=backend, options=options, gpu_layers=gpu_layers, nodes=nodes)
        spec = self.resolve(ref)
        ka = parse_keep_alive(keep_alive, self.config.keep_alive_s)
        if force and spec.name in self.crashes:
            self.crashes[spec.name].reset()
        if spec.name not in self.resident:
            self._check_circuit(spec.name)  # at once, without queueing behind a load
        async with self._locks.setdefault(spec.name, anyio.Lock()):
            spec = msgspec.structs.replace(spec, options=options or self.wanted_options.get(spec.name) or self.default_options())
            current = await self._serving(spec, request)
            if nodes is not None:
                self.wanted_nodes[spec.name] = list(nodes)
            if options is not None:
                self.wanted_options[spec.name] = options
            if current is not None:
                current.touch(ka if keep_alive is not None else current.keep_alive)
                return current, 0.0, True
            resident = await self._load(spec, request, ka)
            return resident, resident.load_ms, False

    async def _serving(self, spec: ModelSpec, request: LoadRequest) -> Resident | None:
        """The live resident model when it serves ``request`` as it is; otherwise None, once
        a loaded model that must be loaded again is unloaded (refused while it runs requests)."""
        current = self.resident.get(spec.name)
        if current is None or not current.worker.alive:
            return None
        reload = needs_reload(current, request)
        if reload is None:
            return current
        if current.in_flight:
            raise busy(current, reload, request)
        if reload.differs == "backend":
            self.choose_backend(spec, request.backend)  # an unknown or unable backend is refused before the unload
        await self._stop(current, reload.why)
        return None

    async def _load(self, spec: ModelSpec, request: LoadRequest, keep_alive: float | None) -> Resident:
        """Plan the load (backend, options, estimate, placement, environment), wait out a
        crash's backoff, and launch it."""
        chosen = self.choose_backend(spec, request.backend)
        spec = choose(spec, request, chosen, lambda path: self.detect(path)[1])
        self._check_circuit(spec.name)
        started = time.monotonic()
        await self._backoff(spec.name)
        placer = self.placers.get(chosen.name)
        plan = await plan_load(self.config, spec, chosen, request, self.wanted_nodes.get(spec.name), placer=placer, gpu_room=self._gpu_room)
        return await self.launcher.launch(
            plan,
            keep_alive,
            started,
            group=self._task_group,
            resident=self.resident,
            evict=lambda victim: self._stop(victim, "evicted", to_load=spec.name),
            failed=lambda cause: self.history(spec.name).record(cause),
            register=self._register,
        )

    async def _backoff(self, name: str) -> None:
        """After a recent crash, wait until the restart's backoff is over."""
        if name in self.crashes:
            wait = self.crashes[name].backoff_left()
            if wait > 0:
                log.info("restarting %s in %.2f s (backoff after a failure)", name, wait)
                await anyio.sleep(wait)

    def _gpu_room(self) -> int | None:
        """GPU bytes a new load may take; None without a GPU in the budget."""
        return None if self.ledger.gpu() is None else self.ledger.gpu_room(self.resident)

    def _register(self, resident: Resident) -> None:
        """A started model becomes resident; its worker's death is watched."""
        resident.worker.on_exit = self._on_worker_exit
        self.resident[resident.spec.name] = resident
        self._changed()

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
