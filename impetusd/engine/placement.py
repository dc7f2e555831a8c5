"""A backend's optional placement capability: splitting a model across compute nodes.

A backend that can (``BackendSpec.nodes``) gives the daemon one ``NodePlacement`` per daemon,
made with the daemon's home directory (where it keeps its list of nodes) and a callable that
says what the loaded models hold on which node. The daemon asks it to place a load, charges
this machine's budget with the local part, hands the worker the placement's environment and
keeps the ``Placement`` with the loaded model (its ``env`` goes to the worker); ``daemon.health`` shows its ``snapshot``. The
backend's plugin serves the methods that manage the nodes (``nodes.*``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol, runtime_checkable

import msgspec

from impetusd.engine.messages import ModelSpec
from impetusd.protocol.api import MemoryEstimate, NodeInfo, NodeShare
from impetusd.protocol.errors import InsufficientMemory

# address (host:port) -> (the model, the bytes it holds there): what loaded models hold on the nodes
Holdings = Mapping[str, tuple[str, int]]


class Placement(msgspec.Struct, frozen=True):
    """A model split across compute nodes and this machine."""

    addresses: list[str]  # the nodes used (host:port), in the backend's order
    layers: int  # layers on the nodes
    total_layers: int
    local: MemoryEstimate  # what this machine's budget is charged
    shares: list[NodeShare]  # local first
    dropped: list[str]  # requested nodes left out, with why
    env: dict[str, str] = {}  # what the worker is told of the split (beside the backend's worker_env)


@runtime_checkable
class NodePlacement(Protocol):
    """What the daemon asks of a backend's compute nodes."""

    def snapshot(self) -> list[NodeInfo]:
        """Each node as last probed (``unknown`` before the first probe)."""
        ...

    async def probe(self, refs: list[str] | None = None) -> list[NodeInfo]:
        """Each node (all, or those named) now."""
        ...

    async def place(self, spec: ModelSpec, need: MemoryEstimate, refs: list[str]) -> Placement:
        """Probe the nodes ``refs`` names (names or host:port) and split ``need`` across them
        and this machine; ``InsufficientMemory`` when not one layer fits on them."""
        ...

    def refuse(self, spec: ModelSpec, placement: Placement, exc: InsufficientMemory) -> InsufficientMemory:
        """The local part did not fit either (``exc``): the error naming every part."""
        ...


# BackendSpec.nodes: given the daemon's home and what the loaded models hold, the placement.
MakePlacement = Callable[[Path, Callable[[], Holdings]], NodePlacement]
