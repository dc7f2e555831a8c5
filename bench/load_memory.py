"""Cold load time and memory returned after unload, through impetusd and in-process.

Prints one JSON object. Usage: .venv/bin/python bench/load_memory.py [--runs 3] [--model smollm2-135m]

Two daemons run side by side: one with the defaults and one with
``spare_worker = true`` (a pre-started worker with its imports done takes each
load; its memory is in the figures before and after).

The MLX backend is measured on both (``backend: mlx``); the default daemon also
loads the model on its automatic choice for this machine (llama.cpp where Metal
is absent), next to that plugin's own loader in a fresh process.

Through the daemon: ``models.load`` starts a fresh worker each run (process start,
imports, weights, tokenizer, warm-up), then ``models.unload`` ends it. Process
memory (daemon RSS + every worker's RSS) and the system's available memory are
sampled before the load, after it and after the unload. The reference, in the
same run: a fresh Python process, with the environment workers get (OpenBLAS
preloaded when installed), that imports the MLX plugin and calls its own loader
(``MLXEngine.load``) on the same file, timed phase by phase.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))

from daemon_harness import Daemon  # noqa: E402
from impetusctl.client import Client  # noqa: E402

IN_PROCESS = r"""
import json, sys, time
t0 = time.perf_counter()
import mlx.core as mx
from mlx_lm.tokenizer_utils import TokenizerWrapper
from impetus_mlx import gguf_model
from impetus_mlx.engine import MLXEngine
from impetus_mlx.tokenizer import build_tokenizer, eos_ids
t1 = time.perf_counter()
path = sys.argv[1]
weights, meta = gguf_model.read(path)
t2 = time.perf_counter()
model, details = gguf_model.build_model(weights, meta)
t3 = time.perf_counter()
hf = build_tokenizer(meta)
wrapper = TokenizerWrapper(hf, eos_token_ids=eos_ids(meta))
t4 = time.perf_counter()
engine = MLXEngine(model, wrapper, hf.add_bos, int(details["context_length"]), 0.0, details)
engine.warm_up()
t5 = time.perf_counter()
# The plugin's own loader end to end, as the worker calls it (files now in the page cache).
from impetusd.engine.messages import ModelSpec
again = MLXEngine.load(ModelSpec(name="m", path=path, format="gguf"))
t6 = time.perf_counter()
ms = lambda a, b: round((b - a) * 1000, 1)
print(json.dumps({"imports_ms": ms(t0, t1), "weights_ms": ms(t1, t2), "build_model_ms": ms(t2, t3),
                  "tokenizer_ms": ms(t3, t4), "warmup_ms": ms(t4, t5), "first_load_ms": ms(t1, t5),
                  "engine_load_ms": ms(t5, t6)}))
"""


def settle(daemon: Daemon, timeout: float = 15.0) -> None:
    """Until the daemon's processes stop growing (a spare worker finishing its imports)."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        now = process_memory(daemon, settled=False)["total_rss"]
        if abs(now - last) < 1_000_000:
            return
        last = now
        time.sleep(0.5)


def process_memory(daemon: Daemon, settled: bool = True) -> dict[str, int]:
    if settled:
        settle(daemon)
    proc = psutil.Process(daemon.pid)
    workers = 0
    for child in proc.children(recursive=True):
        try:
            workers += child.memory_info().rss
        except psutil.Error:
            pass
    daemon_rss = proc.memory_info().rss
    return {"daemon_rss": daemon_rss, "workers_rss": workers, "total_rss": daemon_rss + workers, "system_available": psutil.virtual_memory().available}


LLAMACPP_IN_PROCESS = r"""
import json, sys, time
t0 = time.perf_counter()
from impetus_llamacpp import MAX_BATCH
from impetus_llamacpp.engine import LlamaServerEngine
from impetusd.plugin_api import ModelSpec
t1 = time.perf_counter()
engine = LlamaServerEngine.load(ModelSpec(name="m", path=sys.argv[1], format="gguf"), slots=MAX_BATCH)
t2 = time.perf_counter()
engine.close()
ms = lambda a, b: round((b - a) * 1000, 1)
print(json.dumps({"imports_ms": ms(t0, t1), "engine_load_ms": ms(t1, t2)}))
"""


def in_process(path: str, script: str = IN_PROCESS) -> dict[str, Any]:
    """The plugin's own loader in a fresh process with the environment the daemon
    gives its workers (OpenBLAS preloaded when installed, as ``worker_blas = auto``)."""
    from impetusd.workers.blas import worker_env

    started = time.perf_counter()
    env = {**os.environ, **worker_env("auto")}
    out = subprocess.run([sys.executable, "-c", script, path], capture_output=True, text=True, check=True, env=env)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["process_ms"] = round((time.perf_counter() - started) * 1000, 1)  # interpreter start to exit (both loads)
    return row


