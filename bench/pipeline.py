"""The pipeline's own ceiling, with a backend that produces tokens instantly (the
tests' echo plugin, registered through the hooks): streamed tokens/s to one client
over the socket, and the ``daemon.health`` round trip (p50/p99, microseconds).

Prints one JSON object. Usage: .venv/bin/python bench/pipeline.py [--tokens 200000] [--calls 5000]
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import time

from daemon_harness import Daemon


def stream_rate(sock_path: str, model: str, tokens: int) -> dict:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(sock_path)
    f = conn.makefile("rb", buffering=1 << 20)
    params = {"model": model, "messages": [{"role": "user", "content": "t " * 1000}], "max_tokens": tokens, "stream": True}
    started = time.perf_counter()
    conn.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "chat", "params": params}).encode() + b"\n")
    chunks = 0
    first = None
    while True:
        line = f.readline()
        if line.startswith(b'{"jsonrpc":"2.0","method":"chat.chunk"'):
            chunks += 1
            if first is None:
                first = time.perf_counter()
            continue
        msg = json.loads(line)
        if msg.get("id") == 1:
            break
    end = time.perf_counter()
    conn.close()
    done = msg["result"]["usage"]["completion_tokens"]
    return {
        "tokens": done,
        "chunks": chunks,
        "seconds": round(end - started, 3),
        "tokens_per_s": round(done / (end - started)),
        "ttft_ms": round((first - started) * 1000, 2) if first else None,
    }


def health(sock_path: str, calls: int) -> dict:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.connect(sock_path)
    f = conn.makefile("rb")
    line = b'{"jsonrpc":"2.0","id":1,"method":"daemon.health"}\n'
    times = []
    for i in range(calls + 200):
        t = time.perf_counter()
        conn.sendall(line)
        f.readline()
        if i >= 200:  # the first ones warm caches and the allocator
            times.append((time.perf_counter() - t) * 1e6)
    conn.close()
    times.sort()
    return {"calls": calls, "p50_us": round(statistics.median(times), 1), "p99_us": round(times[int(len(times) * 0.99)], 1)}


def run(tokens: int, calls: int, runs: int) -> dict:
    with Daemon() as d:
        model = d.root / "flood.echo"
        model.write_text(f"repeat = {tokens // 1000 + 1}\n")  # 1,000 words a repeat
        sock = str(d.socket)
        stream_rate(sock, str(model), 1000)  # load the worker
        streams = [stream_rate(sock, str(model), tokens) for _ in range(runs)]
        rounds = health(sock, calls)
    return {
        "benchmark": "pipeline",
        "backend": "echo (instant tokens)",
        "stream": {"runs": streams, "median_tokens_per_s": statistics.median(r["tokens_per_s"] for r in streams)},
        "health_round_trip": rounds,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=200_000)
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    print(json.dumps(run(args.tokens, args.calls, args.runs), indent=2))


if __name__ == "__main__":
    main()
