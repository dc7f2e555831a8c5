"""The same streamed chat through the shim's three chat APIs, with each API's
official client, interleaved in one run: Ollama's ``/api/chat`` (``ollama``),
Anthropic's ``/v1/messages`` (``anthropic``) and OpenAI's ``/v1/chat/completions``
(``openai``). Client-side TTFT and tokens/s (text pieces after the first, over
the time from the first to the last).

Prints one JSON object. Usage: .venv/bin/python bench/apis.py [--runs 3] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import ollama
import openai
from http_shim import MODEL, PROMPT, row, start, summary

from impetusctl.client import Client


def timed(request: Callable[[], Iterator[str]]) -> dict[str, float]:
    """The clock starts before the request is sent (each client sends at a different point)."""
    started = time.monotonic()
    stamps = [time.monotonic() for piece in request() if piece]
    return row(started, stamps)


def clients(base: str, max_tokens: int) -> dict[str, Callable[[], dict[str, float]]]:
    ol = ollama.Client(host=base, timeout=300)
    an = anthropic.Anthropic(base_url=base, api_key="unused", max_retries=0, timeout=300)
    oa = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=300)

    def via_ollama() -> dict[str, float]:
        def pieces() -> Iterator[str]:
            parts = ol.chat(model=MODEL, messages=PROMPT, options={"num_predict": max_tokens, "temperature": 0}, stream=True)
            return (p.message.content or "" for p in parts)

        return timed(pieces)

    def via_anthropic() -> dict[str, float]:
        def pieces() -> Iterator[str]:
            with an.messages.stream(model=MODEL, max_tokens=max_tokens, messages=PROMPT, extra_body={"temperature": 0}) as s:  # type: ignore[arg-type]
                yield from s.text_stream

        return timed(pieces)

    def via_openai() -> dict[str, float]:
        def pieces() -> Iterator[str]:
            chunks = oa.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=max_tokens, temperature=0, stream=True)  # type: ignore[arg-type]
            return ((c.choices[0].delta.content or "") if c.choices else "" for c in chunks)

        return timed(pieces)

    return {"ollama_api_chat": via_ollama, "anthropic_v1_messages": via_anthropic, "openai_v1_chat_completions": via_openai}


def run(runs: int, max_tokens: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="impapis"))
    daemon, shim, sock, url = start(root)
    try:
        with Client(sock) as c:
            c.call("models.load", {"model": MODEL, "keep_alive": -1, "backend": "mlx"})
        paths = clients(url.removesuffix("/v1"), max_tokens)
        rows: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
        for name, call in paths.items():  # warm each path once (prompt cache, connections)
            call()
        for _ in range(runs):  # interleaved, so drift hits all alike
            for name, call in paths.items():
                rows[name].append(call())
        return {"model": MODEL, "max_tokens": max_tokens, "runs": runs, **{name: summary(r) for name, r in rows.items()}}
    finally:
        shim.terminate()
        shim.wait(30)
        daemon.terminate()
        daemon.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()
    print(json.dumps(run(args.runs, args.max_tokens), indent=2))


if __name__ == "__main__":
    main()