def through_daemon(daemon: Daemon, client: Client, model: str, backend: str | None = "mlx") -> dict[str, Any]:
    """``backend`` None: the daemon's automatic choice for this machine."""
    before = process_memory(daemon)
    started = time.perf_counter()
    loaded = client.call("models.load", {"model": model, "keep_alive": -1, "backend": backend})["model"]
    client_ms = (time.perf_counter() - started) * 1000
    after_load = process_memory(daemon)
    client.call("models.unload", {"model": model})
    deadline = time.monotonic() + 10
    while psutil.pid_exists(loaded["pid"]) and time.monotonic() < deadline:
        try:
            if psutil.Process(loaded["pid"]).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.Error:
            break
        time.sleep(0.02)
    after_unload = process_memory(daemon)
    return {
        "backend": loaded["backend"],
        "load_ms": loaded["load_ms"],
        "client_ms": round(client_ms, 1),
        "engine_load_ms": loaded["engine_load_ms"],
        "warmup_ms": loaded["warmup_ms"],
        "process_start_ms": round(loaded["load_ms"] - (loaded["engine_load_ms"] or 0), 1),
        "estimate_bytes": loaded["estimate"]["total_bytes"],
        "worker_rss_after_load": loaded["rss_bytes"],
        "memory": {"before_load": before, "after_load": after_load, "after_unload": after_unload},
    }


def median(rows: list[dict[str, Any]], key: str) -> float:
    return round(statistics.median(r[key] for r in rows), 1)


def wait_for_spare(daemon: Daemon, timeout: float = 60.0) -> None:
    """Until the daemon's spare worker is waiting (a child process beside no model)."""
    deadline = time.monotonic() + timeout
    while not psutil.Process(daemon.pid).children() and time.monotonic() < deadline:
        time.sleep(0.1)
    settle(daemon)  # its imports take a moment after the process appears


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    first, last = rows[0]["memory"], rows[-1]["memory"]
    return {
        "cold_load_ms_median": median(rows, "load_ms"),
        "engine_load_ms_median": median(rows, "engine_load_ms"),
        "process_start_and_imports_ms_median": median(rows, "process_start_ms"),
        "warmup_ms_median": median([r for r in rows if r["warmup_ms"] is not None], "warmup_ms") if any(r["warmup_ms"] is not None for r in rows) else None,
        "rss_after_unload_vs_before": round(last["after_unload"]["total_rss"] / first["before_load"]["total_rss"], 3),
        "available_after_unload_vs_before": round(last["after_unload"]["system_available"] / first["before_load"]["system_available"], 3),
        "runs": rows,
    }


def run(runs: int = 3, model: str = "smollm2-135m") -> dict[str, Any]:
    from impetusd.store.catalog import CATALOG

    item = CATALOG.get(model)
    path = str(item.local_path()) if item else model
    plain_rows: list[dict[str, Any]] = []
    spare_rows: list[dict[str, Any]] = []
    ref_rows: list[dict[str, Any]] = []
    auto_rows: list[dict[str, Any]] = []
    auto_ref_rows: list[dict[str, Any]] = []
    with Daemon() as plain, Daemon(config="spare_worker = true\n") as spare:
        with Client(plain.socket) as plain_client, Client(spare.socket) as spare_client:
            for _ in range(runs):  # interleaved, so all see the same machine load
                plain_rows.append(through_daemon(plain, plain_client, model))
                wait_for_spare(spare)
                spare_rows.append(through_daemon(spare, spare_client, model))
                ref_rows.append(in_process(path))
                auto_rows.append(through_daemon(plain, plain_client, model, backend=None))
                if auto_rows[-1]["backend"] == "llamacpp":
                    auto_ref_rows.append(in_process(path, LLAMACPP_IN_PROCESS))
    plain_sum, spare_sum, auto_sum = summary(plain_rows), summary(spare_rows), summary(auto_rows)
    auto_sum["backend"] = auto_rows[0]["backend"]
    if auto_ref_rows:
        auto_sum["in_process_llamacpp"] = {
            "process_ms_median": median(auto_ref_rows, "process_ms"),
            "imports_ms_median": median(auto_ref_rows, "imports_ms"),
            "engine_load_ms_median": median(auto_ref_rows, "engine_load_ms"),
            "runs": auto_ref_rows,
        }
    result = {
        "model": model,
        "runs": runs,
        "daemon_automatic_backend": auto_sum,
        "daemon": plain_sum,
        "daemon_spare_worker": spare_sum,
        "in_process": {
            "process_ms_median": median(ref_rows, "process_ms"),
            "imports_ms_median": median(ref_rows, "imports_ms"),
            "first_load_ms_median": median(ref_rows, "first_load_ms"),
            "engine_load_ms_median": median(ref_rows, "engine_load_ms"),
            "runs": ref_rows,
        },
        "ratios": {
            "daemon_load_vs_in_process_imports_and_load": round(
                plain_sum["cold_load_ms_median"] / statistics.median(r["imports_ms"] + r["first_load_ms"] for r in ref_rows), 3
            ),
            "spare_load_vs_in_process_engine_load": round(spare_sum["cold_load_ms_median"] / median(ref_rows, "engine_load_ms"), 3),
            "rss_after_unload_vs_before": plain_sum["rss_after_unload_vs_before"],
            "rss_after_unload_vs_before_spare": spare_sum["rss_after_unload_vs_before"],
        },
        "targets": {"cold_load_ms": 1000, "memory_after_unload_ratio_max": 1.05},
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args()
    print(json.dumps(run(args.runs, args.model), indent=2))


if __name__ == "__main__":
    main()
