"""The cost of splitting an MLX model across processes on this machine (``models.load``
``ranks``, mlx.distributed's ring backend over loopback): tok/s and TTFT with 1 and 3 ranks.

Prints one JSON object. Usage:
.venv/bin/python bench/mlx_ranks.py [--runs 3] [--max-tokens 32] [--ranks 1,3]

The bundled SmolLM2-135M (9 query, 3 KV heads: 1, 3 or 9 ranks) is loaded by a daemon on
the MLX backend once per rank count; each run is a greedy ``chat`` whose prompt differs
at the start, timed by the daemon (TTFT, decode tok/s) and at the client. The ranks share
this machine's cores and every layer ends in a collective over TCP, so on a small CPU
the figures show the cost of the split, not a gain; the split is for memory (a model
larger than one process may hold) and for hosts with more cores or memory channels.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon_harness import Daemon  # noqa: E402
from nodes import MODEL, one  # noqa: E402


def run(runs: int, max_tokens: int, counts: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {"model": MODEL, "backend": "mlx", "runs": runs, "max_tokens": max_tokens, "results": {}}
    with Daemon() as d:
        for n in counts:
            loaded = d.call("models.load", {"model": MODEL, "backend": "mlx", "keep_alive": -1, "ranks": n})["model"]
            one(d, -1, 4)  # warm
            rows = [one(d, r, max_tokens) for r in range(runs)]
            out["results"][str(n)] = {
                "load_ms": round(loaded["load_ms"], 1),
                "rss_bytes": d.call("models.loaded")["models"][0]["rss_bytes"],
                "weights": loaded["engine"].get("weights"),
                **{k: round(statistics.median(r[k] for r in rows), 2) for k in rows[0]},
            }
            d.call("models.unload", {"model": MODEL})
    base = out["results"].get("1")
    if base and base["decode_tps"]:
        for row in out["results"].values():
            row["decode_vs_one"] = round(row["decode_tps"] / base["decode_tps"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--ranks", default="1,3", help="rank counts to measure, comma-separated")
    args = ap.parse_args()
    print(json.dumps(run(args.runs, args.max_tokens, [int(n) for n in args.ranks.split(",")]), indent=2))


if __name__ == "__main__":
    main()
