"""The backend's placement capability (``BackendSpec.nodes``): the compute nodes the daemon
may split its models across (``NodeBook``, nodes.py), probed, and a load's split (placement.py).

Made once per daemon; ``held`` says what the loaded models hold on which node (their
placements' shares), so a port serving a model is not probed and its memory is counted."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import anyio
import msgspec

from impetusd.plugin_api import Holdings, InsufficientMemory, MemoryEstimate, ModelSpec, NodeInfo, Placement

from . import placement
from .nodes import Node, NodeBook

log = logging.getLogger(__name__)


class RpcNodes:
    """The nodes (``<home>/nodes.json``) and what the daemon asks of them."""

    def __init__(self, home: Path, held: Callable[[], Holdings]) -> None:
        self.book = NodeBook(home / "nodes.json")
        self.held = held

    def snapshot(self) -> list[NodeInfo]:
        return self.book.snapshot()

    async def probe(self, refs: list[str] | None = None) -> list[NodeInfo]:
        """Each node now (see ``probe_free``)."""
        nodes = None if refs is None else [self.book.resolve(ref) for ref in refs]
        return [info for _, info in await self.probe_free(nodes)]

    async def probe_free(self, nodes: list[Node] | None = None) -> list[tuple[Node, NodeInfo]]:
        """Each node now, with the node narrowed to a port no loaded model holds.

        A port serving a loaded model is not probed: an rpc-server serves one client at a
        time and queues one more (listen backlog 1), so a probe would only wait behind
        llama-server; the model's requests watch it instead. A node with a free port
        (``clients`` > 1) is probed there; one with none is ``busy``, naming its models.
        ``held_bytes``: what the models on it hold there (an idle CPU rpc-server reports
        all of its memory free whatever its siblings hold)."""
        todo = list(self.book.nodes.values()) if nodes is None else nodes
        holders = self.held()
        found: list[tuple[Node, NodeInfo]] = [(n, NodeInfo(name=n.name, address=n.address, state="unknown", clients=n.clients)) for n in todo]

        async def one(i: int, node: Node) -> None:
            held = [holders[a] for a in node.addresses if a in holders]
            users = [model for model, _ in held]
            extra = {"used_by": users, "held_bytes": sum(b for _, b in held), "address": node.address, "clients": node.clients}
            free = [a for a in node.addresses if a not in holders]
            if not free:
                last = self.book.last.get(node.name) or found[i][1]
                error = f"serving {', '.join(users)} (each of its {node.clients} rpc-server(s) serves one model at a time; node serve --clients for more)"
                found[i] = (node, msgspec.structs.replace(last, state="busy", error=error, **extra))
                return
            port = node.at(free[0])
            info = await anyio.to_thread.run_sync(self.book.probe, port)
            found[i] = (port, msgspec.structs.replace(info, **extra))

        async with anyio.create_task_group() as tg:
            for i, node in enumerate(todo):
                tg.start_soon(one, i, node)
        for _, info in found:
            if info.name in self.book.nodes:
                self.book.last[info.name] = info
        return found

    async def place(self, spec: ModelSpec, need: MemoryEstimate, refs: list[str]) -> Placement:
        """Probe the requested nodes and split ``need`` across them and this machine."""
        found = placement.place(spec, need, await self.probe_free([self.book.resolve(ref) for ref in refs]))
        if found.dropped:
            log.warning("%s: loading without %s", spec.name, ", ".join(found.dropped))
        return found

    def refuse(self, spec: ModelSpec, found: Placement, exc: InsufficientMemory) -> InsufficientMemory:
        return placement.refuse(spec, found, exc)

    async def add(self, name: str, address: str, memory_limit_bytes: int | None, clients: int) -> NodeInfo:
        node = self.book.add(name, address, memory_limit_bytes, clients)
        [(_, info)] = await self.probe_free([node])
        return info

    def remove(self, name: str) -> list[NodeInfo]:
        self.book.remove(name)
        return self.book.snapshot()
