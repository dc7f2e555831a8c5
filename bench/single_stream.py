"""Single-stream decode speed and TTFT: through impetusd vs in-process mlx-lm, same weights.

Prints one JSON object. Usage: .venv/bin/python bench/single_stream.py [--runs 3] [--max-tokens 32]
The daemon runs on a temporary socket; the reference is mlx-lm's stream_generate in a
fresh process on the model built by the same GGUF loader, twice: set up as the daemon's
worker is (OpenBLAS preloaded and float32 weights when the worker does that: the same
weights, so the ratio is the daemon's own cost), and plain (the quantized GGUF weights,
as a user running mlx-lm gets them). Compare the ratios, not the absolutes: these
machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from impetusd.store.catalog import CATALOG
from impetusctl.client import Client

PROMPT = [{"role": "user", "content": "Write a short poem about the sea."}]


def through_daemon(runs: int, max_tokens: int) -> dict:
    root = Path(tempfile.mkdtemp(prefix="impbench"))
    sock = root / "d.sock"
    (root / "home").mkdir()
    # The same prompt every run: without this the prompt cache would serve runs 2+.
    (root / "home" / "config.toml").write_text("prompt_cache_memory_bytes = 0\nprompt_cache_disk_bytes = 0\n")
    proc = subprocess.Popen([sys.executable, "-m", "impetusd", "--socket", str(sock), "--home", str(root / "home"), "--log-level", "WARNING"])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                client = Client(sock)
                break
            except ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with client:
            load = client.call("models.load", {"model": "smollm2-135m", "keep_alive": -1, "backend": "mlx"})
            rows = []
            for _ in range(runs):
                started = time.monotonic()
                first: list[float] = []

                def on_note(method: str, raw: object) -> None:
                    if not first:
                        first.append(time.monotonic())

                res = client.stream("chat", {"model": "smollm2-135m", "messages": PROMPT, "max_tokens": max_tokens, "stream": True, "temperature": 0}, on_note)
                rows.append(
                    {
                        "client_ttft_ms": (first[0] - started) * 1000,
                        "decode_tps": res["timings"]["decode_tps"],
                        "prefill_tps": res["timings"]["prefill_tps"],
                        "tokens": res["usage"]["completion_tokens"],
                    }
                )
        return {"load_ms": load["model"]["load_ms"], "runs": rows}
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(root, ignore_errors=True)


def in_process(runs: int, max_tokens: int, widen: bool) -> dict:
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler
    from mlx_lm.tokenizer_utils import TokenizerWrapper

    from impetus_mlx import gguf_model
    from impetus_mlx.tokenizer import build_tokenizer, eos_ids

    path = str(CATALOG["smollm2-135m"].local_path())
    weights, meta = gguf_model.read(path)
    model, details = gguf_model.build_model(weights, meta)
    if widen:
        from impetus_mlx.cpu import widen_for_blas

        widen_for_blas(model, details)
    hf = build_tokenizer(meta)
    tok = TokenizerWrapper(hf, eos_token_ids=eos_ids(meta))
    ids = hf.encode(hf.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=False), add_special_tokens=False)
    for _ in stream_generate(model, tok, ids, max_tokens=1, sampler=make_sampler(0.0)):
        pass  # warm-up, as the daemon's load does
    rows = []
    for _ in range(runs):
        started = time.monotonic()
        ttft = None
        for resp in stream_generate(model, tok, ids, max_tokens=max_tokens, sampler=make_sampler(0.0)):
            if ttft is None:
                ttft = (time.monotonic() - started) * 1000
        rows.append({"client_ttft_ms": ttft, "decode_tps": resp.generation_tps, "prefill_tps": resp.prompt_tps, "tokens": resp.generation_tokens})
    return {"runs": rows, "weights": details.get("weights", "quantized GGUF")}


def reference(runs: int, max_tokens: int, worker_setup: bool) -> dict:
    """``in_process`` in a fresh interpreter (the worker's LD_PRELOAD must be set at start)."""
    from impetusd.workers.blas import worker_env

    env = {**os.environ, **(worker_env("auto") if worker_setup else {})}
    cmd = [sys.executable, __file__, "--reference", "worker" if worker_setup else "plain", "--runs", str(runs), "--max-tokens", str(max_tokens)]
    return json.loads(subprocess.run(cmd, env=env, check=True, capture_output=True).stdout)


def summary(rows: list[dict]) -> dict:
    return {k: round(statistics.median(r[k] for r in rows), 2) for k in ("client_ttft_ms", "decode_tps", "prefill_tps")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--reference", choices=["worker", "plain"], help=argparse.SUPPRESS)  # internal: one reference run
    args = ap.parse_args()
    if args.reference:
        print(json.dumps(in_process(args.runs, args.max_tokens, widen=args.reference == "worker")))
        return
    daemon = through_daemon(args.runs, args.max_tokens)
    same = reference(args.runs, args.max_tokens, worker_setup=True)
    plain = reference(args.runs, args.max_tokens, worker_setup=False)
    d, r, p = summary(daemon["runs"]), summary(same["runs"]), summary(plain["runs"])
    print(
        json.dumps(
            {
                "benchmark": "single_stream",
                "model": "smollm2-135m",
                "max_tokens": args.max_tokens,
                "impetus": {**d, "load_ms": daemon["load_ms"]},
                "mlx_lm_in_process": {**r, "weights": same["weights"]},
                "mlx_lm_in_process_plain": {**p, "weights": plain["weights"]},
                "ratio_decode_tps": round(d["decode_tps"] / r["decode_tps"], 3),
                "ratio_ttft": round(d["client_ttft_ms"] / r["client_ttft_ms"], 3),
                "ttft_diff_ms": round(d["client_ttft_ms"] - r["client_ttft_ms"], 2),
                "ratio_decode_tps_vs_plain": round(d["decode_tps"] / p["decode_tps"], 3),
                "ratio_ttft_vs_plain": round(d["client_ttft_ms"] / p["client_ttft_ms"], 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
