"""The ``nodes.*`` methods' params and results (``NodeInfo``, one node as probed, is the
daemon's: ``daemon.health`` carries it too)."""

from __future__ import annotations

import msgspec

from impetusd.plugin_api import NodeInfo


class NodeList(msgspec.Struct, frozen=True):
    nodes: list[NodeInfo]


class NodeAddParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    address: str  # host:port of an rpc-server (impetusctl node serve)
    memory_limit_bytes: int | None = None
    clients: int = 1  # its rpc-servers listen on port..port+clients-1 (node serve --clients)


class NodeRemoveParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
