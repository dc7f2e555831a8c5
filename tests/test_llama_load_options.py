"""Per-load settings of the llama.cpp backend through a real daemon, the CLI and real
llama-server processes: KV-cache type and flash attention reach llama-server and the
memory estimate (which counts a KV cache per slot), speculative decoding with a draft
model or n-grams reports its acceptance, and a draft of another vocabulary is refused
before anything loads."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from gguf_factory import write_tiny_llama
from helpers import DaemonProcess

MODEL = "smollm2-135m"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory):
    d = DaemonProcess(tmp_path_factory.mktemp("llama-options")).start()
    yield d
    d.stop()


def ctl(d: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "impetusctl", "--no-autostart", "--json", *args], env=d.env, capture_output=True, text=True, timeout=300)


def load(d: DaemonProcess, **params: Any) -> dict[str, Any]:
    with d.connect() as conn:
        reply = conn.call("models.load", {"model": MODEL, "keep_alive": -1, **params})
    assert "result" in reply, reply
    return reply["result"]["model"]


def server_cmdline(worker_pid: int) -> list[str]:
    [server] = [p for p in psutil.Process(worker_pid).children() if p.name() == "llama-server"]
    return server.cmdline()


def after(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def ask(d: DaemonProcess, prompt: str, max_tokens: int = 8) -> dict[str, Any]:
    with d.connect() as conn:
        reply = conn.call("complete", {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
    assert "result" in reply, reply
    return reply["result"]


@pytest.mark.model
def test_kv_type_and_flash_attn_per_load_reach_llama_server_and_the_estimate(daemon: DaemonProcess) -> None:
    f16 = load(daemon)
    assert after(server_cmdline(f16["pid"]), "--cache-type-k") == "f16"
    # The estimate counts a KV cache per slot (4 × 8,192 tokens): it is no longer far below
    # what the worker and its llama-server hold once loaded.
    with daemon.connect() as conn:
        counted = conn.call("hardware.snapshot")["result"]["workers"][MODEL]
    assert f16["estimate"]["kv_cache_bytes"] == 4 * 8192 * 30 * 192 * 2 * 2  # slots × tokens × layers × KV width × K,V × f16
    assert f16["estimate"]["total_bytes"] >= 0.8 * counted, (f16["estimate"], counted)

    done = ctl(daemon, "load", MODEL, "--kv-type", "q8_0", "--flash-attn", "on")  # another setting: reloaded
    assert done.returncode == 0, done.stderr
    q8 = json.loads(done.stdout)["model"]
    assert q8["pid"] != f16["pid"] and q8["engine"]["kv_type"] == "q8_0" and q8["engine"]["flash_attn"] == "on"
    cmd = server_cmdline(q8["pid"])
    assert after(cmd, "--cache-type-k") == after(cmd, "--cache-type-v") == "q8_0" and after(cmd, "--flash-attn") == "on"
    assert q8["estimate"]["kv_cache_bytes"] == f16["estimate"]["kv_cache_bytes"] * 34 // 64
    assert ask(daemon, "The capital of France is")["usage"]["completion_tokens"] > 0
    assert load(daemon, kv_type="q8_0", flash_attn="on")["pid"] == q8["pid"]  # same settings: the same worker


@pytest.mark.model
def test_a_quantized_kv_cache_without_flash_attention_is_refused(daemon: DaemonProcess) -> None:
    with daemon.connect() as conn:
        err = conn.call("models.load", {"model": MODEL, "kv_type": "q4_0", "flash_attn": "off"})["error"]
    assert err["data"]["name"] == "InvalidParams" and err["data"]["field"] == "flash_attn", err


@pytest.mark.model
def test_speculative_decoding_with_a_draft_model_reports_acceptance(daemon: DaemonProcess) -> None:
    model = load(daemon, draft=MODEL)  # the model as its own draft: greedy drafts are all accepted
    assert "--model-draft" in server_cmdline(model["pid"]) and model["engine"]["speculative"] == "draft"
    timings = ask(daemon, "One, two, three, four, five, six,", max_tokens=24)["timings"]
    assert timings["draft_tokens"] > 0 and timings["acceptance_rate"] > 0.5, timings


@pytest.mark.model
def test_ngram_speculation_without_a_draft(daemon: DaemonProcess) -> None:
    model = load(daemon, ngram=True)
    assert after(server_cmdline(model["pid"]), "--spec-type").startswith("ngram")
    text = ", ".join(["the cat sat on the mat"] * 4) + ","
    timings = ask(daemon, text, max_tokens=24)["timings"]
    assert timings["draft_tokens"] > 0 and timings["draft_accepted"] >= 0 and timings["acceptance_rate"] is not None, timings


@pytest.mark.model
def test_a_draft_with_another_vocabulary_is_refused_before_loading(daemon: DaemonProcess, tmp_path: Path) -> None:
    other = write_tiny_llama(tmp_path / "tiny.gguf")
    with daemon.connect() as conn:
        assert "result" in conn.call("models.import", {"path": str(other), "name": "tiny-draft"})
        conn.call("models.unload", {"model": MODEL})
        err = conn.call("models.load", {"model": MODEL, "draft": "tiny-draft"})["error"]
        loaded = conn.call("models.loaded")["result"]["models"]
    assert err["data"]["name"] == "InvalidParams" and err["data"]["field"] == "draft", err
    assert "another vocabulary" in err["message"], err["message"]
    assert not loaded  # nothing was started


@pytest.mark.model
def test_the_configuration_sets_the_default_kv_type_and_flash_attn(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path, config='kv_cache_type = "q4_0"\nflash_attn = "on"\n').start()
    try:
        model = load(d)
        cmd = server_cmdline(model["pid"])
        assert after(cmd, "--cache-type-v") == "q4_0" and after(cmd, "--flash-attn") == "on"
        assert model["estimate"]["kv_cache_bytes"] == 4 * 8192 * 30 * 192 * 2 * 18 // 32
    finally:
        d.stop()


@pytest.mark.model
def test_a_reload_after_a_crash_or_an_unload_keeps_the_options_last_asked_for(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path).start()
    try:
        first = load(d, kv_type="q8_0", flash_attn="on")
        worker = psutil.Process(first["pid"])
        worker.kill()  # the worker dies; once the daemon has seen it go, the next request loads the model again
        worker.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with d.connect() as conn:
                if first["pid"] not in [m["pid"] for m in conn.call("models.loaded")["result"]["models"]]:
                    break
            time.sleep(0.1)
        assert ask(d, "The capital of France is")["usage"]["completion_tokens"] > 0
        with d.connect() as conn:
            [again] = [m for m in conn.call("models.loaded")["result"]["models"] if m["name"] == MODEL]
            assert again["pid"] != first["pid"] and (again["engine"]["kv_type"], again["engine"]["flash_attn"]) == ("q8_0", "on"), again["engine"]
            assert "result" in conn.call("models.unload", {"model": MODEL})
        plain = load(d)  # no options: the model's last ones
        assert after(server_cmdline(plain["pid"]), "--cache-type-k") == "q8_0"
        assert load(d, kv_type="f16", flash_attn="auto")["engine"]["kv_type"] == "f16"  # asked again: the new ones
    finally:
        d.stop()
