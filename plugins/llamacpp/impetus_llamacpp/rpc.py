"""Compute nodes for llama-server (``--rpc``): the daemon names them in the worker's
environment (``IMPETUS_LLAMA_RPC``: host:port,...; ``IMPETUS_LLAMA_RPC_LAYERS``: how
many layers they take), and a request that loses one fails with ``NodeLost``.

What llama-server does when a node goes (measured, docs/design.md, Toward many hosts):
its RPC client aborts the process when a node's connection breaks, so the worker sees
its child die; a node that stops answering leaves llama-server waiting forever, so a
stream with nodes has a read deadline (``IMPETUS_LLAMA_RPC_STALL_S``) after which the
server is killed. Either way the nodes are probed (a TCP connect) to say which one went.
"""

from __future__ import annotations

import os
import socket

from impetusd.plugin_api import InvalidModelFile, NoBackend, NodeLost

NODES_ENV = "IMPETUS_LLAMA_RPC"
LAYERS_ENV = "IMPETUS_LLAMA_RPC_LAYERS"
STALL_ENV = "IMPETUS_LLAMA_RPC_STALL_S"
STALL_S = 3.0  # no stream data for this long, with nodes: a node stalled (NodeLost within 5 s in all)
CONNECT_S = 0.5


def nodes() -> list[str]:
    return [n for n in os.environ.get(NODES_ENV, "").split(",") if n]


def stall_s() -> float:
    return float(os.environ.get(STALL_ENV) or STALL_S)


def server_args() -> list[str]:
    """``--rpc`` and the layers to offload, when the daemon split the model across nodes."""
    found = nodes()
    if not found:
        return []
    return ["--rpc", ",".join(found), "--n-gpu-layers", os.environ.get(LAYERS_ENV) or "999", "--fit", "off"]


def refusal(exc: InvalidModelFile, binary: str) -> Exception:
    """A llama-server built without RPC lists ``--rpc`` in its help but exits on it
    ("RPC not supported in this build"): that is ``NoBackend``, not a bad model file."""
    if nodes() and "RPC not supported" in exc.message:
        return NoBackend(
            f"llama-server {binary} was built without RPC (GGML_RPC), so it cannot use compute nodes; run scripts/setup (it builds with RPC)",
            backend="llamacpp",
        )
    return exc


def gone(addresses: list[str]) -> dict[str, str]:
    """The nodes that refuse a TCP connection now, and why."""
    lost = {}
    for address in addresses:
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_S).close()
        except OSError as exc:
            lost[address] = str(exc) or type(exc).__name__
    return lost


def node_lost(addresses: list[str], what: str) -> NodeLost:
    """``NodeLost`` naming the node(s) that went (all of them when none refuses a connection: a stall)."""
    lost = gone(addresses)
    if lost:
        names = ", ".join(lost)
        detail = "; ".join(f"{a}: {why}" for a, why in lost.items())
        return NodeLost(f"compute node {names} was lost during the request ({what}; {detail})", node=names, what=f"{what}; {detail}")
    names = ", ".join(addresses)
    return NodeLost(f"a compute node stopped answering during the request ({what}; nodes in use: {names})", node=names, what=what)
