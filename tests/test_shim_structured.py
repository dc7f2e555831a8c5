"""Structured outputs, tool calling, logprobs and n on /v1/chat/completions and
/v1/completions, driven by the official ``openai`` package, unmodified, in front of a
real daemon and the bundled SmolLM2 on MLX (a few tokens each)."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import openai
import pytest
from pydantic import BaseModel, Field

from helpers import ShimProcess

MODEL = "smollm2-135m"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"], "additionalProperties": False},
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The time in a timezone",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
            "required": ["zone"],
            "additionalProperties": False,
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture
def client(mlx_shim: ShimProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=mlx_shim.url, api_key="unused", max_retries=0, timeout=120)


class City(BaseModel):
    name: str = Field(max_length=10)
    capital: bool
    rank: int = Field(ge=1, le=99)


def test_parse_with_a_pydantic_model(client: openai.OpenAI) -> None:
    done = client.chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": "Describe Paris as JSON."}], response_format=City, max_tokens=40, temperature=0
    )
    choice = done.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    city = choice.message.parsed
    assert isinstance(city, City) and 1 <= city.rank <= 99 and len(city.name) <= 10
    assert City.model_validate_json(choice.message.content or "") == city


def test_json_object_gives_an_object(client: openai.OpenAI) -> None:
    done = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "A JSON object about a cat."}], response_format={"type": "json_object"}, max_tokens=40, temperature=0
    )
    if done.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(done.choices[0].message.content or ""), dict)
    else:  # cut inside the value: length, documented
        assert done.choices[0].finish_reason == "length" and (done.choices[0].message.content or "").lstrip().startswith("{")


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_time"}}])
def test_required_and_named_choices_give_valid_calls(client: openai.OpenAI, choice: Any) -> None:
    done = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER, TIME], tool_choice=choice, parallel_tool_calls=False, max_tokens=40, temperature=0  # type: ignore[list-item,arg-type]
    )
    c = done.choices[0]
    assert c.finish_reason == "tool_calls" and c.message.tool_calls and c.message.content is None
    call = c.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    args = json.loads(call.function.arguments)
    if isinstance(choice, dict):
        assert call.function.name == "get_time" and args["zone"] in ("UTC", "CET") and set(args) == {"zone"}
    else:
        assert call.function.name in ("get_weather", "get_time")
        assert set(args) == ({"city"} if call.function.name == "get_weather" else {"zone"})


def test_streamed_call_assembles_to_the_plain_one(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = dict(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False, max_tokens=40, temperature=0)
    plain = client.chat.completions.create(**kwargs).choices[0].message.tool_calls
    assert plain
    pieces = [c for c in client.chat.completions.create(**kwargs, stream=True) if c.choices]
    deltas = [d for p in pieces for d in p.choices[0].delta.tool_calls or []]
    first = deltas[0]
    assert first.index == 0 and first.id and first.type == "function" and first.function.name == "get_weather" and first.function.arguments == ""
    assert all(d.id is None and d.function.name is None for d in deltas[1:]) and len(deltas) >= 2
    assert "".join(d.function.arguments or "" for d in deltas) == plain[0].function.arguments
    assert pieces[-1].choices[0].finish_reason == "tool_calls"


def test_parallel_calls_plain_and_streamed(client: openai.OpenAI) -> None:
    """Several calls in one answer: one tool_calls entry each, and streamed under
    their own index, each call's first delta with id, type and name before its arguments."""
    two = [{"role": "user", "content": "What is the weather in Paris and in Rome?"}]
    kwargs: dict[str, Any] = dict(model=MODEL, messages=two, tools=[WEATHER], tool_choice="required", max_tokens=60, temperature=0)
    plain = client.chat.completions.create(**kwargs).choices[0]
    calls = plain.message.tool_calls or []
    assert len(calls) >= 2 and [json.loads(c.function.arguments)["city"] for c in calls[:2]] == ["Paris", "Rome"], plain
    assert len({c.id for c in calls}) == len(calls) and all(c.function.name == "get_weather" for c in calls)
    pieces = [c for c in client.chat.completions.create(**kwargs, stream=True) if c.choices]
    deltas = [d for p in pieces for d in p.choices[0].delta.tool_calls or []]
    assert sorted({d.index for d in deltas}) == list(range(len(calls)))
    for i, call in enumerate(calls):
        mine = [d for d in deltas if d.index == i]
        assert mine[0].id and mine[0].type == "function" and mine[0].function.name == call.function.name and mine[0].function.arguments == ""
        assert all(d.id is None and d.function.name is None for d in mine[1:])
        assert "".join(d.function.arguments or "" for d in mine) == call.function.arguments
    assert pieces[-1].choices[0].finish_reason == plain.finish_reason
    one = client.chat.completions.create(**kwargs, parallel_tool_calls=False).choices[0]
    assert one.finish_reason == "tool_calls" and len(one.message.tool_calls or []) == 1


