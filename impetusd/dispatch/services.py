"""What RPC handlers are given: ``handler(services, params, ctx)``.

The daemon builds one ``Services`` (impetusd/daemon.py, the composition root)
and the dispatcher passes it to every handler; handlers use only what is here.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from impetusd.config import Config
    from impetusd.dispatch.context import RequestContext
    from impetusd.engine.placement import NodePlacement
    from impetusd.observe.events import Event, EventBus
    from impetusd.observe.metrics import MetricsRecorder
    from impetusd.plugin.registries import Registries
    from impetusd.protocol.api import NodeInfo
    from impetusd.residency.manager import ModelManager
    from impetusd.residency.thermal import ThermalWatch
    from impetusd.store.pull import Pulls
    from impetusd.store.registry import ModelStore


class Lifecycle(Protocol):
    """What ``daemon.*`` methods read of the running daemon, and how one stops it."""

    @property
    def started_at(self) -> float: ...

    @property
    def uptime(self) -> float: ...

    @property
    def stopping(self) -> bool: ...

    @property
    def connections(self) -> int: ...

    @property
    def in_flight(self) -> Collection[RequestContext]: ...

    def request_stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Services:
    """Everything an RPC handler may use."""

    config: Config
    registries: Registries
    plugins: Callable[[], list[tuple[str, list[str]]]]  # each plugin's name and hooks
    store: ModelStore
    pulls: Pulls
    residency: ModelManager
    thermal: ThermalWatch
    events: EventBus
    metrics: MetricsRecorder
    emit: Callable[[Event], None]
    lifecycle: Lifecycle

    def placement(self, backend: str) -> NodePlacement:
        """The compute nodes of ``backend`` (one with ``BackendSpec.nodes``): what its plugin's
        methods manage (``nodes.*`` of the llama.cpp plugin)."""
        return self.residency.placers[backend]

    def node_snapshot(self) -> list[NodeInfo]:
        """Every backend's compute nodes, as last probed (``daemon.health``)."""
        return [info for placer in self.residency.placers.values() for info in placer.snapshot()]
