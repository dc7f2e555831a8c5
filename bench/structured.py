"""Structured output on each engine, in one run: constrained (the 20-property nested
schema of bench/schemas.py) against unconstrained decode tokens/s on the same prompt;
the schema's compile time on first use and cached; and validity over the schema set
(bench/schemas.py) at temperature 0.7 with several seeds, checked with ``jsonschema``.

Prints one JSON object. Usage: .venv/bin/python bench/structured.py [--seeds 3] [--runs 2] [--engines mlx,llamacpp]
[--llama-server PATH] (e.g. a llama-server built with IMPETUS_LLAMA_LLGUIDANCE=0, for llama.cpp's own GBNF sampler)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import jsonschema  # noqa: E402
from daemon_harness import Daemon  # noqa: E402
from schemas import BIG, SCHEMAS  # noqa: E402

MODEL = "smollm2-135m"
ASK = [{"role": "user", "content": "Describe a product as JSON."}]


def compile_ms() -> dict[str, float]:
    """The daemon's validation and compile of BIG: first use, then from the cache."""
    import llguidance  # noqa: F401  # the import is not the compile

    from impetusd.toolkit.structured import _compiled, grammar_for
    from impetusd.protocol.api import JsonSchemaFormat

    _compiled.cache_clear()
    fmt = JsonSchemaFormat(schema=BIG)
    started = time.perf_counter()
    grammar_for(fmt)
    first = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    grammar_for(fmt)
    cached = (time.perf_counter() - started) * 1000
    return {"first_ms": round(first, 3), "cached_ms": round(cached, 4)}


def decode(d: Daemon, max_tokens: int, runs: int, fmt: dict[str, Any] | None) -> float:
    rates = []
    for _ in range(runs):
        params: dict[str, Any] = {"model": MODEL, "messages": ASK, "max_tokens": max_tokens, "temperature": 0}
        if fmt is not None:
            params["format"] = fmt
        result = d.call("chat", params)
        if result["timings"]["decode_tps"]:
            rates.append(result["timings"]["decode_tps"])
    return round(statistics.median(rates), 2) if rates else 0.0


def validity(d: Daemon, seeds: int, max_tokens: int) -> dict[str, Any]:
    valid = finished = total = 0
    failures: list[str] = []
    refused: list[str] = []
    for name, schema in SCHEMAS.items():
        for seed in range(seeds):
            total += 1
            params = {
                "model": MODEL,
                "messages": ASK,
                "max_tokens": max_tokens,
                "temperature": 0.7,
                "seed": seed,
                "format": {"type": "json_schema", "schema": schema},
            }
            try:
                result = d.call("chat", params)
            except RuntimeError as exc:  # refused by name: a schema feature this engine cannot enforce
                refused.append(f"{name}: {str(exc)[:200]}")
                total -= 1
                break
            if result["finish_reason"] != "stop":
                failures.append(f"{name}/{seed}: {result['finish_reason']}")
                continue
            finished += 1
            try:
                jsonschema.validate(json.loads(result["message"]["content"]), schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
                valid += 1
            except (ValueError, jsonschema.ValidationError) as exc:
                failures.append(f"{name}/{seed}: {str(exc)[:120]}")
    return {
        "schemas": len(SCHEMAS),
        "outputs": total,
        "finished": finished,
        "valid_of_finished": valid,
        "valid_fraction": round(valid / finished, 4) if finished else None,
        "not_finished_or_invalid": failures,
        "refused": refused,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--validity-max-tokens", type=int, default=96)
    ap.add_argument("--engines", default="mlx,llamacpp")
    ap.add_argument("--llama-server", help="this llama-server binary (IMPETUS_LLAMA_SERVER), e.g. one built without llguidance")
    args = ap.parse_args()
    out: dict[str, Any] = {"model": MODEL, "schema_compile": compile_ms(), "engines": {}}
    for engine in args.engines.split(","):
        daemon = Daemon()
        if args.llama_server:
            daemon.env["IMPETUS_LLAMA_SERVER"] = args.llama_server
        with daemon as d:
            loaded = d.call("models.load", {"model": MODEL, "backend": engine, "keep_alive": -1})
            d.call("chat", {"model": MODEL, "messages": ASK, "max_tokens": 2, "format": {"type": "json_schema", "schema": BIG}})  # warm: tokenizer, caches
            free = decode(d, args.max_tokens, args.runs, None)
            constrained = decode(d, args.max_tokens, args.runs, {"type": "json_schema", "schema": BIG})
            out["engines"][engine] = {
                "grammar_engine": loaded["model"]["engine"].get("grammar_engine", "llguidance"),
                "free_decode_tps": free,
                "constrained_decode_tps": constrained,
                "ratio": round(constrained / free, 3) if free else None,
                "validity": validity(d, args.seeds, args.validity_max_tokens),
            }
            print(json.dumps({engine: out["engines"][engine]}), file=sys.stderr, flush=True)  # kept if a later engine fails
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
