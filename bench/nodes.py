"""The cost of splitting a model across compute nodes: tok/s and TTFT with 0 (this machine
only), 1, 2 and 3 rpc-server nodes on loopback.

Prints one JSON object. Usage:
.venv/bin/python bench/nodes.py [--runs 3] [--max-tokens 32] [--nodes 0,1,2,3]

The bundled SmolLM2-135M (GGUF) is loaded by a daemon on the llama.cpp backend, once per
node count, with ``models.load {nodes}`` naming that many rpc-server processes started
here on 127.0.0.1 (the ones scripts/setup installs next to llama-server, or
``IMPETUS_RPC_SERVER``; llama-server from ``IMPETUS_LLAMA_SERVER`` or setup's). Each run
is a greedy ``chat`` whose prompt differs at the start (no prefix-cache hits), timed by
the daemon (TTFT, decode tok/s) and at the client (wall time). On loopback the nodes share
this machine's cores, so the figures show the protocol's cost per layer hop, not a gain.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon_harness import Daemon  # noqa: E402

from impetus_llamacpp.nodes import Node, probe  # noqa: E402

MODEL = "smollm2-135m"
LIBEXEC = Path(sys.prefix) / "libexec" / "impetus"
PROMPT = "Write three sentences about a lighthouse keeper and the harbour he watches at dusk."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_nodes(binary: str, n: int) -> list[tuple[str, subprocess.Popen[bytes]]]:
    nodes = []
    for _ in range(n):
        port = free_port()
        proc = subprocess.Popen([binary, "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while probe(Node("n", "127.0.0.1", port)).state != "ready":
            if time.monotonic() > deadline:
                raise RuntimeError(f"rpc-server on {port} did not answer")
            time.sleep(0.1)
        nodes.append((f"127.0.0.1:{port}", proc))
    return nodes


def one(d: Daemon, run: int, max_tokens: int) -> dict[str, float]:
    started = time.monotonic()
    messages = [{"role": "system", "content": f"Session {run}."}, {"role": "user", "content": PROMPT}]
    result = d.call("chat", {"model": MODEL, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0})
    t = result["timings"]
    return {
        "ttft_ms": t["ttft_ms"] or 0.0,
        "decode_tps": t["decode_tps"] or 0.0,
        "prefill_tps": t["prefill_tps"] or 0.0,
        "wall_ms": (time.monotonic() - started) * 1000,
        "completion_tokens": result["usage"]["completion_tokens"],
    }


def run(runs: int, max_tokens: int, counts: list[int]) -> dict[str, Any]:
    llama = os.environ.get("IMPETUS_LLAMA_SERVER") or str(LIBEXEC / "llama-server")
    rpc = os.environ.get("IMPETUS_RPC_SERVER") or str(Path(llama).parent / "rpc-server")
    out: dict[str, Any] = {"model": MODEL, "runs": runs, "max_tokens": max_tokens, "llama_server": llama, "rpc_server": rpc, "results": {}}
    with Daemon(config=f'llama_server = "{llama}"\n') as d:
        for n in counts:
            nodes = start_nodes(rpc, n)
            try:
                loaded = d.call("models.load", {"model": MODEL, "keep_alive": -1, "nodes": [a for a, _ in nodes]})["model"]
                one(d, -1, 4)  # warm
                rows = [one(d, r, max_tokens) for r in range(runs)]
                out["results"][str(n)] = {
                    "nodes": [s["name"] for s in loaded["nodes"]],
                    "load_ms": round(loaded["load_ms"], 1),
                    **{k: round(statistics.median(r[k] for r in rows), 2) for k in rows[0]},
                }
                d.call("models.unload", {"model": MODEL})
            finally:
                for _, proc in nodes:
                    proc.kill()
                    proc.wait()
    base = out["results"].get("0")
    if base:
        for n, row in out["results"].items():
            row["decode_vs_local"] = round(row["decode_tps"] / base["decode_tps"], 3) if base["decode_tps"] else None
            if n != "0" and base["decode_tps"] and row["decode_tps"]:
                row["ms_per_token_added"] = round(1000 / row["decode_tps"] - 1000 / base["decode_tps"], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--nodes", default="0,1,2,3", help="node counts to measure, comma-separated")
    args = ap.parse_args()
    print(json.dumps(run(args.runs, args.max_tokens, [int(n) for n in args.nodes.split(",")]), indent=2))


if __name__ == "__main__":
    main()
