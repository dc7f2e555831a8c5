"""Single-stream decode speed and TTFT: through impetusd vs in-process mlx-lm, same weights.

Prints one JSON object. Usage: .venv/bin/python bench/single_stream.py [--runs 3] [--max-tokens 32]
The daemon runs on a temporary socket; the reference is mlx-lm's stream_generate in this
process on the model built by the same GGUF loader. Compare the ratios, not the absolutes:
these machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from impetusd.catalog import CATALOG
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
            load = client.call("models.load", {"model": "smollm2-135m", "keep_alive": -1})
            rows = []
            for _ in range(runs):
                started = time.monotonic()
                first: list[float] = []

                def on_note(method: str, raw: object) -> None:
                    if not first:
                        first.append(time.monotonic())

                res = client.stream("chat", {"model": "smollm2-135m", "messages": PROMPT, "max_tokens": max_tokens, "stream": True, "temperature": 0}, on_note)
                rows.append({
                    "client_ttft_ms": (first[0] - started) * 1000,
                    "decode_tps": res["timings"]["decode_tps"],
                    "prefill_tps": res["timings"]["prefill_tps"],
                    "tokens": res["usage"]["completion_tokens"],
                })
        return {"load_ms": load["model"]["load_ms"], "runs": rows}
    finally:
        proc.terminate()
        proc.wait(30)


def in_process(runs: int, max_tokens: int) -> dict:
    from mlx_lm import stream_generate
    from mlx_lm.sample_utils import make_sampler
    from mlx_lm.tokenizer_utils import TokenizerWrapper

    from impetus_mlx import gguf_model
    from impetus_mlx.tokenizer import build_tokenizer, eos_ids

    path = str(CATALOG["smollm2-135m"].local_path())
    weights, meta = gguf_model.read(path)
    model, _ = gguf_model.build_model(weights, meta)
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
    return {"runs": rows}


def summary(rows: list[dict]) -> dict:
    return {k: round(statistics.median(r[k] for r in rows), 2) for k in ("client_ttft_ms", "decode_tps", "prefill_tps")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()
    daemon = through_daemon(args.runs, args.max_tokens)
    ref = in_process(args.runs, args.max_tokens)
    d, r = summary(daemon["runs"]), summary(ref["runs"])
    print(json.dumps({
        "benchmark": "single_stream",
        "model": "smollm2-135m",
        "max_tokens": args.max_tokens,
        "impetus": {**d, "load_ms": daemon["load_ms"]},
        "mlx_lm_in_process": r,
        "ratio_decode_tps": round(d["decode_tps"] / r["decode_tps"], 3),
        "ratio_ttft": round(d["client_ttft_ms"] / r["client_ttft_ms"], 3),
        "ttft_diff_ms": round(d["client_ttft_ms"] - r["client_ttft_ms"], 2),
    }, indent=2))


if __name__ == "__main__":
    main()
