"""Compute nodes: llama.cpp ``rpc-server`` processes (``impetusctl node serve``) a
model's layers can be split across (``llama-server --rpc``).

``NodeBook`` is the list the daemon may use, kept in ``<home>/nodes.json``; ``probe``
asks one node how it is: a timed TCP connect, then the RPC protocol's HELLO, device
count and memory query (the same messages llama-server sends first). An rpc-server
serves one client at a time, so a node serving a model accepts the connection but does
not answer: it is ``busy`` (its memory is the last one it reported). A node of
``clients`` > 1 is that many rpc-servers on consecutive ports (``node serve --clients``),
one model on each.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import time
from pathlib import Path

import msgspec

from impetusd.plugin_api import InvalidParams, NodeInfo

# ggml-rpc's commands (ggml/src/ggml-rpc/ggml-rpc.cpp, protocol 7.x)
RPC_CMD_GET_DEVICE_MEMORY = 11
RPC_CMD_HELLO = 14
RPC_CMD_DEVICE_COUNT = 15
HELLO_CAPS = 24  # bytes of transport capabilities in the HELLO request; zeros: plain TCP
PROTO_MAJOR = 7
CONNECT_TIMEOUT_S = 1.0
ANSWER_TIMEOUT_S = 0.5
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Node(msgspec.Struct, frozen=True):
    name: str
    host: str
    port: int
    memory_limit_bytes: int | None = None
    clients: int = 1  # rpc-servers on port..port+clients-1

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def addresses(self) -> list[str]:
        return [f"{self.host}:{p}" for p in range(self.port, self.port + self.clients)]

    def at(self, address: str) -> Node:
        """This node narrowed to the one port of ``address`` (one of ``addresses``)."""
        return msgspec.structs.replace(self, port=int(address.rpartition(":")[2]), clients=1)


def parse_address(address: str) -> tuple[str, int]:
    host, sep, port = address.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidParams(f"{address!r} is not a node address (host:port)", address=address)
    return host, int(port)


def _exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        got = sock.recv(n - len(data))
        if not got:
            raise ConnectionError("the node closed the connection")
        data += got
    return data


def _call(sock: socket.socket, cmd: int, payload: bytes, answer: int) -> bytes:
    sock.sendall(struct.pack("<BQ", cmd, len(payload)) + payload)
    (size,) = struct.unpack("<Q", _exact(sock, 8))
    if size != answer:
        raise ConnectionError(f"unexpected answer size {size} to command {cmd} (not an rpc-server of protocol {PROTO_MAJOR}.x?)")
    return _exact(sock, size)


def probe(node: Node, last: NodeInfo | None = None) -> NodeInfo:
    """How ``node`` is now (blocking, about 1.5 s at most)."""
    started = time.monotonic()
    base = NodeInfo(
        name=node.name, address=node.address, state="unknown", memory_limit_bytes=node.memory_limit_bytes, probed_at=time.time(), clients=node.clients
    )
    say = msgspec.structs.replace
    try:
        sock = socket.create_connection((node.host, node.port), timeout=CONNECT_TIMEOUT_S)
    except OSError as exc:
        return say(base, state="unreachable", error=f"connect: {exc}")
    connected = (time.monotonic() - started) * 1000
    with sock:
        sock.settimeout(ANSWER_TIMEOUT_S)
        try:
            hello = _call(sock, RPC_CMD_HELLO, bytes(HELLO_CAPS), 4 + HELLO_CAPS)
            if hello[0] != PROTO_MAJOR:
                return say(base, state="unreachable", error=f"rpc protocol {hello[0]}.{hello[1]}.{hello[2]}, llama-server speaks {PROTO_MAJOR}.x")
            (count,) = struct.unpack("<I", _call(sock, RPC_CMD_DEVICE_COUNT, b"", 4))
            free = total = 0
            for device in range(count):
                f, t = struct.unpack("<QQ", _call(sock, RPC_CMD_GET_DEVICE_MEMORY, struct.pack("<I", device), 16))
                free, total = free + f, total + t
        except TimeoutError:
            # connected, no answer: serving another client (or stopped); keep what it said last
            return say(
                base,
                state="busy",
                free_bytes=last.free_bytes if last else None,
                total_bytes=last.total_bytes if last else None,
                latency_ms=round(connected, 3),
                error=f"connected, no answer in {ANSWER_TIMEOUT_S:g} s (it serves one client at a time)",
            )
        except (OSError, struct.error) as exc:
            return say(base, state="unreachable", latency_ms=round(connected, 3), error=f"rpc: {exc}")
    return say(base, state="ready", free_bytes=free, total_bytes=total, latency_ms=round((time.monotonic() - started) * 1000, 3))


class NodeBook:
    """The nodes the daemon may use, by name, persisted as JSON (written atomically)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.nodes: dict[str, Node] = {}
        self.last: dict[str, NodeInfo] = {}
        if path.is_file():
            for node in msgspec.json.decode(path.read_bytes(), type=list[Node]):
                self.nodes[node.name] = node

    def _save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(msgspec.json.encode(sorted(self.nodes.values(), key=lambda n: n.name)))
        os.replace(tmp, self.path)

    def add(self, name: str, address: str, memory_limit_bytes: int | None = None, clients: int = 1) -> Node:
        if not NAME.match(name):
            raise InvalidParams(f"{name!r} is not a node name (letters, digits, '.', '_', '-'; up to 64)", name=name)
        if memory_limit_bytes is not None and memory_limit_bytes <= 0:
            raise InvalidParams("memory_limit_bytes must be positive", memory_limit_bytes=memory_limit_bytes)
        host, port = parse_address(address)
        if not 1 <= clients <= 16 or port + clients - 1 > 65535:
            raise InvalidParams(f"clients must be 1-16 with port+clients-1 a port (got {clients} from port {port})", clients=clients)
        node = Node(name=name, host=host, port=port, memory_limit_bytes=memory_limit_bytes, clients=clients)
        self.nodes[name] = node
        self.last.pop(name, None)
        self._save()
        return node

    def remove(self, name: str) -> Node:
        node = self.nodes.pop(name, None)
        if node is None:
            raise InvalidParams(f"no node named {name!r} (nodes: {', '.join(sorted(self.nodes)) or 'none'})", name=name)
        self.last.pop(name, None)
        self._save()
        return node

    def resolve(self, ref: str) -> Node:
        """A node by name, or an address used as is (named after itself)."""
        if ref in self.nodes:
            return self.nodes[ref]
        if ":" not in ref:
            raise InvalidParams(f"no node named {ref!r} (nodes: {', '.join(sorted(self.nodes)) or 'none'}; or give host:port)", name=ref)
        host, port = parse_address(ref)
        return Node(name=ref, host=host, port=port)

    def probe(self, node: Node) -> NodeInfo:
        info = probe(node, self.last.get(node.name))
        if node.name in self.nodes:
            self.last[node.name] = info
        return info

    def snapshot(self) -> list[NodeInfo]:
        """Each node as last probed (``unknown`` before the first probe)."""
        return [
            self.last.get(n.name) or NodeInfo(name=n.name, address=n.address, state="unknown", memory_limit_bytes=n.memory_limit_bytes, clients=n.clients)
            for n in self.nodes.values()
        ]
