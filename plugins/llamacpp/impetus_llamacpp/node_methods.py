"""``nodes.list``, ``nodes.add``, ``nodes.remove`` (``impetus_register_methods``): the compute
nodes the daemon may split this backend's models across, as its placement keeps them
(placer.py; the daemon's one for this backend: ``services.placement(NAME)``)."""

from __future__ import annotations

from typing import Any

from impetusd.plugin_api import Empty, MethodSpec, NodeInfo

from .node_api import NodeAddParams, NodeList, NodeRemoveParams
from .placer import RpcNodes

NAME = "llamacpp"  # the backend whose placement these methods manage


def _nodes(services: Any) -> RpcNodes:
    found = services.placement(NAME)
    assert isinstance(found, RpcNodes)
    return found


async def nodes_list(services: Any, params: Empty, ctx: Any) -> NodeList:
    return NodeList(nodes=await _nodes(services).probe())


async def nodes_add(services: Any, params: NodeAddParams, ctx: Any) -> NodeInfo:
    return await _nodes(services).add(params.name, params.address, params.memory_limit_bytes, params.clients)


def nodes_remove(services: Any, params: NodeRemoveParams, ctx: Any) -> NodeList:
    return NodeList(nodes=_nodes(services).remove(params.name))


METHODS = (
    MethodSpec("nodes.list", Empty, NodeList, nodes_list, "Compute nodes (rpc-server) the daemon may split models across, each probed now."),
    MethodSpec("nodes.add", NodeAddParams, NodeInfo, nodes_add, "Add (or replace) a compute node by name and host:port; kept across restarts."),
    MethodSpec("nodes.remove", NodeRemoveParams, NodeList, nodes_remove, "Forget a compute node (models loaded on it keep running)."),
)