def test_a_full_tool_round_trip(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False, max_tokens=40, temperature=0)
    asked = first.choices[0].message
    assert asked.tool_calls
    call = asked.tool_calls[0]
    history = [*ASK, asked.model_dump(exclude_none=True), {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"sky": "sunny", "celsius": 21})}]
    answer = client.chat.completions.create(model=MODEL, messages=history, tools=[WEATHER], tool_choice="none", max_tokens=12, temperature=0)  # type: ignore[arg-type]
    reply = answer.choices[0]
    assert reply.message.content and not reply.message.tool_calls and reply.finish_reason in ("stop", "length")


def test_logprobs_exactly_n_sorted_and_non_positive(client: openai.OpenAI) -> None:
    done = client.chat.completions.create(model=MODEL, messages=ASK, logprobs=True, top_logprobs=3, max_tokens=5, temperature=0)
    c = done.choices[0]
    assert c.logprobs is not None and c.logprobs.content
    tokens = c.logprobs.content
    assert len(tokens) == done.usage.completion_tokens  # type: ignore[union-attr]
    assert "".join(t.token for t in tokens) == c.message.content
    for t in tokens:
        assert t.logprob <= 0 and len(t.top_logprobs) == 3 and t.bytes == list(t.token.encode())
        tops = [a.logprob for a in t.top_logprobs]
        assert tops == sorted(tops, reverse=True) and all(lp <= 0 for lp in tops)
        assert math.isclose(t.logprob, tops[0], abs_tol=1e-3)  # temperature 0: the most likely token was chosen


def test_completions_logprobs_legacy_shape(client: openai.OpenAI) -> None:
    done = client.completions.create(model=MODEL, prompt="The capital of France is", logprobs=2, max_tokens=4, temperature=0)
    lp = done.choices[0].logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs and lp.text_offset
    assert "".join(lp.tokens) == done.choices[0].text and len(lp.token_logprobs) == len(lp.tokens) == len(lp.top_logprobs)
    assert all(v <= 0 for v in lp.token_logprobs) and all(len(alt) <= 2 for alt in lp.top_logprobs)
    assert lp.text_offset[0] == 0 and lp.text_offset[1] == len(lp.tokens[0])


def test_n_three_choices_plain_and_streamed(client: openai.OpenAI) -> None:
    done = client.chat.completions.create(model=MODEL, messages=ASK, n=3, max_tokens=6, temperature=1.0, seed=1)
    assert [c.index for c in done.choices] == [0, 1, 2] and all(c.message.content for c in done.choices)
    texts: dict[int, str] = {0: "", 1: "", 2: ""}
    ends: dict[int, str | None] = {}
    for chunk in client.chat.completions.create(model=MODEL, messages=ASK, n=3, max_tokens=6, temperature=1.0, seed=1, stream=True):
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
            if c.finish_reason:
                ends[c.index] = c.finish_reason
    assert set(ends) == {0, 1, 2} and all(texts.values())


BAD: list[tuple[dict[str, Any], str]] = [
    (
        {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"type": "nope"}}}}}},
        "response_format.json_schema.schema",
    ),
    ({"response_format": {"type": "xml"}}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, "response_format.json_schema.schema"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [{"type": "code_interpreter"}]}, "tools[0].type"),
    ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools[0].function.name"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"n": 9}, "n"),
    ({"n": 0}, "n"),
    ({"messages": [{"role": "tool", "content": "21"}]}, "messages[0].tool_call_id"),
    (
        {"messages": [{"role": "user", "content": "x", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]},
        "messages[0].tool_calls",
    ),
]


