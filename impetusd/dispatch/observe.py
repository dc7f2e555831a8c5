"""``hardware.snapshot`` and ``events.subscribe``: what the machine and the
daemon are doing, now and as it happens."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
import psutil

from impetusd.dispatch.context import RequestContext
from impetusd.observe.events import TOPICS, Event
from impetusd.observe.rss import tree_rss
from impetusd.plugin.registries import HardwareMonitor, MethodSpec, PluginRegistry
from impetusd.protocol.api import HardwareSnapshot, SnapshotParams
from impetusd.protocol.errors import InvalidParams

if TYPE_CHECKING:
    from impetusd.dispatch.services import Services

MEMORY_PRESSURE_PERCENT = 90.0


class SubscribeParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    topics: list[str] = msgspec.field(default_factory=lambda: list(TOPICS))
    interval_s: float = 2.0  # hardware samples


class EventNote(msgspec.Struct, frozen=True):
    """Params of the ``events.event`` notification."""

    id: int | str | None
    event: Event
    dropped: int  # events this subscriber lost so far by not keeping up


class SubscribeResult(msgspec.Struct, frozen=True):
    delivered: int
    dropped: int


def hardware_facts(monitors: PluginRegistry[HardwareMonitor]) -> dict[str, Any]:
    """Every monitor's snapshot. Blocking (monitors measure and run tools): call
    it through ``anyio.to_thread.run_sync``."""
    facts: dict[str, Any] = {}
    for monitor in monitors.values():
        try:
            facts[monitor.name] = monitor.snapshot()
        except Exception as exc:  # a monitor's failure is reported, not fatal
            facts[monitor.name] = {"error": f"{type(exc).__name__}: {exc}"}
    return facts


async def snapshot(services: Services) -> HardwareSnapshot:
    monitors = await anyio.to_thread.run_sync(hardware_facts, services.registries.monitors)
    workers: dict[str, int | None] = {}
    for name, resident in services.residency.resident.items():
        workers[name] = tree_rss(resident.worker.pid)  # llama-server children included
    return HardwareSnapshot(time=time.time(), monitors=monitors, workers=workers, thermal=services.thermal.state())


async def hardware_snapshot(services: Services, params: SnapshotParams, ctx: RequestContext) -> HardwareSnapshot:
    return await snapshot(services)


async def events_subscribe(services: Services, params: SubscribeParams, ctx: RequestContext) -> SubscribeResult:
    unknown = sorted(set(params.topics) - set(TOPICS))
    if unknown:
        raise InvalidParams(f"Invalid params: unknown topic {unknown[0]!r} (topics: {', '.join(TOPICS)})", field="topics")
    if not 0.1 <= params.interval_s <= 3600:
        raise InvalidParams("Invalid params: interval_s must be between 0.1 and 3600", field="interval_s")
    ctx.cooperative = True  # $/cancel ends the stream with a result
    sub = services.events.subscribe(set(params.topics))
    delivered = 0
    try:
        async with anyio.create_task_group() as tg:
            if "hardware" in sub.topics or "memory" in sub.topics:
                tg.start_soon(_sample, services, params.interval_s, sub.topics)

            async def stop_on_cancel() -> None:
                await ctx.cancel_requested.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(stop_on_cancel)
            while True:
                for event in await sub.next_batch():
                    await ctx.notify("events.event", EventNote(id=ctx.id, event=event, dropped=sub.dropped))
                    delivered += 1
    finally:
        services.events.unsubscribe(sub)
    return SubscribeResult(delivered=delivered, dropped=sub.dropped)


async def _sample(services: Services, interval: float, topics: set[str]) -> None:
    pressured = False
    while True:
        snap = await snapshot(services)
        if "hardware" in topics:
            services.emit(Event(kind="hardware.sample", data=msgspec.to_builtins(snap)))
        percent = psutil.virtual_memory().percent
        if "memory" in topics and (percent >= MEMORY_PRESSURE_PERCENT) != pressured:
            pressured = not pressured
            services.emit(Event(kind="memory.pressure", data={"percent": percent, "pressured": pressured}))
        await anyio.sleep(interval)


OBSERVE_METHODS = (
    MethodSpec(
        "hardware.snapshot", SnapshotParams, HardwareSnapshot, hardware_snapshot, "Facts and samples from every hardware monitor, and each worker's memory."
    ),
    MethodSpec(
        "events.subscribe",
        SubscribeParams,
        SubscribeResult,
        events_subscribe,
        "Stream events (topics: model, request, hardware, memory, thermal) as events.event notifications until $/cancel.",
        stream=True,
    ),
)
