"""Soak: many requests through one daemon and one worker; does memory grow?

Prints one JSON object with the RSS of the daemon and of the model's worker
after a warm-up and after the run (and at every tenth of it), and the growth.
Every 10th request is cancelled mid-stream and every 25th client disconnects
mid-stream (then reconnects): the paths where leaks like to hide.

Usage: .venv/bin/python bench/soak.py [--requests 1000] [--model smollm2-135m --max-tokens 4]

Without ``--model`` it uses the echo test backend (tests/plugins/impetus_echo.py),
which measures the daemon and worker machinery rather than an engine.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from daemon_harness import Daemon, ValidClient


def _mb(n: int) -> float:
    return round(n / 1e6, 1)


def _stream_then(client: ValidClient, params: dict[str, Any], cancel: bool) -> None:
    """Start a streamed chat, wait for its first chunk, then cancel it (or drop the connection)."""
    client.next_id += 1
    rid = client.next_id
    client.sock.sendall(json.dumps({"jsonrpc": "2.0", "id": rid, "method": "chat", "params": params}).encode() + b"\n")
    while True:
        msg = json.loads(client.file.readline())
        if msg.get("method") == "chat.chunk" or msg.get("id") == rid:
            break
    if not cancel:
        return
    client.sock.sendall(json.dumps({"jsonrpc": "2.0", "method": "$/cancel", "params": {"id": rid}}).encode() + b"\n")
    while json.loads(client.file.readline()).get("id") != rid:
        pass


def run(requests: int = 1000, model: str | None = None, max_tokens: int = 4, token_s: float = 0.001) -> dict[str, Any]:
    with Daemon() as daemon:
        target = model or str(daemon.echo_model(token_s))
        client = ValidClient(daemon.socket, target, words=24, max_tokens=max_tokens if model else None)
        client.warm_up()
        for _ in range(20):  # warm-up: let caches, arenas and the first-request paths settle
            client.request()
        worker = client.call("models.loaded", {})["models"][0]["pid"]
        start = {"daemon": daemon.rss(), "worker": daemon.rss(worker)}
        samples = []
        params = {"model": target, "messages": [{"role": "user", "content": client.text}], "stream": True}
        if model:
            params["max_tokens"] = max(max_tokens, 8)
        started = time.monotonic()
        cancelled = dropped = 0
        for i in range(1, requests + 1):
            if i % 25 == 0:
                _stream_then(client, params, cancel=False)
                client.close()  # disconnect mid-stream
                client = ValidClient(daemon.socket, target, words=24, max_tokens=client.max_tokens)
                dropped += 1
            elif i % 10 == 0:
                _stream_then(client, params, cancel=True)
                cancelled += 1
            else:
                client.request()
            if i % max(1, requests // 10) == 0:
                samples.append({"requests": i, "daemon_mb": _mb(daemon.rss()), "worker_mb": _mb(daemon.rss(worker))})
        elapsed = time.monotonic() - started
        same_worker = client.call("models.loaded", {})["models"][0]["pid"] == worker
        end = {"daemon": daemon.rss(), "worker": daemon.rss(worker)}
        deadline = time.monotonic() + 5  # the last disconnect may still be being noticed
        while (in_flight := client.call("daemon.health", {})["in_flight"]) and time.monotonic() < deadline:
            time.sleep(0.05)
        client.close()
    return {
        "benchmark": "soak",
        "backend": "mlx" if model else "echo",
        "model": model or "echo",
        "requests": requests,
        "cancelled_mid_stream": cancelled,
        "disconnected_mid_stream": dropped,
        "seconds": round(elapsed, 1),
        "requests_per_s": round(requests / elapsed, 1),
        "same_worker_throughout": same_worker,
        "in_flight_at_end": in_flight,
        "daemon_rss_mb": {"start": _mb(start["daemon"]), "end": _mb(end["daemon"]), "growth": _mb(end["daemon"] - start["daemon"])},
        "worker_rss_mb": {"start": _mb(start["worker"]), "end": _mb(end["worker"]), "growth": _mb(end["worker"] - start["worker"])},
        "samples": samples,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--model", help="e.g. smollm2-135m (default: the echo test backend)")
    ap.add_argument("--max-tokens", type=int, default=4, help="answer length with --model")
    ap.add_argument("--token-ms", type=float, default=1.0, help="the echo engine's pause between words (so cancels land mid-stream)")
    args = ap.parse_args()
    print(json.dumps(run(args.requests, args.model, args.max_tokens, args.token_ms / 1000), indent=2))


if __name__ == "__main__":
    main()
