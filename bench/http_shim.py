"""What the OpenAI-compatible shim costs: the same requests through HTTP (official
``openai`` client) and straight on the daemon's socket, interleaved in one run.

Prints one JSON object. Usage: .venv/bin/python bench/http_shim.py [--runs 3] [--max-tokens 32] [--calls 200]
- streamed chat on the bundled model: client-side TTFT and tokens/s seen by the client;
- a cheap call (list models) repeated: per-request latency p50/p99, the shim's fixed cost.
Compare the ratios; these machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import openai

from impetusctl.client import Client

MODEL = "smollm2-135m"
PROMPT = [{"role": "user", "content": "Write a short poem about the sea."}]


def start(root: Path) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], Path, str]:
    sock = root / "d.sock"
    env = {**os.environ, "IMPETUS_HOME": str(root / "home"), "IMPETUS_SOCKET": str(sock), "IMPETUS_LOG_LEVEL": "WARNING"}
    daemon = subprocess.Popen([sys.executable, "-m", "impetusd"], env=env)
    deadline = time.monotonic() + 30
    while True:
        try:
            Client(sock).close()
            break
        except ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    shim = subprocess.Popen([sys.executable, "-m", "impetusctl", "--json", "--no-autostart", "http", "--port", "0"], env=env, stdout=subprocess.PIPE)
    assert shim.stdout is not None
    url = json.loads(shim.stdout.readline())["url"]
    time.sleep(0.5)  # uvicorn starts accepting right after printing
    return daemon, shim, sock, url


def socket_stream(sock: Path, max_tokens: int) -> dict[str, float]:
    with Client(sock) as client:
        started = time.monotonic()
        stamps: list[float] = []
        client.stream(
            "chat",
            {"model": MODEL, "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0, "stream": True},
            lambda m, r: stamps.append(time.monotonic()),
        )
    return row(started, stamps)


def http_stream(api: openai.OpenAI, max_tokens: int) -> dict[str, float]:
    started = time.monotonic()
    stamps: list[float] = []
    for chunk in api.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=max_tokens, temperature=0, stream=True):  # type: ignore[arg-type]
        if chunk.choices and chunk.choices[0].delta.content:
            stamps.append(time.monotonic())
    return row(started, stamps)


def row(started: float, stamps: list[float]) -> dict[str, float]:
    decode_s = stamps[-1] - stamps[0]
    return {"ttft_ms": (stamps[0] - started) * 1000, "client_tps": (len(stamps) - 1) / decode_s if decode_s > 0 else 0.0, "pieces": len(stamps)}


def latencies(call: Any, n: int) -> dict[str, float]:
    took = []
    for _ in range(n):
        t = time.perf_counter()
        call()
        took.append((time.perf_counter() - t) * 1000)
    took.sort()
    return {"p50_ms": round(took[len(took) // 2], 3), "p99_ms": round(took[min(len(took) - 1, int(len(took) * 0.99))], 3)}


def summary(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in rows), 2) for k in ("ttft_ms", "client_tps", "pieces")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--calls", type=int, default=200)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="impshim"))
    daemon, shim, sock, url = start(root)
    try:
        api = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=300)
        with Client(sock) as c:
            c.call("models.load", {"model": MODEL, "keep_alive": -1, "backend": "mlx"})
        http_rows, sock_rows = [], []
        for _ in range(args.runs):  # interleaved, so drift hits both alike
            http_rows.append(http_stream(api, args.max_tokens))
            sock_rows.append(socket_stream(sock, args.max_tokens))
        h, s = summary(http_rows), summary(sock_rows)
        with Client(sock) as c:
            direct = latencies(lambda: c.call("models.list"), args.calls)
        over_http = latencies(lambda: api.models.list(), args.calls)
        print(
            json.dumps(
                {
                    "model": MODEL,
                    "max_tokens": args.max_tokens,
                    "runs": args.runs,
                    "http_stream": h,
                    "socket_stream": s,
                    "ratio_client_tps_http_vs_socket": round(h["client_tps"] / s["client_tps"], 3) if s["client_tps"] else None,
                    "ratio_ttft_http_vs_socket": round(h["ttft_ms"] / s["ttft_ms"], 3) if s["ttft_ms"] else None,
                    "list_models_calls": args.calls,
                    "list_models_socket": direct,
                    "list_models_http": over_http,
                },
                indent=2,
            )
        )
    finally:
        shim.terminate()
        shim.wait(30)
        daemon.terminate()
        daemon.wait(30)


if __name__ == "__main__":
    main()
