"""The reference the engine benchmarks measure against: ``mlx_lm.server`` on an
mlx-lm copy of the bundled model, and clients for both servers.

The copy is made with the MLX plugin's own GGUF loader (so the weights are the
ones Impetus runs) and saved with mlx-lm's ``save_model`` and a config.json
mlx-lm reads back (``rope_traditional`` and the per-layer quantization kept);
the tokenizer is the one the plugin builds from the GGUF, saved with
``save_pretrained``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from daemon_harness import Daemon, stop_process
from impetusd.store.catalog import CATALOG

MODEL = "smollm2-135m"


def mlx_copy(dest: Path, widen: bool = False) -> Path:
    """Write an mlx-lm model folder of the bundled GGUF into ``dest``; with
    ``widen``, float32 weights (what the worker runs when OpenBLAS is preloaded)."""
    from mlx_lm.utils import save_config, save_model

    from impetus_mlx import gguf_model
    from impetus_mlx.tokenizer import build_tokenizer, eos_ids

    path = str(CATALOG[MODEL].local_path())
    weights, meta = gguf_model.read(path)
    model, _ = gguf_model.build_model(weights, meta)
    quant = gguf_model.quantization_of(gguf_model.rename(weights))
    config = dataclasses.asdict(model.args)
    if widen:
        from mlx_lm.utils import dequantize_model
        import mlx.core as mx

        dequantize_model(model)
        model.set_dtype(mx.float32)
    else:
        config["quantization"] = {"group_size": gguf_model.GROUP_SIZE, "bits": 4, **quant}
    config["eos_token_id"] = eos_ids(meta)
    dest.mkdir(parents=True, exist_ok=True)
    save_model(dest, model)
    save_config(config, dest / "config.json")
    build_tokenizer(meta).save_pretrained(dest)
    return dest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlxServer:
    """``python -m mlx_lm.server`` on a loopback port, on the copy in a temp dir."""

    def __init__(self, *args: str, worker_setup: bool = False) -> None:
        """``worker_setup``: float32 weights and OpenBLAS preloaded when the
        daemon's workers get them (``impetusd.workers.blas``); otherwise the quantized
        copy as a user would run it."""
        self.tmp = Path(tempfile.mkdtemp(prefix="mlxref-"))
        self.model_dir: Path | None = None
        self.args = args
        self.worker_setup = worker_setup
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> MlxServer:
        from impetusd.workers.blas import worker_env

        extra = worker_env("auto") if self.worker_setup else {}
        self.model_dir = mlx_copy(self.tmp / "model", widen=bool(extra))
        log = open(self.tmp / "server.log", "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlx_lm.server",
                "--model",
                str(self.model_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "WARNING",
                *self.args,
            ],
            stdout=log,
            stderr=log,
            env={**os.environ, "TOKENIZERS_PARALLELISM": "false", **extra},
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlx_lm.server exited: {(self.tmp / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/v1/models", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise TimeoutError("mlx_lm.server did not start")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            stop_process(self.proc, 20)
        shutil.rmtree(self.tmp, ignore_errors=True)

    def stream_chat(self, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
        """One streamed chat; client-side start, first-token and end times, tokens."""
        body = {
            "model": str(self.model_dir),
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        started = time.perf_counter()
        first = None
        tokens = chunks = 0
        cached = None
        with httpx.stream("POST", f"{self.url}/v1/chat/completions", json=body, timeout=600) as resp:
            resp.raise_for_status()
            for line in resp.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                msg = json.loads(line[6:])
                for choice in msg.get("choices", []):
                    if choice.get("delta", {}).get("content"):
                        chunks += 1
                        if first is None:
                            first = time.perf_counter()
                usage = msg.get("usage")
                if usage:
                    tokens = usage.get("completion_tokens", 0)
                    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
        return {"start": started, "first": first, "end": time.perf_counter(), "tokens": tokens or chunks, "cached_tokens": cached}


class ImpetusStreams:
    """Streamed chats on the daemon's socket, timed the same way as ``MlxServer.stream_chat``."""

    def __init__(self, sock: Path) -> None:
        self.sock = sock

    def stream_chat(self, messages: list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(str(self.sock))
        f = conn.makefile("rb")
        try:
            params = {"model": MODEL, "messages": messages, "max_tokens": max_tokens, "temperature": 0, "stream": True}
            started = time.perf_counter()
            conn.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "chat", "params": params}).encode() + b"\n")
            first = None
            while True:
                msg = json.loads(f.readline())
                if msg.get("method") == "chat.chunk":
                    if first is None:
                        first = time.perf_counter()
                    continue
                if msg.get("id") == 1:
                    if "error" in msg:
                        raise RuntimeError(msg["error"])
                    res = msg["result"]
                    return {
                        "start": started,
                        "first": first,
                        "end": time.perf_counter(),
                        "tokens": res["usage"]["completion_tokens"],
                        "cached_tokens": res["usage"]["cached_tokens"],
                        "batch_size": res["timings"].get("batch_size"),
                    }
        finally:
            f.close()
            conn.close()


class ImpetusDaemon(Daemon):
    """``impetusd`` on a temporary socket (``bench/daemon_harness.py``) with the bundled model loaded."""

    def __enter__(self) -> ImpetusDaemon:
        super().__enter__()
        self.call("models.load", {"model": MODEL, "keep_alive": -1, "backend": "mlx"})  # the engine these benches measure
        return self

    @property
    def sock(self) -> Path:
        return self.socket
