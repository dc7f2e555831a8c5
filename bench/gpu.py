"""Impetus's llama.cpp backend on an NVIDIA GPU against llama-server started directly: same binary, same GGUF, same options.

Prints one JSON object (and writes it to --out). Usage, on a machine with a CUDA build of
llama-server (scripts/setup builds one where nvcc is found; docs/gpu.md has the device run):

  python bench/gpu.py --llama-server .venv/libexec/impetus/llama-server --dir /tmp/models \\
      [--models llama-8b:Q4_0,llama-8b:Q8_0,smollm2-135m:Q4_1] [--streams 1,4,16,64] [--runs 5] [--max-tokens 128]

Each model is written by tests/gguf_factory.py (``write_shaped_llama``: the real model's
shape, random weights) into --dir unless it is there already. Per model: a daemon
(``impetusd`` → worker → llama-server, all layers on the GPU) and the same binary
started here with the engine's options (``server_args``), both with --streams slots.
Single-stream runs alternate between the two sides; then 1/4/16/64 streams at once on
each side. Greedy, the end-of-generation tokens banned (random weights would end at
random places), so every request makes --max-tokens tokens. The bandwidth fraction:
decode tok/s × weight bytes read per token / the device-to-device copy bandwidth
(bytes read + written per second, measured here with torch).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from daemon_harness import Daemon  # noqa: E402
from llama_server import TEXT, completion, figures, median, together  # noqa: E402

from impetusctl.client import Client  # noqa: E402
from impetusd.engine.messages import GenerateRequest  # noqa: E402
from impetusd.protocol.api import Message, ResolvedSampling  # noqa: E402


def messages(run: int) -> list[dict[str, str]]:
    return [{"role": "system", "content": f"Session {run}. You are a poet."}, {"role": "user", "content": TEXT}]


def copy_bandwidth() -> dict[str, Any]:
    """A 4 GiB device-to-device copy, bytes read + written per second (median of 20)."""
    try:
        import torch

        if not torch.cuda.is_available():
            return {"error": "torch sees no CUDA device"}
    except ImportError as exc:
        return {"error": f"no torch: {exc}"}
    n = 4 << 30
    src = torch.empty(n, dtype=torch.uint8, device="cuda").random_(0, 255)
    dst = torch.empty_like(src)
    times = []
    for i in range(23):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src)
        b.record()
        torch.cuda.synchronize()
        if i >= 3:
            times.append(a.elapsed_time(b) / 1000)
    t = statistics.median(times)
    out = {"bytes_copied": n, "median_s": round(t, 6), "bytes_per_s": round(2 * n / t), "device": torch.cuda.get_device_name(0)}
    del src, dst
    torch.cuda.empty_cache()
    return out


def weight_bytes_per_token(path: Path) -> dict[str, int]:
    """Every tensor is read once per decoded token except the token embeddings (one row), unless
    there is no output.weight (tied: the embeddings are the output layer, read whole)."""
    import gguf

    tensors = {t.name: int(t.n_bytes) for t in gguf.GGUFReader(str(path)).tensors}
    total = sum(tensors.values())
    tied = "output.weight" not in tensors
    read = total if tied else total - tensors.get("token_embd.weight", 0)
    return {"file_tensor_bytes": total, "bytes_read_per_token": read, "tied_embeddings": int(tied)}


class Side:
    """One way to stream a request: through the daemon, or straight to a llama-server."""

    name = ""

    def stream(self, run: int, max_tokens: int) -> dict[str, float]:
        raise NotImplementedError


class ThroughImpetus(Side):
    name = "impetus"

    def __init__(self, socket: Path, model: str, ban: dict[str, float]) -> None:
        self.socket, self.model, self.ban = socket, model, ban

    def stream(self, run: int, max_tokens: int) -> dict[str, float]:
        stamps: list[float] = []
        params = {"model": self.model, "messages": messages(run), "max_tokens": max_tokens, "temperature": 0, "stream": True, "logit_bias": self.ban}
        with Client(self.socket, timeout=600) as client:
            started = time.monotonic()
            res = client.stream("chat", params, lambda method, raw: stamps.append(time.monotonic()))
        u, t = res["usage"], res["timings"]
        return figures(started, stamps or [time.monotonic()], u["completion_tokens"], u["prompt_tokens"], u["cached_tokens"], t)


class Direct(Side):
    """llama-server started here the way the engine starts it; the request body the engine sends."""

    name = "llama_server_direct"

    def __init__(self, model: str, args: list[str], nice: int, ban: dict[str, float]) -> None:
        from impetus_llamacpp import binary
        from impetus_llamacpp.prompt import Prompter
        from impetus_llamacpp.server import LlamaServer

        self.server = LlamaServer(binary.find(), model, args, role="bench", nice=nice)
        self.server.wait_ready()
        props = self.server.get("/props")
        self.n_vocab = int(self.server.get("/v1/models")["data"][0]["meta"]["n_vocab"])
        self.n_ctx = int(props["default_generation_settings"]["n_ctx"])
        self.prompter = Prompter(self.server, props.get("chat_template"), props.get("bos_token") or "", props.get("eos_token") or "")
        self.ban = {int(k): v for k, v in ban.items()}
        self.tokenize_ms: list[float] = []  # the chat template and /tokenize, which Impetus's TTFT includes and this side's does not

    def close(self) -> None:
        self.server.close()

    def stream(self, run: int, max_tokens: int) -> dict[str, float]:
        from impetus_llamacpp.sampling import options

        msgs = [Message(role=m["role"], content=m["content"]) for m in messages(run)]  # type: ignore[arg-type]
        req = GenerateRequest(kind="chat", messages=msgs, sampling=ResolvedSampling(max_tokens=max_tokens, temperature=0.0, logit_bias=self.ban))
        t0 = time.monotonic()
        ids = self.prompter.ids(req)
        self.tokenize_ms.append((time.monotonic() - t0) * 1000)
        body = {"prompt": ids, "n_predict": max_tokens, "stream": True, "cache_prompt": True, "return_tokens": True, **options(req, self.n_vocab, self.n_ctx)}
        return completion(self.server.http, body, len(ids))


def bench_model(label: str, path: Path, args: argparse.Namespace, bandwidth: float | None) -> dict[str, Any]:
    from impetus_llamacpp.engine import server_args, server_nice

    streams = [int(s) for s in args.streams.split(",")]
    slots = max(streams)
    weights = weight_bytes_per_token(path)
    daemon = Daemon()
    daemon.env.update(
        IMPETUS_LLAMA_SERVER=args.llama_server,
        IMPETUS_LLAMACPP_SLOTS=str(slots),
        IMPETUS_LLAMACPP_CONTEXT=str(args.context),
        IMPETUS_LLAMACPP_THREADS=str(args.threads),
    )
    out: dict[str, Any] = {"model": label, "path": str(path), "file_bytes": path.stat().st_size, **weights}
    with daemon, Client(daemon.socket, timeout=900) as client:
        t0 = time.monotonic()
        loaded = client.call("models.load", {"model": str(path), "keep_alive": -1})["model"]
        out["impetus_load_s"] = round(time.monotonic() - t0, 2)
        details = loaded.get("engine") or {}
        out["engine"] = {
            k: details.get(k) for k in ("device", "build", "gpu_layers", "layers", "gpus", "slots", "context_length", "threads", "gpu_memory_bytes")
        }
        n_vocab = int(details.get("vocab_size") or 0)
        ban = {str(n_vocab - 1): -100.0, str(n_vocab - 2): -100.0}  # <|im_end|> (end of generation) and <|im_start|>
        t0 = time.monotonic()
        direct = Direct(str(path), server_args(args.context, slots, args.threads, int(details.get("gpu_layers") or 0)), server_nice(args.threads), ban)
        out["direct_load_s"] = round(time.monotonic() - t0, 2)
        impetus = ThroughImpetus(daemon.socket, str(path), ban)
        sides: list[Side] = [impetus, direct]
        try:
            for side in sides:  # warm-ups, unmeasured
                side.stream(-1, 8)
            rows: dict[str, list[dict[str, float]]] = {s.name: [] for s in sides}
            for i in range(args.runs):
                for side in sides if i % 2 == 0 else sides[::-1]:
                    rows[side.name].append(side.stream(i, args.max_tokens))
            single = {name: median(r) for name, r in rows.items()}
            out["direct_template_and_tokenize_ms_median"] = round(statistics.median(direct.tokenize_ms), 2)
            a, b = single["impetus"], single["llama_server_direct"]
            out["single_stream"] = single
            out["single_ratio_impetus_vs_direct"] = {k: round(a[k] / b[k], 3) if b[k] else None for k in ("client_decode_tps", "decode_tps", "prefill_tps")}
            out["single_ttft_delta_ms"] = round(a["client_ttft_ms"] - b["client_ttft_ms"], 2)
            conc: list[dict[str, Any]] = []
            for n in streams:
                runs: dict[str, list[dict[str, float]]] = {s.name: [] for s in sides}
                for rep in range(args.reps):  # the sides alternate which goes first
                    for j, side in enumerate(sides if (n + rep) % 2 else sides[::-1]):
                        runs[side.name].append(together(side.stream, 100_000 * rep + 10_000 * (n + 1) + 1000 * j, n, args.concurrent_max_tokens))
                row: dict[str, Any] = {"streams": n}
                for name, rs in runs.items():
                    row[name] = {
                        "aggregate_tps": round(statistics.median(r["aggregate_tps"] for r in rs), 1),
                        "ttft_ms_median": round(statistics.median(r["ttft_ms_median"] for r in rs), 1),
                        "ttft_ms_max": round(statistics.median(r["ttft_ms_max"] for r in rs), 1),
                        "aggregate_tps_each": [r["aggregate_tps"] for r in rs],
                    }
                row["ratio_aggregate_tps"] = round(row["impetus"]["aggregate_tps"] / row["llama_server_direct"]["aggregate_tps"], 3)
                row["ttft_median_delta_ms"] = round(row["impetus"]["ttft_ms_median"] - row["llama_server_direct"]["ttft_ms_median"], 1)
                conc.append(row)
            out["concurrent"] = conc
            gpu = client.call("models.loaded", {})["models"][0].get("engine", {}).get("gpu_memory_bytes")
            out["impetus_gpu_memory_bytes"] = gpu
        finally:
            direct.close()
    if bandwidth:
        per_token = weights["bytes_read_per_token"]
        out["bandwidth_limit_tps"] = round(bandwidth / per_token, 1)
        out["bandwidth_fraction"] = {
            name: round(out["single_stream"][name]["client_decode_tps"] * per_token / bandwidth, 3) for name in ("impetus", "llama_server_direct")
        }
    return out


def mlx_side(label: str, path: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The same file through Impetus's MLX backend (MLX's CUDA backend, the mlx[cuda] extra): single
    stream and the largest concurrency, for MLX-CUDA vs llama.cpp-CUDA on one shape."""
    daemon = Daemon()
    out: dict[str, Any] = {"model": label, "backend": "mlx"}
    with daemon, Client(daemon.socket, timeout=900) as client:
        t0 = time.monotonic()
        loaded = client.call("models.load", {"model": str(path), "backend": "mlx", "keep_alive": -1})["model"]
        out["load_s"] = round(time.monotonic() - t0, 2)
        engine = loaded.get("engine") or {}
        out["engine"] = {k: engine.get(k) for k in ("device", "max_batch", "weights")}
        n_vocab = weight_vocab(path)
        side = ThroughImpetus(daemon.socket, str(path), {str(n_vocab - 1): -100.0, str(n_vocab - 2): -100.0})
        side.stream(-1, 8)
        out["single_stream"] = median([side.stream(i, args.max_tokens) for i in range(args.runs)])
        out["concurrent"] = [together(side, 50_000 + 1000 * n, n, args.concurrent_max_tokens) for n in (4, 16)]
    return out


