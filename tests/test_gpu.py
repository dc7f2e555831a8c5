"""The llama.cpp backend on an NVIDIA GPU: a CUDA build of llama-server (scripts/setup builds one
where nvcc is found), every layer offloaded when the model fits, the GPU memory it holds reported.

The GPU tests need nvidia-smi, a GPU and a CUDA llama-server (IMPETUS_LLAMA_SERVER or the one
scripts/setup installed); elsewhere they are skipped, saying which is missing. They ran on an
H200 (docs/gpu.md). The choice of layers is plain arithmetic and is tested everywhere."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from gguf_factory import write_shaped_llama, write_tiny_llama
from helpers import DaemonProcess

from impetus_llamacpp import binary, gpu
from impetusd.toolkit.nvidia import Gpu
from impetusd.toolkit.nvidia import parse as parse_gpus

GIB = 1 << 30


def cuda_missing() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return "no nvidia-smi: no NVIDIA GPU here"
    if not gpu.query():
        return "nvidia-smi lists no GPU"
    try:
        found = binary.find()
    except Exception as exc:
        return f"no llama-server: {exc}"
    if found.variant != "cuda":
        return f"llama-server {found.path} is a {found.variant} build, not CUDA"
    return None


MISSING = cuda_missing()
needs_cuda = pytest.mark.skipif(MISSING is not None, reason=f"needs an NVIDIA GPU and a CUDA llama-server ({MISSING})")


def test_every_layer_goes_to_the_gpu_when_the_model_fits() -> None:
    assert gpu.layers_that_fit(32, weights=8 * GIB, kv_cache=4 * GIB, free=140 * GIB) == 33  # the output layer too


def test_as_many_layers_as_fit_when_the_model_does_not() -> None:
    # 32 layers of 1 GiB (weights and cache) in 16 GiB free, less the 1 GiB reserve: 15 whole layers.
    assert gpu.layers_that_fit(32, weights=28 * GIB, kv_cache=4 * GIB, free=16 * GIB) == 15
    assert gpu.layers_that_fit(32, weights=28 * GIB, kv_cache=4 * GIB, free=gpu.RESERVE_BYTES) == 0


def test_the_build_variant_is_read_off_the_setup_flags() -> None:
    cuda = binary.Binary(path="x", version="version: 1", built_with="", flags="-G Ninja -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90")
    cpu = binary.Binary(path="x", version="version: 1", built_with="", flags="-G Ninja -DGGML_NATIVE=OFF")
    assert (cuda.variant, cpu.variant) == ("cuda", "cpu")


def test_nvidia_smi_rows_are_parsed() -> None:
    rows = parse_gpus("0, NVIDIA H200, 143771, 143280, 491, 30, 0\n1, NVIDIA H200, [N/A], [N/A], [N/A], [N/A], [N/A]\n")
    assert rows == [Gpu(index=0, name="NVIDIA H200", total_bytes=143771 * 1024 * 1024, free_bytes=143280 * 1024 * 1024, used_bytes=491 * 1024 * 1024, temp_c=30.0, utilization_percent=0.0)]


def server_env() -> dict[str, str]:
    """The daemon's environment keeps no IMPETUS_ variable of the test's: pass the binary on."""
    named = os.environ.get(binary.BINARY_ENV)
    return {binary.BINARY_ENV: named} if named else {}


def load(d: DaemonProcess, path: Path) -> dict[str, Any]:
    with d.connect() as conn:
        answer = conn.call("models.load", {"model": str(path), "keep_alive": -1})
    assert "result" in answer, answer
    return answer["result"]["model"]


@needs_cuda
def test_a_model_that_fits_runs_wholly_on_the_gpu(tmp_path: Path) -> None:
    path = write_shaped_llama(tmp_path / "smol.gguf", "smollm2-135m", "Q4_0")
    d = DaemonProcess(tmp_path, **server_env()).start()
    try:
        model = load(d, path)
        engine = model["engine"]
        assert (engine["device"], engine["build"], engine["gpu_layers"]) == ("cuda", "cuda", 31)
        assert engine["gpus"] and engine["gpu_memory_bytes"] > path.stat().st_size  # weights and KV cache on the GPU
        with d.connect() as conn:
            answer = conn.call("complete", {"model": str(path), "prompt": "the", "max_tokens": 8, "temperature": 0})
        assert answer["result"]["usage"]["completion_tokens"] >= 1, answer
    finally:
        d.stop()


@needs_cuda
def test_gpu_layers_from_the_environment(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "tiny.gguf", "F32", layers=4)
    d = DaemonProcess(tmp_path, IMPETUS_LLAMACPP_GPU_LAYERS="2", **server_env()).start()
    try:
        assert load(d, path)["engine"]["gpu_layers"] == 2
    finally:
        d.stop()


@needs_cuda
def test_doctor_names_the_cuda_build_and_the_gpu() -> None:
    done = subprocess.run([sys.executable, "-m", "impetusctl", "doctor"], capture_output=True, text=True, timeout=300)
    line = next(line for line in done.stdout.splitlines() if "llama-server" in line)
    assert "cuda build" in line and "GiB free" in line, done.stdout
    backends = next(line for line in done.stdout.splitlines() if "backends" in line)
    assert "gguf: llamacpp on the GPU (" in backends, done.stdout


def test_the_config_sets_the_gpu_layers_for_the_workers(tmp_path: Path) -> None:
    from impetusd.config import load_config
    from impetusd.protocol.errors import InvalidParams
    from impetus_llamacpp.settings import table_env

    (tmp_path / "config.toml").write_text("llamacpp_gpu_layers = 20\n")
    cfg = load_config(home=tmp_path, env={})
    assert table_env(cfg.backends["llamacpp"]) == {"IMPETUS_LLAMACPP_GPU_LAYERS": "20"}
    (tmp_path / "config.toml").write_text('llamacpp_gpu_layers = "many"\n')
    with pytest.raises(InvalidParams, match="llamacpp_gpu_layers"):
        load_config(home=tmp_path, env={})


def test_the_backends_table_is_the_llama_backends_own(tmp_path: Path) -> None:
    """``[backends.llamacpp]`` reaches the backend as read; its settings become the workers'
    variables, the older top-level keys land in it, and the table's own value wins."""
    from impetus_llamacpp.settings import table_env, worker_env
    from impetusd.config import load_config
    from impetusd.protocol.errors import InvalidParams

    (tmp_path / "config.toml").write_text('llamacpp_gpu_layers = 3\n[backends.llamacpp]\nserver = "~/bin/llama-server"\ngpu_layers = "ALL"\n')
    cfg = load_config(home=tmp_path, env={})
    assert cfg.backends == {"llamacpp": {"server": "~/bin/llama-server", "gpu_layers": "ALL"}}
    server = str(Path("~/bin/llama-server").expanduser())
    assert worker_env(cfg.backends["llamacpp"]) == {"IMPETUS_LLAMA_RPC": "", "IMPETUS_LLAMA_SERVER": server, "IMPETUS_LLAMACPP_GPU_LAYERS": "all"}
    with pytest.raises(InvalidParams, match="gpu_layers"):
        table_env({"gpu_layers": "many"})
    with pytest.raises(InvalidParams, match="no key 'threads'"):
        table_env({"threads": 2})


