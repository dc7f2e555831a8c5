"""Carrying out a ``LoadPlan``: reserve its memory (evicting idle models when it does not
fit), start the worker, tell the ``model.loading``, ``model.loaded`` or ``model.failed``
events, and tune a worker that started while the thermal state changed."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from anyio.abc import TaskGroup

from impetusd.engine.messages import Tuning
from impetusd.observe.events import Event
from impetusd.protocol.errors import ImpetusError, InsufficientMemory, ModelLoadFailed
from impetusd.residency.cachedir import cache_settings
from impetusd.residency.resident import MemoryLedger, Resident
from impetusd.workers.handle import WorkerHandle

if TYPE_CHECKING:
    from impetusd.config import Config
    from impetusd.observe.metrics import MetricsRecorder
    from impetusd.residency.plan import LoadPlan
    from impetusd.residency.spares import Spares
    from impetusd.residency.thermal import ThermalWatch
    from impetusd.store.registry import ModelStore

log = logging.getLogger(__name__)


class Launcher:
    """Starts planned loads; the manager hands it its resident map and what to call back."""

    def __init__(
        self,
        config: Config,
        store: ModelStore,
        ledger: MemoryLedger,
        thermal: ThermalWatch,
        spares: Spares,
        emit: Callable[[Event], None],
        metrics: MetricsRecorder,
    ) -> None:
        self.config = config
        self.store = store
        self.ledger = ledger
        self.thermal = thermal
        self.spares = spares
        self.emit = emit
        self.metrics = metrics

    async def launch(
        self,
        plan: LoadPlan,
        keep_alive: float | None,
        started: float,
        *,
        group: Callable[[], TaskGroup],
        resident: Mapping[str, Resident],
        evict: Callable[[Resident], Awaitable[None]],
        failed: Callable[[str], None],
        register: Callable[[Resident], None],
    ) -> Resident:
        """Load ``plan`` in a worker started in ``group()``'s task group (``started``: when the
        load began, monotonic); ``evict`` stops an idle model for room, ``failed`` records the
        cause of a worker that died or stalled while loading, ``register`` makes the new
        model resident before it is announced."""
        await self._reserve(plan, resident, evict)
        need = plan.need
        loading = {"backend": plan.backend.name, "estimate_bytes": need.total_bytes, "gpu_bytes": need.gpu_bytes}
        self.emit(Event(kind="model.loading", model=plan.spec.name, data=loading))
        tuning = self.thermal.tuning()
        worker = await self._start(plan, group, tuning, failed)
        load_ms = (time.monotonic() - started) * 1000
        name = plan.spec.name
        self.metrics.worker_started(name)
        loaded = Resident(plan.spec, plan.backend, worker, load_ms, keep_alive, plan.need, placement=plan.placement, requested_nodes=plan.nodes)
        self.ledger.learn(worker)
        register(loaded)
        if self.thermal.tuning() != tuning:  # the thermal state changed while it started
            await worker.tune(self.thermal.tuning())
        log.info("loaded %s on %s (pid %s) in %.0f ms", name, plan.backend.name, worker.pid, load_ms)
        data = {"backend": plan.backend.name, "pid": worker.pid, "load_ms": load_ms, "warmup_ms": loaded.warmup_ms, "estimate_bytes": plan.need.total_bytes}
        self.emit(Event(kind="model.loaded", model=name, data=data))
        return loaded

    async def _reserve(self, plan: LoadPlan, resident: Mapping[str, Resident], evict: Callable[[Resident], Awaitable[None]]) -> None:
        """Reserve what this machine is charged (``release`` follows the start); when the
        local part of a split does not fit, say what each part needed."""
        try:
            await self.ledger.reserve(plan.spec, plan.charged, resident, evict)
        except InsufficientMemory as exc:
            raise plan.placer.refuse(plan.spec, plan.placement, exc) if plan.placement and plan.placer else exc from None

    async def _start(self, plan: LoadPlan, group: Callable[[], TaskGroup], tuning: Tuning, failed: Callable[[str], None]) -> WorkerHandle:
        """Start the worker and load the model in it (a spare worker when one waits; the
        warm-up postponed while the machine is hot)."""
        spec, chosen, cfg, thermal = plan.spec, plan.backend, self.config, self.thermal
        try:
            return await WorkerHandle.start(
                group(),
                spec,
                chosen.name,
                plugins=list(cfg.plugins),
                disabled_plugins=list(cfg.disabled_plugins),
                timeout=cfg.worker_start_timeout_s,
                hung_timeout=cfg.hung_timeout_s,
                env=plan.env,
                cache=cache_settings(cfg, self.store, spec),
                process=self.spares.take(chosen),
                tuning=tuning if thermal.throttled else None,
                warm_up=not thermal.throttled,  # postponed while the machine is hot
            )
        except ImpetusError as exc:
            if isinstance(exc, ModelLoadFailed):  # the worker died or stalled while loading
                failed(str(exc.fields.get("cause", exc.message)))
            self.emit(Event(kind="model.failed", model=spec.name, data={"error": exc.message}))
            raise
        finally:
            self.ledger.release(spec.name)
            self.spares.refill(chosen)
