"""Thermal-aware scheduling: watch the monitors' thermal pressure and back off.

A task polls every monitor that reports a thermal level (in a thread, every
``thermal_poll_s``). The worst level known is the machine's. At or above
``thermal_backoff_level`` the daemon backs off: every worker is told
(``worker.tune``) to use a smaller decode batch and prefill chunk, workers
started meanwhile start so, and their warm-ups wait. When the level drops
below, the engines' defaults come back and postponed warm-ups run. Each change
is a ``thermal.*`` event.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio

from impetusd.engine.messages import Tuning
from impetusd.observe.events import Event, EventKind
from impetusd.plugin.registries import HardwareMonitor, PluginRegistry
from impetusd.protocol.api import ThermalState

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

    from impetusd.config import Config

log = logging.getLogger(__name__)

LEVELS = ("nominal", "fair", "serious", "critical")

# Tell every loaded worker the tuning (and, once restored, run postponed warm-ups):
# the models told and the models warmed up. ``ModelManager.retune``.
Retune = Callable[[Tuning, bool], Awaitable[tuple[list[str], list[str]]]]


def worst(levels: dict[str, str | None]) -> tuple[str, str | None]:
    """The highest known level and the monitor reporting it; ``unknown`` if none knows."""
    known = [(LEVELS.index(level), name) for name, level in sorted(levels.items()) if level in LEVELS]
    if not known:
        return "unknown", None
    index, name = max(known)
    return LEVELS[index], name


def read_levels(monitors: list[HardwareMonitor]) -> dict[str, str | None]:
    """Each monitor's level (blocking: run in a thread). A failing monitor is unknown."""
    levels: dict[str, str | None] = {}
    for m in monitors:
        assert m.thermal is not None
        try:
            levels[m.name] = m.thermal()
        except Exception:
            log.exception("hardware monitor %s failed to read its thermal level", m.name)
            levels[m.name] = None
    return levels


class ThermalWatch:
    """The machine's thermal level and whether the daemon backs off; run with
    ``tg.start(thermal.run, retune)``."""

    def __init__(self, config: Config, monitors: PluginRegistry[HardwareMonitor], emit: Callable[[Event], None]) -> None:
        self.config = config
        self.monitors = monitors
        self.emit = emit
        self.level = "unknown"
        self.source: str | None = None
        self.since: float | None = None
        self.throttled = False

    def tuning(self) -> Tuning:
        """What workers should run with now."""
        cfg = self.config
        return Tuning(max_batch=cfg.thermal_max_batch, prefill_chunk=cfg.thermal_prefill_chunk) if self.throttled else Tuning()

    def state(self) -> ThermalState:
        t = self.tuning()
        return ThermalState(
            level=self.level,
            source=self.source,
            throttled=self.throttled,
            since=self.since,
            max_batch=t.max_batch,
            prefill_chunk=t.prefill_chunk,
        )

    async def run(self, retune: Retune, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Poll the monitors until cancelled, retuning the workers when the backoff starts or ends."""
        monitors = [m for m in self.monitors.values() if m.thermal is not None]
        task_status.started()
        if not monitors:
            log.info("no hardware monitor reports a thermal level; thermal backoff is off")
            return
        while True:
            levels = await anyio.to_thread.run_sync(read_levels, monitors)
            await self.update(*worst(levels), retune)
            await anyio.sleep(self.config.thermal_poll_s)

    async def update(self, level: str, source: str | None, retune: Retune) -> None:
        if level != self.level:
            previous, self.level, self.source, self.since = self.level, level, source, time.time()
            log.info("thermal pressure %s -> %s (%s)", previous, level, source)
            self.emit(Event(kind="thermal.changed", data={"level": level, "previous": previous, "source": source}))
        threshold = LEVELS.index(self.config.thermal_backoff_level)
        hot = level in LEVELS and LEVELS.index(level) >= threshold
        if hot == self.throttled:
            return
        self.throttled = hot
        tuning = self.tuning()
        told, warmed = await retune(tuning, not hot)
        kind: EventKind = "thermal.backoff" if hot else "thermal.restored"
        log.warning("%s at %s pressure: max_batch=%s prefill_chunk=%s for %d worker(s)", kind, level, tuning.max_batch, tuning.prefill_chunk, len(told))
        self.emit(
            Event(
                kind=kind,
                data={
                    "level": level,
                    "source": source,
                    "max_batch": tuning.max_batch,
                    "prefill_chunk": tuning.prefill_chunk,
                    "models": told,
                    "warmed_up": warmed,
                },
            )
        )
