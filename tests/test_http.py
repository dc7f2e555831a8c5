"""The OpenAI-compatible shim, driven by the official ``openai`` package.

A real ``impetusctl http`` process in front of a real daemon; generation runs on
the bundled SmolLM2 in a real MLX worker (prompts short, outputs a few tokens),
and on the echo test backend where a test needs a backend that lacks something.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import DaemonProcess, ShimProcess, wait_until

MODEL = "smollm2-135m"
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def shim(mlx_shim: ShimProcess) -> ShimProcess:
    # On MLX, as these expectations were written (GGUF runs on llama.cpp by default here)
    return mlx_shim


@pytest.fixture(scope="module")
def keyed_shim(shared_daemon: DaemonProcess):
    s = ShimProcess(shared_daemon, "--api-key", "s3cret", "--allow-origin", "http://app.example").start()
    yield s
    s.stop()


@pytest.fixture
def client(shim: ShimProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=shim.url, api_key="unused", max_retries=0, timeout=120)


@pytest.fixture
async def aclient(shim: ShimProcess):
    async with openai.AsyncOpenAI(base_url=shim.url, api_key="unused", max_retries=0, timeout=120) as ac:
        yield ac


def metrics(base: str, **headers: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{base}/metrics", headers=headers).raise_for_status().text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def in_flight(daemon: DaemonProcess) -> int:
    with daemon.connect() as conn:
        return conn.call("daemon.health")["result"]["in_flight"]


# --- models -------------------------------------------------------------------------
def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert MODEL in ids
    card = client.models.retrieve(MODEL)
    assert card.id == MODEL and card.object == "model" and card.owned_by == "impetus"
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("no-such-model")
    assert err.value.code == "model_not_found"


# --- chat ---------------------------------------------------------------------------
def test_chat_answers_with_openai_shapes(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": [{"type": "text", "text": QUESTION}]}],
        max_completion_tokens=12,
        temperature=0,
    )
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-")
    assert reply.system_fingerprint.startswith("impetus-") and abs(reply.created - time.time()) < 120
    choice = reply.choices[0]
    assert "Paris" in choice.message.content and choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    usage = reply.usage
    assert usage.prompt_tokens > 5 and 0 < usage.completion_tokens <= 12
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # Earlier tests may have asked the same question: its prefix then comes from the prompt cache.
    assert 0 <= usage.prompt_tokens_details.cached_tokens < usage.prompt_tokens
    ext = reply.model_extra["impetus"]
    assert ext["backend"] == "mlx" and ext["timings"]["ttft_ms"] > 0 and ext["timings"]["total_ms"] >= ext["timings"]["ttft_ms"]


@pytest.mark.anyio
async def test_async_stream_matches_the_plain_answer(client: openai.OpenAI, aclient: openai.AsyncOpenAI) -> None:
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": QUESTION}]
    plain = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, temperature=0)
    stream = await aclient.chat.completions.create(
        model=MODEL, messages=messages, max_tokens=8, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert sum(1 for p in pieces if p) >= 2  # really streamed, not one blob
    assert "".join(pieces) == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    assert all(c.id == chunks[0].id and c.object == "chat.completion.chunk" for c in chunks)
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens == plain.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


@pytest.mark.anyio
async def test_async_chat_with_penalties(aclient: openai.AsyncOpenAI) -> None:
    reply = await aclient.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hi"}], max_tokens=4,
        presence_penalty=1.0, frequency_penalty=0.5, logit_bias={"28": -100}, seed=3,
    )
    assert reply.choices[0].message.content and reply.usage.completion_tokens <= 4


# --- completions --------------------------------------------------------------------
def test_completions_plain_and_streamed(client: openai.OpenAI) -> None:
    plain = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=4, temperature=0)
    assert plain.object == "text_completion" and plain.id.startswith("cmpl-")
    assert "Paris" in plain.choices[0].text
    stream = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=4, temperature=0, stream=True)
    text = "".join(c.choices[0].text for c in stream)
    assert text == plain.choices[0].text


# --- embeddings ---------------------------------------------------------------------
@pytest.mark.anyio
async def test_embeddings_float_and_base64(client: openai.OpenAI, aclient: openai.AsyncOpenAI) -> None:
    texts = ["Paris is in France", "The capital of France", "bananas are yellow"]
    default = client.embeddings.create(model=MODEL, input=texts)  # the client asks for base64
    floats = await aclient.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    vectors = [d.embedding for d in floats.data]
    assert [d.index for d in floats.data] == [0, 1, 2] and floats.usage.prompt_tokens > 3
    assert len({len(v) for v in vectors}) == 1 and len(vectors[0]) == 576
    for got, want in zip((d.embedding for d in default.data), vectors):
        assert max(abs(a - b) for a, b in zip(got, want)) < 1e-6
    norms = [math.sqrt(sum(x * x for x in v)) for v in vectors]
    assert all(abs(n - 1) < 1e-4 for n in norms)
    cos = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    assert cos(vectors[0], vectors[1]) > cos(vectors[0], vectors[2])
    raw = httpx.post(f"{client.base_url}embeddings", json={"model": MODEL, "input": "x", "encoding_format": "base64"}).json()
    packed = base64.b64decode(raw["data"][0]["embedding"])
    assert len(packed) == 576 * 4 and struct.unpack("<f", packed[:4])[0] == pytest.approx(raw_first(client))


def raw_first(client: openai.OpenAI) -> float:
    return client.embeddings.create(model=MODEL, input="x", encoding_format="float").data[0].embedding[0]


def test_embeddings_from_a_backend_that_cannot(client: openai.OpenAI, echo_model: Path) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.embeddings.create(model=str(echo_model), input="hello")
    assert "cannot make embeddings" in err.value.message and err.value.code == "unsupported_parameter"


# --- errors ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 9}, "n"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"functions": [{"name": "f", "parameters": {}}]}, "functions"),
        ({"reasoning_effort": "high"}, "reasoning_effort"),
        ({"response_format": {"type": "xml"}}, "response_format"),
        ({"extra_body": {"mirostat": 2}}, "mirostat"),
        ({"temperature": 7.0}, "temperature"),
    ],
)
def test_parameters_that_cannot_be_honoured_are_refused_by_name(client: openai.OpenAI, extra: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2, **extra)
    assert err.value.param == param and err.value.status_code == 400


def test_backend_capabilities_reach_the_client(client: openai.OpenAI, echo_model: Path) -> None:
    # The echo backend has no seed: the daemon's typed UnsupportedParameter becomes a 400.
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=str(echo_model), messages=[{"role": "user", "content": "hi"}], seed=1)
    assert err.value.param == "seed" and err.value.code == "unsupported_parameter"
    reply = client.chat.completions.create(model=str(echo_model), messages=[{"role": "user", "content": "one two three"}])
    assert reply.choices[0].message.content == "one two three"


def test_image_parts_are_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]
        )
    assert err.value.param == "messages[0].content[0]"


def test_unknown_model(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}], stream=True)
    assert err.value.code == "model_not_found" and err.value.param == "model"


@pytest.mark.parametrize("backend", ["echo", "mlx"])
def test_abandoned_stream_cancels_the_daemon_request(shim: ShimProcess, client: openai.OpenAI, slow_echo_model: Path, backend: str) -> None:
    if backend == "echo":  # 0.2 s a word: 12 s if nobody stops it
        model, name, content = str(slow_echo_model), str(slow_echo_model.resolve()), " ".join(f"w{i}" for i in range(60))
    else:  # the bundled model asked for 300 tokens: ~30 s if nobody stops it
        model, name, content = MODEL, MODEL, "Tell me a long story."
    before = metrics(shim.base)
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": content}], stream=True, max_tokens=300)
    got = []
    for chunk in stream:
        got.append(chunk.choices[0].delta.content)
        if len(got) == 3:
            break
    assert in_flight(shim.daemon) == 1
    stream.close()
    started = time.monotonic()
    assert wait_until(lambda: in_flight(shim.daemon) == 0, 5)
    assert time.monotonic() - started < 2
    key = ("impetus_requests_total", (("method", "chat"), ("model", name), ("outcome", "cancelled")))
    assert wait_until(lambda: metrics(shim.base).get(key, 0) == before.get(key, 0) + 1, 5)


def test_client_giving_up_on_a_plain_request_cancels_it(shim: ShimProcess, slow_echo_model: Path) -> None:
    words = " ".join(f"w{i}" for i in range(60))
    body = {"model": str(slow_echo_model), "messages": [{"role": "user", "content": words}]}
    key = ("impetus_requests_total", (("method", "chat"), ("model", str(slow_echo_model.resolve())), ("outcome", "cancelled")))
    before = metrics(shim.base).get(key, 0)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{shim.url}/chat/completions", json=body, timeout=1.5)
    started = time.monotonic()
    assert wait_until(lambda: in_flight(shim.daemon) == 0, 5)
    assert time.monotonic() - started < 2  # not the 12 s the whole answer takes
    assert wait_until(lambda: metrics(shim.base).get(key, 0) == before + 1, 5)


def test_worker_crash_mid_stream_reaches_the_client(shim: ShimProcess, client: openai.OpenAI, tmp_path: Path) -> None:
    model = tmp_path / "doomed.echo"
    model.write_text("0.2")
    stream = client.chat.completions.create(model=str(model), messages=[{"role": "user", "content": "a b c d e f g h i j"}], stream=True)
    chunks = iter(stream)
    next(chunks), next(chunks)
    with shim.daemon.connect() as conn:
        [pid] = [m["pid"] for m in conn.call("models.loaded")["result"]["models"] if m["name"] == str(model.resolve())]
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(openai.APIError) as err:
        for _ in chunks:
            pass
    assert "WorkerCrashed" in err.value.message and "SIGKILL" in err.value.message
    assert err.value.code == "worker_crashed"


# --- security ---------------------------------------------------------------------
def test_api_key_is_required_when_set(keyed_shim: ShimProcess) -> None:
    wrong = openai.OpenAI(base_url=keyed_shim.url, api_key="guess", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        wrong.models.list()
    assert err.value.code == "invalid_api_key"
    right = openai.OpenAI(base_url=keyed_shim.url, api_key="s3cret", max_retries=0)
    assert MODEL in [m.id for m in right.models.list()]
    assert httpx.get(f"{keyed_shim.base}/metrics").status_code == 401
    assert httpx.get(f"{keyed_shim.base}/metrics", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert httpx.get(f"{keyed_shim.base}/health").status_code == 200  # probes need no key


def test_host_header_must_be_a_loopback_name(shim: ShimProcess) -> None:
    assert httpx.get(f"{shim.base}/health", headers={"Host": "attacker.example"}).status_code == 400
    assert httpx.get(f"{shim.base}/health", headers={"Host": f"localhost:{shim.port}"}).status_code == 200


def test_cors_only_for_origins_given(shim: ShimProcess, keyed_shim: ShimProcess) -> None:
    pre = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in httpx.options(f"{shim.url}/chat/completions", headers=pre).headers
    allowed = httpx.options(f"{keyed_shim.url}/chat/completions", headers=pre)
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "http://app.example"
    other = httpx.options(f"{keyed_shim.url}/chat/completions", headers={**pre, "Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_cross_site_requests_are_refused(shim: ShimProcess, keyed_shim: ShimProcess, client: openai.OpenAI) -> None:
    """What any web page can make a browser send (a "simple" request: text/plain,
    no preflight) must not run a generation or pin a model."""
    body = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1, "keep_alive": -1})
    def served() -> float:
        return sum(v for (name, labels), v in metrics(shim.base).items() if name == "impetus_requests_total" and ("model", MODEL) in labels)

    before = served()
    evil = httpx.post(f"{shim.url}/chat/completions", content=body, headers={"Origin": "http://evil.example", "Content-Type": "text/plain"})
    assert evil.status_code == 403 and evil.json()["error"]["code"] == "cross_origin_request", evil.text
    as_json = httpx.post(f"{shim.url}/chat/completions", content=body, headers={"Origin": "http://evil.example", "Content-Type": "application/json"})
    assert as_json.status_code == 403
    null = httpx.post(f"{shim.url}/embeddings", json={"model": MODEL, "input": "x"}, headers={"Origin": "null"})
    assert null.status_code == 403
    plain = httpx.post(f"{shim.url}/chat/completions", content=body, headers={"Content-Type": "text/plain"})
    assert plain.status_code == 415 and plain.json()["error"]["code"] == "unsupported_media_type", plain.text
    form = httpx.post(f"{shim.url}/completions", data={"model": MODEL, "prompt": "x"})
    assert form.status_code == 415
    assert served() == before  # nothing reached the daemon
    # what may: the shim's own origin, an --allow-origin one, JSON without an Origin, and GETs
    own = httpx.post(f"{shim.url}/embeddings", json={"model": MODEL, "input": "x"}, headers={"Origin": shim.base})
    assert own.status_code == 200, own.text
    allowed = httpx.post(
        f"{keyed_shim.url}/embeddings",
        json={"model": MODEL, "input": "x"},
        headers={"Origin": "http://app.example", "Authorization": "Bearer s3cret", "Content-Type": "application/json; charset=utf-8"},
    )
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == "http://app.example"
    assert httpx.get(f"{shim.url}/models", headers={"Origin": "http://evil.example"}).status_code == 200
    reply = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=1)
    assert reply.choices[0].finish_reason in ("length", "stop")


def test_bearer_scheme_is_case_insensitive(keyed_shim: ShimProcess) -> None:
    for scheme in ("bearer", "BEARER", "Bearer"):
        got = httpx.get(f"{keyed_shim.url}/models", headers={"Authorization": f"{scheme} s3cret"})
        assert got.status_code == 200, (scheme, got.text)
    assert httpx.get(f"{keyed_shim.url}/models", headers={"Authorization": "Basic s3cret"}).status_code == 401
    assert httpx.get(f"{keyed_shim.url}/models", headers={"Authorization": "bearer wrong"}).status_code == 401


def test_exposing_beyond_loopback_needs_a_key(shared_daemon: DaemonProcess) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "impetusctl", "--no-autostart", "http", "--host", "0.0.0.0", "--port", "0"],
        env=shared_daemon.env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 2 and "--api-key" in done.stderr


# --- metrics -----------------------------------------------------------------------
def test_metrics_parse_and_move(shim: ShimProcess, client: openai.OpenAI, echo_model: Path) -> None:
    name = str(echo_model.resolve())
    before = metrics(shim.base)
    client.chat.completions.create(model=str(echo_model), messages=[{"role": "user", "content": "a b c d"}], max_tokens=3)
    after = metrics(shim.base)

    def moved(metric: str, **labels: str) -> float:
        key = (metric, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert moved("impetus_requests_total", model=name, method="chat", outcome="length") == 1
    assert moved("impetus_completion_tokens_total", model=name) == 3
    assert moved("impetus_prompt_tokens_total", model=name) == 4
    assert moved("impetus_time_to_first_token_seconds_count", model=name) == 1
    assert moved("impetus_http_requests_total", route="/v1/chat/completions", method="POST", status="200") == 1
    assert after[("impetus_up", ())] == 1
    assert after[("impetus_model_loaded", (("backend", "mlx"), ("model", MODEL)))] == 1
    assert after[("impetus_model_memory_bytes", (("backend", "mlx"), ("model", MODEL)))] > 50e6
    assert ("impetus_worker_restarts_total", (("model", MODEL),)) in after


# --- the README's examples ------------------------------------------------------
def test_readme_curl_examples_work_as_written(shim: ShimProcess) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    commands = re.findall(r"```sh\n(curl [^\n]+)\n```", readme)
    assert len(commands) >= 6
    for command in commands:
        # Only the port differs (the test shim runs on a free one); --fail makes HTTP errors fail.
        run = command.replace("localhost:8080", f"localhost:{shim.port}").replace("curl ", "curl --fail --max-time 120 ", 1)
        done = subprocess.run(["bash", "-c", run], capture_output=True, text=True, timeout=150)
        assert done.returncode == 0, (command, done.stderr)
        if '"stream": true' in command:
            assert done.stdout.rstrip().endswith("data: [DONE]") and '"usage":{"prompt_tokens"' in done.stdout
        elif command.endswith("/metrics"):
            assert "impetus_requests_total{" in done.stdout
        else:
            body = json.loads(done.stdout)
            assert "error" not in body and body.get("data") or body.get("choices"), body


def test_keep_alive_requests_are_not_held_back(shim: ShimProcess) -> None:
    # Without TCP_NODELAY on accepted connections, each response on a reused
    # connection waited ~40 ms for a delayed ACK.
    with httpx.Client() as http:
        took = []
        for _ in range(15):
            started = time.perf_counter()
            http.get(f"{shim.base}/health").raise_for_status()
            took.append(time.perf_counter() - started)
    assert sorted(took)[len(took) // 2] < 0.02, took