@needs_cuda
def test_gpu_layers_from_the_config(tmp_path: Path) -> None:
    path = write_tiny_llama(tmp_path / "tiny.gguf", "F32", layers=4)
    d = DaemonProcess(tmp_path, config='llamacpp_gpu_layers = "all"', **server_env()).start()
    try:
        assert load(d, path)["engine"]["gpu_layers"] >= 5
    finally:
        d.stop()


@pytest.mark.skipif(MISSING is not None, reason=MISSING or "")
def test_the_budget_counts_the_gpu_and_a_load_takes_n_gpu_layers(tmp_path: Path) -> None:
    """On a GPU: the Linux monitor's GPUs are the budget's GPU side, and ``n_gpu_layers`` per
    load is what llama-server gets; its GPU part counts against that side."""
    model = write_tiny_llama(tmp_path / "tiny.gguf")
    d = DaemonProcess(tmp_path, **server_env()).start()
    try:
        with d.connect() as conn:
            loaded = conn.call("models.load", {"model": str(model), "n_gpu_layers": 1})["result"]["model"]
            assert loaded["engine"]["gpu_layers"] == 1 and loaded["estimate"]["gpu_layers"] == 1
            assert loaded["estimate"]["gpu_bytes"] > 0 and loaded["gpu_memory_bytes"] >= loaded["estimate"]["gpu_bytes"]
            memory = conn.call("models.loaded")["result"]["memory"]
            assert memory["gpu_budget_bytes"] > 0 and memory["gpu_used_bytes"] >= loaded["estimate"]["gpu_bytes"] and memory["gpus"]
    finally:
        d.stop()
