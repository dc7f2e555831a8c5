"""Spare workers: one pre-started worker per backend, its imports already done.

Starting a worker costs the interpreter start and the backend's imports (about
1.5 s for MLX with mlx-lm and transformers on a 2-core CPU) before any weights
are read. With ``spare_worker = true`` the daemon keeps one process per backend
that declares ``preload`` modules, started with ``IMPETUS_WORKER_PRELOAD`` so it
imports them and then waits for its ``worker.start``; a load takes it and a
replacement starts once that load is over. The spare's memory (~100 MB for MLX) is not counted
against the memory budget.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
from anyio.abc import Process, TaskGroup, TaskStatus

from impetusd.plugin.manager import BUILTIN_MODULES
from impetusd.workers.blas import worker_env
from impetusd.workers.handle import spawn_worker

if TYPE_CHECKING:
    from impetusd.config import Config
    from impetusd.engine.backend import BackendSpec
    from impetusd.plugin.registries import PluginRegistry

log = logging.getLogger(__name__)


class Spares:
    """The spare workers, started in this service's own task group
    (``tg.start(spares.run)``); ``stopping`` says when no more are wanted."""

    def __init__(self, config: Config, backends: PluginRegistry[BackendSpec], stopping: Callable[[], bool]) -> None:
        self.config = config
        self.backends = backends
        self.stopping = stopping
        self.waiting: dict[str, Process] = {}
        self._starting: set[str] = set()
        self._tg: TaskGroup | None = None

    def enabled_for(self, backend: BackendSpec) -> bool:
        return self.config.spare_worker and bool(backend.preload)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Start one spare per backend that wants one (only with ``spare_worker = true``),
        then hold their task group until cancelled."""
        async with anyio.create_task_group() as tg:
            self._tg = tg
            for backend in self.backends.values():
                self.refill(backend)
            task_status.started()
            try:
                await anyio.sleep_forever()
            finally:
                self._tg = None

    def refill(self, backend: BackendSpec) -> None:
        tg = self._tg
        if tg is None or self.stopping() or not self.enabled_for(backend):
            return
        if backend.name in self.waiting or backend.name in self._starting:
            return
        self._starting.add(backend.name)
        tg.start_soon(self._spawn, backend)

    async def _spawn(self, backend: BackendSpec) -> None:
        try:
            modules = (*BUILTIN_MODULES, *backend.preload)  # the worker's plugin manager imports the built-ins too
            env = {
                "IMPETUS_LOG_LEVEL": self.config.log_level,
                "IMPETUS_WORKER_PRELOAD": ",".join(modules),
                **worker_env(self.config.worker_blas),  # LD_PRELOAD only works from the start
                **(backend.worker_env(self.config.backends.get(backend.name, {})) if backend.worker_env else {}),
            }
            self.waiting[backend.name] = await spawn_worker(env)
        except OSError as exc:
            log.warning("could not start a spare %s worker: %s", backend.name, exc)
        finally:
            self._starting.discard(backend.name)

    def take(self, backend: BackendSpec) -> Process | None:
        """The spare worker for ``backend`` if one is waiting and alive. The caller
        calls ``refill`` once its load is over (so the two do not compete for the CPU)."""
        process = self.waiting.pop(backend.name, None)
        if process is not None and process.returncode is not None:
            return None  # it died while waiting (its imports failed?): start afresh
        return process

    async def stop_all(self) -> None:
        """End the spares: closing stdin makes a waiting worker exit."""
        spares, self.waiting = list(self.waiting.values()), {}
        for process in spares:
            try:
                assert process.stdin is not None
                await process.stdin.aclose()
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass
        for process in spares:
            with anyio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