def weight_vocab(path: Path) -> int:
    import gguf

    reader = gguf.GGUFReader(str(path))
    return len(reader.fields["tokenizer.ggml.tokens"].data)


def ensure_model(spec: str, folder: Path) -> tuple[str, Path]:
    from gguf_factory import write_shaped_llama

    shape, qtype = spec.split(":")
    path = folder / f"{shape}-{qtype}.gguf"
    if not path.exists():
        t0 = time.monotonic()
        write_shaped_llama(path.with_suffix(".tmp"), shape, qtype)
        path.with_suffix(".tmp").rename(path)
        print(f"wrote {path} ({path.stat().st_size / 2**30:.2f} GiB) in {time.monotonic() - t0:.1f} s", file=sys.stderr, flush=True)
    return f"{shape} {qtype} (random weights)", path


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--llama-server", required=True, help="the (CUDA) llama-server binary both sides run")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/impetus-gpu-models"))
    ap.add_argument("--models", default="llama-8b:Q4_0,llama-8b:Q8_0,smollm2-135m:Q4_1")
    ap.add_argument("--streams", default="1,4,16,64")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--concurrent-max-tokens", type=int, default=64, help="tokens per request in the concurrent runs")
    ap.add_argument("--reps", type=int, default=3, help="repeats of each concurrency point per side (the median is reported)")
    ap.add_argument("--context", type=int, default=1024, help="tokens per slot")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--mlx", default="", help="models (of --models) to run through the MLX backend too, e.g. smollm2-135m:Q4_1")
    args = ap.parse_args()
    args.llama_server = os.path.abspath(args.llama_server)
    os.environ["IMPETUS_LLAMA_SERVER"] = args.llama_server
    args.dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"benchmark": "gpu", **{k: v for k, v in vars(args).items() if k not in ("dir", "out")}}
    result["copy_bandwidth"] = copy_bandwidth()
    bandwidth = result["copy_bandwidth"].get("bytes_per_s")
    result["models"] = []
    for spec in filter(None, args.models.split(",")):
        label, path = ensure_model(spec, args.dir)
        try:
            result["models"].append(bench_model(label, path, args, bandwidth))
        except Exception as exc:  # one model's failure is recorded; the others still run
            result["models"].append({"model": label, "error": f"{type(exc).__name__}: {exc}"})
        text = json.dumps(result, indent=2)
        if args.out:
            args.out.write_text(text)  # after each model: a run cut short keeps what it measured
        print(f"done {label}", file=sys.stderr, flush=True)
    for spec in filter(None, args.mlx.split(",")):
        label, path = ensure_model(spec, args.dir)
        try:
            result.setdefault("mlx_runs", []).append(mlx_side(label, path, args))
        except Exception as exc:
            result.setdefault("mlx_runs", []).append({"model": label, "error": f"{type(exc).__name__}: {exc}"})
        text = json.dumps(result, indent=2)
        if args.out:
            args.out.write_text(text)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