@pytest.mark.parametrize(("extra", "param"), BAD, ids=[p for _, p in BAD])
def test_bad_input_is_400_naming_the_param(mlx_shim: ShimProcess, extra: dict[str, Any], param: str) -> None:
    body = {"model": MODEL, "messages": ASK, "max_tokens": 4, **extra}
    r = httpx.post(f"{mlx_shim.url}/chat/completions", json=body, timeout=120)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["type"] == "invalid_request_error" and err["message"]


def test_bad_completions_logprobs_is_400(mlx_shim: ShimProcess) -> None:
    r = httpx.post(f"{mlx_shim.url}/completions", json={"model": MODEL, "prompt": "x", "logprobs": True}, timeout=120)
    assert r.status_code == 400 and r.json()["error"]["param"] == "logprobs"


THINKING = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


def test_reasoning_reaches_openai_and_ollama(mlx_shim: ShimProcess, client: openai.OpenAI, tmp_path: Any) -> None:
    """A tiny random model whose template switches thinking: with ``think`` and a format the
    reasoning runs free before the answer; each API returns it in its own field, plain and streamed."""
    import ollama
    from gguf_factory import write_tiny_llama

    model = str(write_tiny_llama(tmp_path / "thinker.gguf", chat_template=THINKING))
    with mlx_shim.daemon.connect() as conn:
        assert "result" in conn.call("models.load", {"model": model, "backend": "mlx"})
    try:
        enum = {"enum": ["yes", "no"]}
        kwargs: dict[str, Any] = dict(
            model=model,
            messages=[{"role": "user", "content": "ok?"}],
            max_tokens=8,
            temperature=0,
            response_format={"type": "json_schema", "json_schema": {"name": "yn", "schema": enum}},
            extra_body={"think": True},
        )
        plain = client.chat.completions.create(**kwargs).choices[0].message
        reasoning = (plain.model_extra or {}).get("reasoning_content")
        assert reasoning and reasoning.strip() not in ('"yes"', '"no"') and plain.content in ("", None, '"yes"', '"no"')
        chunks = [c for c in client.chat.completions.create(**kwargs, stream=True) if c.choices]
        assert "".join((c.choices[0].delta.model_extra or {}).get("reasoning_content") or "" for c in chunks) == reasoning
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == (plain.content or "")
        ol = ollama.Client(host=mlx_shim.base, timeout=120)
        said = ol.chat(model=model, messages=[{"role": "user", "content": "ok?"}], format=enum, think=True, options={"temperature": 0, "num_predict": 8})
        assert said.message.thinking == reasoning
        parts = list(ol.chat(model=model, messages=[{"role": "user", "content": "ok?"}], format=enum, think=True, options={"temperature": 0, "num_predict": 8}, stream=True))
        assert "".join(p.message.thinking or "" for p in parts) == reasoning
    finally:
        with mlx_shim.daemon.connect() as conn:
            conn.call("models.unload", {"model": model})


def test_a_call_cut_by_max_tokens_is_text_plain_and_streamed(client: openai.OpenAI) -> None:
    """A forced call that cannot finish comes back as text with a warning, never lost;
    a streaming client gets the same text as a plain one."""
    kwargs: dict[str, Any] = dict(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required", max_tokens=4, temperature=0)
    plain = client.chat.completions.create(**kwargs)
    c = plain.choices[0]
    assert c.finish_reason == "length" and not c.message.tool_calls and (c.message.content or "").startswith("<tool_call>")
    assert "max_tokens" in (plain.model_extra or {})["impetus"]["warning"]
    chunks = [ch for ch in client.chat.completions.create(**kwargs, stream=True) if ch.choices]
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == c.message.content
    assert chunks[-1].choices[0].finish_reason == "length"


def test_streamed_logprobs_match_the_plain_ones(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = dict(model=MODEL, messages=ASK, logprobs=True, top_logprobs=2, max_tokens=5, temperature=0)
    plain = client.chat.completions.create(**kwargs).choices[0].logprobs
    assert plain is not None and plain.content
    chunks = [c for c in client.chat.completions.create(**kwargs, stream=True) if c.choices and c.choices[0].logprobs]
    streamed = [t for c in chunks for t in c.choices[0].logprobs.content or []]  # type: ignore[union-attr]
    assert [t.token for t in streamed] == [t.token for t in plain.content]
    assert all(math.isclose(a.logprob, b.logprob, abs_tol=1e-3) and len(a.top_logprobs) == 2 for a, b in zip(streamed, plain.content, strict=True))
