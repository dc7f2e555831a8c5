"""Ollama's native API on the shim, driven by the official ``ollama`` package.

A real ``impetusctl http`` in front of a real daemon: generation on the bundled
SmolLM2 (MLX worker, a few tokens), pulls from the loopback test Hub.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import ollama
import pytest

from fake_hub import FakeHub
from gguf_factory import write_tiny_llama
from helpers import DaemonProcess, ShimProcess

MODEL = "smollm2-135m"
TAGGED = "smollm2-135m:latest"
QUESTION = "What is the capital of France?"


@pytest.fixture
def client(mlx_shim: ShimProcess) -> ollama.Client:
    return ollama.Client(host=mlx_shim.base, timeout=120)


def test_chat_plain_and_streamed_agree(client: ollama.Client) -> None:
    messages = [{"role": "user", "content": QUESTION}]
    options = {"num_predict": 8, "temperature": 0, "top_k": 40, "top_p": 0.9, "seed": 3, "repeat_penalty": 1.0}
    plain = client.chat(model=TAGGED, messages=messages, options=options)
    assert plain.done and plain.done_reason in ("stop", "length") and plain.message.role == "assistant"
    assert "Paris" in plain.message.content
    assert plain.prompt_eval_count > 5 and 0 < plain.eval_count <= 8
    assert plain.total_duration >= plain.eval_duration > 0 and plain.prompt_eval_duration > 0 and plain.load_duration >= 0
    assert plain.model == TAGGED
    parts = list(client.chat(model=MODEL, messages=messages, options=options, stream=True))
    assert sum(1 for p in parts if p.message.content) >= 2 and all(not p.done for p in parts[:-1])
    last = parts[-1]
    assert last.done and last.done_reason == plain.done_reason and last.eval_count == plain.eval_count
    assert "".join(p.message.content for p in parts) == plain.message.content


def test_generate_plain_streamed_and_raw(client: ollama.Client) -> None:
    plain = client.generate(model=TAGGED, prompt=QUESTION, system="Answer briefly.", options={"num_predict": 6, "temperature": 0})
    assert plain.done and plain.response and plain.eval_count <= 6
    parts = list(client.generate(model=TAGGED, prompt=QUESTION, system="Answer briefly.", options={"num_predict": 6, "temperature": 0}, stream=True))
    assert "".join(p.response for p in parts) == plain.response and parts[-1].done
    raw = client.generate(model=TAGGED, prompt="The capital of France is", raw=True, options={"num_predict": 3, "temperature": 0, "stop": ["\n"]})
    assert "Paris" in raw.response


def test_streaming_is_the_default_without_the_client(mlx_shim: ShimProcess) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "options": {"num_predict": 3}}
    with httpx.stream("POST", f"{mlx_shim.base}/api/chat", json=body, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
        lines = [line for line in r.iter_lines() if line]
    assert len(lines) >= 2 and '"done":true' in lines[-1]


def test_embed_and_legacy_embeddings(client: ollama.Client) -> None:
    got = client.embed(model=TAGGED, input=["a cat", "a dog"])
    assert len(got.embeddings) == 2 and len(got.embeddings[0]) > 100 and got.prompt_eval_count > 0
    legacy = client.embeddings(model=MODEL, prompt="a cat")
    assert legacy.embedding == pytest.approx(got.embeddings[0], abs=1e-4)


def test_list_ps_show(client: ollama.Client, mlx_shim: ShimProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{mlx_shim.port}")  # how Ollama's clients find a server
    names = [m.model for m in ollama.Client().list().models]
    assert TAGGED in names
    running = {m.model: m for m in client.ps().models}
    assert TAGGED in running and running[TAGGED].size > 0
    shown = client.show(TAGGED)
    assert shown.details.format == "gguf" and shown.modelfile
    with pytest.raises(ollama.ResponseError) as err:
        client.show("no-such-model:latest")
    assert err.value.status_code == 404


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"format": {"type": "object", "properties": {"a": {"type": "nope"}}}}, "format"),
        ({"tools": [{"type": "code", "function": {"name": "f"}}]}, "tools[0].type"),
        ({"think": "high"}, "think"),
        ({"think": True}, "think"),  # SmolLM2's template cannot switch reasoning: refused by name
        ({"options": {"mirostat": 2}}, "mirostat"),
        ({"options": {"num_ctx": 8192}}, "num_ctx"),
    ],
)
def test_unsupported_fields_are_refused_by_name(client: ollama.Client, extra: dict, named: str) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model=MODEL, messages=[{"role": "user", "content": "hi"}], **extra)
    assert err.value.status_code == 400 and named in err.value.error


def test_unknown_model_is_404(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 404 and "not found" in err.value.error


def test_keep_alive_zero_unloads(client: ollama.Client, echo_model: Path) -> None:
    name = str(echo_model)
    loaded = client.generate(model=name, prompt="", keep_alive="5m")
    assert loaded.done_reason == "load" and any(m.model == f"{name}:latest" for m in client.ps().models)
    gone = client.generate(model=name, prompt="", keep_alive=0)
    assert gone.done_reason == "unload" and not any(m.model == f"{name}:latest" for m in client.ps().models)


def test_api_key_and_host_checks_cover_the_ollama_routes(shared_daemon: DaemonProcess) -> None:
    s = ShimProcess(shared_daemon, "--api-key", "s3cret").start()
    try:
        with pytest.raises(ollama.ResponseError) as err:
            ollama.Client(host=s.base).list()
        assert err.value.status_code == 401
        assert httpx.get(f"{s.base}/").status_code == 401 and httpx.get(f"{s.base}/health").status_code == 200
        assert MODEL + ":latest" in [m.model for m in ollama.Client(host=s.base, headers={"Authorization": "Bearer s3cret"}).list().models]
        assert httpx.get(f"{s.base}/api/tags", headers={"Authorization": "Bearer s3cret", "Host": "evil.example"}).status_code == 400
    finally:
        s.stop()


# --- pull, copy, delete against the loopback Hub ------------------------------------
@pytest.fixture
def hub():
    with FakeHub() as h:
        yield h


@pytest.fixture
def hub_shim(hub: FakeHub, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("o")
    d = DaemonProcess(root, IMPETUS_PLUGINS="impetus_echo", HF_ENDPOINT=hub.url, HF_HOME=str(root / "hf"), HF_HUB_DISABLE_TELEMETRY="1")
    d.env.pop("HF_TOKEN", None)
    d.start()
    s = ShimProcess(d).start()
    yield ollama.Client(host=s.base, timeout=120)
    s.stop()
    d.stop()


def test_pull_with_progress_copy_delete(hub: FakeHub, hub_shim: ollama.Client, tmp_path: Path) -> None:
    payload = write_tiny_llama(tmp_path / "t.gguf", "F32").read_bytes()
    hub.add_repo("test/tiny-GGUF", {"tiny-F32.gguf": payload})
    hub.faults.slow("tiny-F32.gguf", max(len(payload) // 2, 1))  # ~2 s: progress has time to move
    updates = list(hub_shim.pull("test/tiny-GGUF", stream=True))
    assert updates[0].status == "pulling manifest" and updates[-1].status == "success"
    downloads = [u for u in updates if u.total]
    assert downloads and downloads[-1].completed == downloads[-1].total == len(payload)
    assert len({u.completed for u in downloads}) >= 2
    assert "test/tiny-GGUF:latest" in [m.model for m in hub_shim.list().models]
    assert hub_shim.pull("test/tiny-GGUF").status == "success"  # again, not streamed: already here
    assert hub_shim.copy("test/tiny-GGUF", "tiny-copy").status == "success"
    assert hub_shim.show("tiny-copy").details.family == "llama"
    assert hub_shim.delete("tiny-copy:latest").status == "success"
    assert "tiny-copy:latest" not in [m.model for m in hub_shim.list().models]
    with pytest.raises(ollama.ResponseError) as err:
        hub_shim.delete("tiny-copy")
    assert err.value.status_code == 404
    with pytest.raises(ollama.ResponseError) as err:
        list(hub_shim.pull("test/absent-GGUF", stream=True))
    assert "not found" in err.value.error  # an error line after the first status line, as Ollama sends


CITY = {
    "type": "object",
    "properties": {"name": {"type": "string", "maxLength": 10}, "capital": {"type": "boolean"}},
    "required": ["name", "capital"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"], "additionalProperties": False},
    },
}


def test_format_schema_and_json(client: ollama.Client) -> None:
    import jsonschema

    reply = client.chat(model=MODEL, messages=[{"role": "user", "content": "Paris as JSON."}], format=CITY, options={"temperature": 0, "num_predict": 30})
    assert reply.done_reason == "stop", reply.message.content
    jsonschema.validate(json.loads(reply.message.content or ""), CITY)
    streamed = "".join(
        p.message.content or ""
        for p in client.chat(
            model=MODEL, messages=[{"role": "user", "content": "Paris as JSON."}], format=CITY, options={"temperature": 0, "num_predict": 30}, stream=True
        )
    )
    assert streamed == reply.message.content
    made = client.generate(model=MODEL, prompt="A JSON object about a dog.", format="json", options={"temperature": 0, "num_predict": 30})
    assert made.response.lstrip().startswith("{")
    if made.done_reason == "stop":
        assert isinstance(json.loads(made.response), dict)


def test_tool_history_round_trip(client: ollama.Client) -> None:
    """An earlier call (arguments as an object) and its result (tool_name) go back to the model."""
    messages = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "sunny, 21 C", "tool_name": "get_weather"},
    ]
    reply = client.chat(model=MODEL, messages=messages, tools=[WEATHER], options={"temperature": 0, "num_predict": 10})
    assert reply.done and reply.message.role == "assistant" and (reply.message.content or reply.message.tool_calls)
    if reply.message.tool_calls:  # a call is in Ollama's shape: arguments as an object
        assert all(isinstance(c.function.arguments, dict) for c in reply.message.tool_calls)


def test_logprobs(mlx_shim: ShimProcess) -> None:
    body = {"model": MODEL, "prompt": "Hi", "stream": False, "logprobs": True, "top_logprobs": 2, "options": {"num_predict": 3, "temperature": 0}}
    done = httpx.post(f"{mlx_shim.base}/api/generate", json=body, timeout=120).json()
    tokens = done["logprobs"]
    assert len(tokens) == done["eval_count"] and "".join(t["token"] for t in tokens) == done["response"]
    assert all(t["logprob"] <= 0 and len(t["top_logprobs"]) == 2 for t in tokens)


def test_bad_format_is_400(mlx_shim: ShimProcess) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "format": "xml", "stream": False}
    r = httpx.post(f"{mlx_shim.base}/api/chat", json=body, timeout=120)
    assert r.status_code == 400 and "format" in r.json()["error"]


def test_parallel_tool_calls_in_one_message(client: ollama.Client) -> None:
    """Several calls in one answer (an example exchange in the history makes this model
    write two): each in Ollama's shape, arguments as an object, in the order written;
    streamed, the same calls arrive whole, and the text matches the plain answer."""
    example = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Bergen"}}\n</tool_call>'
    messages = [
        {"role": "user", "content": "Weather in Oslo and in Bergen?"},
        {"role": "assistant", "content": example},
        {"role": "user", "content": "Weather in Paris and in Rome?"},
    ]
    options = {"temperature": 0, "num_predict": 60}
    plain = client.chat(model=MODEL, messages=messages, tools=[WEATHER], options=options)
    calls = plain.message.tool_calls or []
    assert len(calls) >= 2, plain
    assert all(c.function.name == "get_weather" and isinstance(c.function.arguments, dict) and isinstance(c.function.arguments.get("city"), str) for c in calls)
    assert calls[0].function.arguments == {"city": "Paris"}
    parts = list(client.chat(model=MODEL, messages=messages, tools=[WEATHER], options=options, stream=True))
    streamed = [c for p in parts for c in p.message.tool_calls or []]
    assert [(c.function.name, c.function.arguments) for c in streamed] == [(c.function.name, c.function.arguments) for c in calls]
    assert sum(1 for p in parts if p.message.tool_calls) == 1  # whole, in one object, as Ollama sends them
    assert "".join(p.message.content or "" for p in parts) == plain.message.content
    last = parts[-1]
    assert last.done and last.done_reason == plain.done_reason and last.eval_count == plain.eval_count
    for done in (plain, last):  # the second asks from the prompt cache: its prefill took no 205 tokens' time
        assert done.prompt_eval_duration <= done.total_duration and done.eval_duration <= done.total_duration, done
    raw = httpx.post(f"{client._client.base_url}/api/chat", json={"model": MODEL, "messages": messages, "tools": [WEATHER], "options": options, "stream": False}, timeout=120).json()
    assert [c["function"]["index"] for c in raw["message"]["tool_calls"]] == list(range(len(calls)))
    assert all(isinstance(c["function"]["arguments"], dict) for c in raw["message"]["tool_calls"])
