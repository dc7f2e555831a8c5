"""Aggregate decode speed with 1, 2, 4 and 8 concurrent streams: impetusd vs mlx_lm.server.

Prints one JSON object. Usage: .venv/bin/python bench/concurrency.py [--streams 1,2,4,8] [--max-tokens 48]
Both serve the same weights (mlx_lm.server an mlx-lm copy made by bench/reference.py) and
get the same prompts, one per stream, distinct across levels so neither prompt cache helps.
Each level runs on Impetus, then on mlx_lm.server, with only one of them busy at a time.
--reference-setup plain (default): mlx_lm.server on the quantized copy, as users run it;
worker: float32 weights and OpenBLAS preloaded, as Impetus's workers run them here.
"""

from __future__ import annotations

import argparse
import json
import statistics
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from reference import ImpetusDaemon, ImpetusStreams, MlxServer

TOPICS = [
    "the sea",
    "a mountain",
    "a city at night",
    "a forest",
    "a desert",
    "a river",
    "winter",
    "a garden",
    "a storm",
    "a library",
    "a harbour",
    "a train",
    "a castle",
    "a market",
    "the moon",
    "an island",
]


def prompts(level: int, offset: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"Write a long story about {TOPICS[(offset + i) % len(TOPICS)]}, number {offset + i}."}] for i in range(level)]


def run_level(client: Any, level: int, offset: int, max_tokens: int) -> dict[str, Any]:
    with ThreadPoolExecutor(level) as pool:
        rows = list(pool.map(lambda m: client.stream_chat(m, max_tokens), prompts(level, offset)))
    start = min(r["start"] for r in rows)
    end = max(r["end"] for r in rows)
    tokens = sum(r["tokens"] for r in rows)
    # Decode phase: from the last stream's first token to the first stream's end, when all are decoding.
    decode = [(r["tokens"] - 1) / (r["end"] - r["first"]) for r in rows if r["first"] and r["tokens"] > 1 and r["end"] > r["first"]]
    out = {
        "streams": level,
        "tokens": tokens,
        "wall_s": round(end - start, 3),
        "aggregate_tps": round(tokens / (end - start), 2),
        "aggregate_decode_tps": round(sum(decode), 2),
        "ttft_ms_median": round(statistics.median((r["first"] - r["start"]) * 1000 for r in rows if r["first"]), 1),
    }
    if "batch_size" in rows[0]:
        out["batch_size_max"] = max(r.get("batch_size") or 0 for r in rows)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", default="1,2,4,8")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--reference-setup", choices=["plain", "worker"], default="plain")
    args = ap.parse_args()
    levels = [int(x) for x in args.streams.split(",")]
    results: dict[str, list[dict[str, Any]]] = {"impetus": [], "mlx_lm_server": []}
    with ImpetusDaemon() as daemon, MlxServer(worker_setup=args.reference_setup == "worker") as server:
        daemon_engine = daemon.call("models.loaded")["models"][0]["engine"]
        clients = {"impetus": ImpetusStreams(daemon.sock), "mlx_lm_server": server}
        for name, client in clients.items():  # warm-up: one short request each
            client.stream_chat([{"role": "user", "content": "Hi"}], 2)
        offset = 0
        for level in levels:
            for name, client in clients.items():
                results[name].append(run_level(client, level, offset, args.max_tokens))
            offset += level
    ratios = {
        str(i["streams"]): {
            "aggregate_tps": round(i["aggregate_tps"] / m["aggregate_tps"], 3),
            "aggregate_decode_tps": round(i["aggregate_decode_tps"] / m["aggregate_decode_tps"], 3) if m["aggregate_decode_tps"] else None,
        }
        for i, m in zip(results["impetus"], results["mlx_lm_server"])
    }
    engine = daemon_engine
    print(
        json.dumps(
            {
                "benchmark": "concurrency",
                "model": "smollm2-135m",
                "max_tokens": args.max_tokens,
                "impetus_engine": engine,
                "reference_setup": args.reference_setup,
                **results,
                "ratio_impetus_over_mlx_lm_server": ratios,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
