"""Where a model split across compute nodes goes: how many of its layers the nodes take
(llama-server ``--n-gpu-layers``; llama.cpp spreads those over the RPC devices in
proportion to their free memory) and what stays on this machine.

The estimate's weights and KV cache are reckoned per layer (``block_count``); each node
takes at most the smaller of its free memory and its ``memory_limit_bytes``, less what
the models already split across it hold there. The
nodes take as many layers as they hold; the rest, and the runtime overhead, stay local.
"""

from __future__ import annotations

import msgspec

from impetusd.plugin_api import InsufficientMemory, MemoryEstimate, ModelSpec, NodeInfo, NodeShare, Placement

from .nodes import Node
from .rpc import LAYERS_ENV, NODES_ENV


def _room(node: Node, info: NodeInfo) -> int:
    """Its free memory or its cap, less what loaded models already hold there."""
    free = info.free_bytes or 0
    offered = min(free, node.memory_limit_bytes) if node.memory_limit_bytes is not None else free
    return max(0, offered - info.held_bytes)


def place(spec: ModelSpec, need: MemoryEstimate, nodes: list[tuple[Node, NodeInfo]]) -> Placement:
    """Split ``need`` across the reachable ``nodes`` and this machine."""
    usable = [(n, i) for n, i in nodes if i.state == "ready" and _room(n, i) > 0]
    dropped = [f"{n.name} ({i.state}: {i.error or 'no free memory reported'})" for n, i in nodes if (n, i) not in usable]
    total_layers = int(spec.metadata.get("block_count") or 0) or 1
    per_layer = (need.weights_bytes + need.kv_cache_bytes) / total_layers
    room = sum(_room(n, i) for n, i in usable)
    layers = min(total_layers, int(room // per_layer)) if usable and per_layer > 0 else 0
    if usable and layers == 0:
        parts = ", ".join(f"{n.name} {_room(n, i)} B" for n, i in usable)
        raise InsufficientMemory(
            f"{spec.name}: one layer needs {per_layer:.0f} B; the nodes have room for none ({parts})",
            model=spec.name,
            needed_bytes=int(per_layer),
            parts={n.name: _room(n, i) for n, i in usable},
        )
    on_nodes = int(per_layer * layers)
    local_bytes = need.total_bytes - on_nodes
    local = msgspec.structs.replace(
        need,
        total_bytes=local_bytes,
        weights_bytes=need.weights_bytes - int(need.weights_bytes * layers / total_layers),
        kv_cache_bytes=need.kv_cache_bytes - int(need.kv_cache_bytes * layers / total_layers),
    )
    shares = [NodeShare(name="local", address=None, bytes=local_bytes)]
    if usable:
        rooms = [_room(n, i) for n, i in usable]
        shares += [NodeShare(name=n.name, address=n.address, bytes=int(on_nodes * r / sum(rooms))) for (n, _), r in zip(usable, rooms, strict=True)]
    addresses = [n.address for n, _ in usable]
    env = {NODES_ENV: ",".join(addresses)} if addresses else {}
    if addresses:  # llama-server's --n-gpu-layers: all of them as 999
        env[LAYERS_ENV] = str(layers if layers < total_layers else 999)
    return Placement(addresses=addresses, layers=layers, total_layers=total_layers, local=local, shares=shares, dropped=dropped, env=env)


def refuse(spec: ModelSpec, placement: Placement, exc: InsufficientMemory) -> InsufficientMemory:
    """The local part does not fit either: say what each part needed and had."""
    parts = "; ".join(f"{s.name} {s.bytes} B" for s in placement.shares)
    dropped = f"; left out: {', '.join(placement.dropped)}" if placement.dropped else ""
    return InsufficientMemory(
        f"{spec.name} does not fit: {placement.layers}/{placement.total_layers} layers fit on the nodes, "
        f"the rest does not fit here ({exc.message}); parts: {parts}{dropped}",
        model=spec.name,
        parts={s.name: s.bytes for s in placement.shares},
        dropped=placement.dropped,
        **{k: v for k, v in exc.fields.items() if k not in ("model", "parts", "dropped")},
    )
