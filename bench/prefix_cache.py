"""TTFT with a shared ~300-token system prompt: cold, warm, and warm after a daemon
restart (the disk tier), against mlx_lm.server cold and warm on the same weights.

Prints one JSON object. Usage: .venv/bin/python bench/prefix_cache.py [--max-tokens 4]
Each request shares the system prompt and asks a different short question, so
"warm" means the system prompt comes from cache and the question is prefilled.
--worker-blas off runs Impetus's workers without OpenBLAS (quantized weights, as
mlx_lm.server runs them here); the default is the daemon's default (auto).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from reference import ImpetusDaemon, ImpetusStreams, MlxServer

SYSTEM = " ".join(
    [
        "You are the assistant of the Harbour Street Bakery, a small family bakery in a seaside town.",
        "The bakery opens at seven in the morning and closes at six in the evening, every day except Monday.",
        "It sells sourdough, rye, spelt and white loaves, baguettes, croissants, cinnamon buns, scones and seasonal cakes.",
        "All bread is baked on the premises before dawn; flour comes from a mill twenty miles inland.",
        "Customers may order birthday and wedding cakes at least one week ahead, in person or by telephone.",
        "The bakery cannot guarantee that any product is free of nuts, sesame or gluten, and you must say so when asked about allergies.",
        "There is a small cafe with six tables, serving tea, coffee, hot chocolate and soup at lunchtime.",
        "Dogs are welcome on the terrace but not inside. Parking is on the harbour front, free after four o'clock.",
        "Answer briefly and warmly, in plain language, and never invent products, prices or opening hours that are not listed here.",
        "If a question has nothing to do with the bakery, say politely that you can only help with the bakery.",
        "When a customer complains, apologise, thank them for telling you, and offer to pass the message to the owner, Mrs Penrose.",
        "Do not discuss staff, suppliers or takings. Do not take orders yourself: explain how to order instead.",
        "Speak as one member of a friendly team, and end with a short wish for a good day when it fits the conversation.",
    ]
)
QUESTIONS = ["Do you sell rye?", "When do you open?", "Is there parking?", "Can I bring my dog?", "Do you make cakes?"]


def messages(i: int) -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": QUESTIONS[i]}]


def row(r: dict[str, Any]) -> dict[str, Any]:
    return {"ttft_ms": round((r["first"] - r["start"]) * 1000, 1), "cached_tokens": r["cached_tokens"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-tokens", type=int, default=4)
    ap.add_argument("--worker-blas", default="auto")
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="impbench-home-"))
    try:
        with ImpetusDaemon(home=home, config=f'worker_blas = "{args.worker_blas}"\n') as d:
            engine = d.call("models.loaded")["models"][0]["engine"]
            client = ImpetusStreams(d.sock)
            client.stream_chat([{"role": "user", "content": "Hi"}], 1)  # kernels warm, nothing of SYSTEM cached
            cold = row(client.stream_chat(messages(0), args.max_tokens))
            warm = row(client.stream_chat(messages(1), args.max_tokens))
        with ImpetusDaemon(home=home) as d:
            client = ImpetusStreams(d.sock)
            restarted = row(client.stream_chat(messages(2), args.max_tokens))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    with MlxServer() as server:
        server.stream_chat([{"role": "user", "content": "Hi"}], 1)
        ref_cold = row(server.stream_chat(messages(0), args.max_tokens))
        ref_warm = row(server.stream_chat(messages(1), args.max_tokens))
    print(
        json.dumps(
            {
                "benchmark": "prefix_cache",
                "model": "smollm2-135m",
                "system_prompt_words": len(SYSTEM.split()),
                "impetus_engine": {k: engine.get(k) for k in ("device", "weights", "prefill_chunk", "max_batch")},
                "impetus": {"cold": cold, "warm": warm, "warm_after_restart": restarted},
                "mlx_lm_server": {"cold": ref_cold, "warm": ref_warm},
                "impetus_warm_over_cold": round(warm["ttft_ms"] / cold["ttft_ms"], 4),
                "impetus_restart_over_cold": round(restarted["ttft_ms"] / cold["ttft_ms"], 4),
                "mlx_lm_server_warm_over_cold": round(ref_warm["ttft_ms"] / ref_cold["ttft_ms"], 4),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
