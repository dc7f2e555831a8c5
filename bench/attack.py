"""Attacks on a real daemon from outside, with a neighbour client measuring the cost.

Prints one JSON object: per attack, what the attacker got back, the daemon's RSS
before and at its peak (sampled every 10 ms), and a neighbour client's latency
(``daemon.health`` on its own connection, back to back) during the attack: p50,
p99 and max, against a baseline taken first.

Attacks:

- ``batch_1mb_of_ones``: one line ``[1,1,…]`` of 500,000 items (1 MB), ``--repeat`` times;
- ``batch_16mib_of_ones``: the worst line under the 16 MiB cap, 8.4 million items;
- ``batch_at_limit``: batches of ``max_batch_items`` valid ``daemon.health`` requests;
- ``pipelined_chats``: 200 streamed chats written at once on one connection (the
  connection is not read past ``max_requests_per_connection`` running);
- ``half_close``: clients that write a streamed chat and ``shutdown(SHUT_WR)``; each
  must still get every chunk and the answer.

Usage: .venv/bin/python bench/attack.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

from daemon_harness import Daemon


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class Neighbour:
    """Back-to-back ``daemon.health`` calls on one connection, timed."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(300)
        self.sock.connect(path)
        self.file = self.sock.makefile("rb")
        self.latencies: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def one(self) -> float:
        started = time.perf_counter()
        self.sock.sendall(b'{"jsonrpc":"2.0","id":1,"method":"daemon.health"}\n')
        self.file.readline()
        return time.perf_counter() - started

    def start(self) -> None:
        self.latencies = []
        self._stop.clear()

        def loop() -> None:
            while not self._stop.is_set():
                self.latencies.append(self.one())

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(300)
        lat = self.latencies or [0.0]
        return {
            "calls": len(self.latencies),
            "p50_ms": round(statistics.median(lat) * 1000, 2),
            "p99_ms": round(_pct(lat, 0.99) * 1000, 2),
            "max_ms": round(max(lat) * 1000, 2),
        }


class PeakRss:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.daemon.rss())
            except Exception:  # noqa: BLE001 - the daemon died; reported as such
                return
            time.sleep(0.01)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _connect(path: str) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(300)
    s.connect(path)
    return s


def _send_lines(path: str, line: bytes, times: int) -> dict[str, Any]:
    """Send ``line`` ``times`` times on one connection; read every answer."""
    with _connect(path) as s:
        f = s.makefile("rb")
        names: dict[str, int] = {}
        sizes = []
        for _ in range(times):
            s.sendall(line + b"\n")
            answer = f.readline()
            sizes.append(len(answer))
            msg = json.loads(answer)
            for item in msg if isinstance(msg, list) else [msg]:
                key = item["error"]["data"]["name"] if "error" in item else "result"
                names[key] = names.get(key, 0) + 1
        return {"answers": names, "largest_answer_bytes": max(sizes)}


def _chat_line(model: str, rid: int, words: int = 8) -> bytes:
    text = " ".join(f"w{i}" for i in range(words))
    params = {"model": model, "messages": [{"role": "user", "content": text}], "stream": True}
    return json.dumps({"jsonrpc": "2.0", "id": rid, "method": "chat", "params": params}).encode() + b"\n"


def _pipelined(path: str, model: str, n: int) -> dict[str, Any]:
    with _connect(path) as s:
        f = s.makefile("rb")
        writer = threading.Thread(target=lambda: s.sendall(b"".join(_chat_line(model, i) for i in range(n))))
        writer.start()
        answered = 0
        while answered < n:
            msg = json.loads(f.readline())
            answered += "id" in msg and "result" in msg
        writer.join()
        return {"answered": answered}


def _half_close(path: str, model: str, clients: int) -> dict[str, Any]:
    complete = 0
    chunks = 0
    for i in range(clients):
        with _connect(path) as s:
            s.sendall(_chat_line(model, i))
            s.shutdown(socket.SHUT_WR)
            data = b""
            while part := s.recv(65536):
                data += part
        msgs = [json.loads(line) for line in data.splitlines()]
        chunks += sum(m.get("method") == "chat.chunk" for m in msgs)
        complete += any(m.get("id") == i and "result" in m for m in msgs)
    return {"clients": clients, "answered": complete, "chunks": chunks}


def _measure(daemon: Daemon, neighbour: Neighbour, attack: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    before = daemon.rss()
    neighbour.start()
    started = time.monotonic()
    with PeakRss(daemon) as rss:
        result = attack()
    took = time.monotonic() - started
    lat = neighbour.stop()
    return {
        **result,
        "seconds": round(took, 2),
        "daemon_alive": daemon.alive(),
        "daemon_rss_mb": {
            "before": round(before / 1e6, 1),
            "peak": round(rss.peak / 1e6, 1),
            "after": round(daemon.rss() / 1e6, 1) if daemon.alive() else None,
        },
        "neighbour_latency": lat,
    }


def run(repeat: int = 5, half_close_clients: int = 20, pipelined: int = 200) -> dict[str, Any]:
    with Daemon() as daemon:
        path = str(daemon.socket)
        model = str(daemon.echo_model(0.001))
        daemon.call("models.load", {"model": model, "keep_alive": -1})
        limit = 1000
        neighbour = Neighbour(path)
        baseline = [neighbour.one() for _ in range(300)]
        health = b",".join([b'{"jsonrpc":"2.0","id":1,"method":"daemon.health"}'] * limit)
        attacks: dict[str, Callable[[], dict[str, Any]]] = {
            "batch_1mb_of_ones": lambda: _send_lines(path, b"[" + b"1," * 499_999 + b"1]", repeat),
            "batch_16mib_of_ones": lambda: _send_lines(path, b"[" + b"1," * (8 * 1024 * 1024 - 64) + b"1]", 1),
            "batch_at_limit": lambda: _send_lines(path, b"[" + health + b"]", repeat),
            "pipelined_chats": lambda: _pipelined(path, model, pipelined),
            "half_close": lambda: _half_close(path, model, half_close_clients),
        }
        results = {name: _measure(daemon, neighbour, attack) for name, attack in attacks.items()}
        log = daemon.log_text()
    return {
        "benchmark": "attack",
        "limits": {"max_batch_items": limit, "max_requests_per_connection": 64, "max_line_bytes": 16 * 1024 * 1024},
        "neighbour_baseline": {
            "p50_ms": round(statistics.median(baseline) * 1000, 2),
            "p99_ms": round(_pct(baseline, 0.99) * 1000, 2),
        },
        "attacks": results,
        "connection_failures_logged": log.count("a connection failed"),
        "memory_errors_logged": log.count("MemoryError"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="lines per batch attack")
    ap.add_argument("--half-close-clients", type=int, default=20)
    ap.add_argument("--pipelined", type=int, default=200, help="chats written at once on one connection")
    args = ap.parse_args()
    print(json.dumps(run(args.repeat, args.half_close_clients, args.pipelined), indent=2))


if __name__ == "__main__":
    main()
