"""Anthropic's Messages API on the shim, driven by the official ``anthropic`` package,
in front of a real daemon and the bundled SmolLM2 (MLX, a few tokens)."""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest

from helpers import DaemonProcess, ShimProcess

MODEL = "smollm2-135m"
QUESTION = "What is the capital of France?"


@pytest.fixture
def client(mlx_shim: ShimProcess) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=mlx_shim.base, api_key="unused", max_retries=0, timeout=120)


def test_create_and_stream_agree(client: anthropic.Anthropic) -> None:
    kwargs = dict(
        model=MODEL,
        max_tokens=8,
        extra_body={"temperature": 0},
        system=[{"type": "text", "text": "Answer briefly."}],
        messages=[{"role": "user", "content": QUESTION}],
    )
    reply = client.messages.create(**kwargs)  # type: ignore[arg-type]
    assert reply.type == "message" and reply.role == "assistant" and reply.id.startswith("msg_")
    assert reply.content[0].type == "text" and reply.content[0].text
    assert reply.stop_reason in ("end_turn", "max_tokens") and reply.stop_sequence is None
    assert reply.usage.input_tokens > 5 and 0 < reply.usage.output_tokens <= 8
    with client.messages.stream(**kwargs) as stream:  # type: ignore[arg-type]
        deltas = [e.delta.text for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    assert len([d for d in deltas if d]) >= 2 and "".join(deltas) == reply.content[0].text
    assert final.content[0].text == reply.content[0].text and final.stop_reason == reply.stop_reason
    assert final.usage.input_tokens == reply.usage.input_tokens and final.usage.output_tokens == reply.usage.output_tokens


def test_raw_event_sequence(mlx_shim: ShimProcess) -> None:
    body = {"model": MODEL, "max_tokens": 3, "stream": True, "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]}
    with httpx.stream("POST", f"{mlx_shim.base}/v1/messages", json=body, timeout=120) as r:
        names = [line.removeprefix("event: ") for line in r.iter_lines() if line.startswith("event: ")]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}


def test_stop_sequence_and_max_tokens(client: anthropic.Anthropic) -> None:
    messages = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    stopped = client.messages.create(model=MODEL, max_tokens=30, messages=messages, stop_sequences=["4"], extra_body={"temperature": 0})  # type: ignore[arg-type]
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "4" and "4" not in stopped.content[0].text
    cut = client.messages.create(model=MODEL, max_tokens=2, messages=messages)  # type: ignore[arg-type]
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 2


def test_count_tokens_matches_the_prompt(client: anthropic.Anthropic) -> None:
    messages = [{"role": "user", "content": QUESTION}]
    counted = client.messages.count_tokens(model=MODEL, system="Answer briefly.", messages=messages)  # type: ignore[arg-type]
    reply = client.messages.create(model=MODEL, max_tokens=1, system="Answer briefly.", messages=messages)  # type: ignore[arg-type]
    assert counted.input_tokens == reply.usage.input_tokens > 5


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools[0]"),
        ({"tools": [{"name": "f"}]}, "input_schema"),
        ({"tools": [{"name": "f", "input_schema": {"type": "object"}}], "tool_choice": {"type": "tool", "name": "g"}}, "tool_choice"),
        ({"thinking": {"type": "enabled", "budget_tokens": 1024}}, "think"),  # SmolLM2's template cannot switch reasoning
        ({"output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}}, "output_config"),
        ({"messages": [{"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "x", "content": "1"}]}]}, "tool_result"),
        ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}}]}]}, "image"),
    ],
)
def test_unsupported_fields_are_refused_by_name(client: anthropic.Anthropic, extra: dict, named: str) -> None:
    kwargs = {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}], **extra}
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(**kwargs)
    assert err.value.body["type"] == "error" and err.value.body["error"]["type"] == "invalid_request_error"
    assert named in err.value.body["error"]["message"]


def test_errors_in_anthropic_shape(mlx_shim: ShimProcess, client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as err:
        client.messages.create(model="no-such-model", max_tokens=4, messages=[{"role": "user", "content": "hi"}])
    assert err.value.body["error"]["type"] == "not_found_error"
    missing = httpx.post(f"{mlx_shim.base}/v1/messages", json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
    assert missing.status_code == 400 and "max_tokens" in missing.json()["error"]["message"]


def test_x_api_key_is_the_key(shared_daemon: DaemonProcess) -> None:
    s = ShimProcess(shared_daemon, "--api-key", "s3cret").start()
    try:
        with pytest.raises(anthropic.AuthenticationError):
            anthropic.Anthropic(base_url=s.base, api_key="wrong", max_retries=0).messages.count_tokens(
                model=MODEL, messages=[{"role": "user", "content": "hi"}]
            )
        ok = anthropic.Anthropic(base_url=s.base, api_key="s3cret", max_retries=0).messages.count_tokens(
            model=MODEL, messages=[{"role": "user", "content": "hi"}]
        )
        assert ok.input_tokens > 0
    finally:
        s.stop()


WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"], "additionalProperties": False},
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def test_tool_use_plain_streamed_and_round_trip(client: anthropic.Anthropic) -> None:
    kwargs: dict = dict(
        model=MODEL, max_tokens=30, messages=ASK, tools=[WEATHER], tool_choice={"type": "tool", "name": "get_weather"}, extra_body={"temperature": 0}
    )
    reply = client.messages.create(**kwargs)
    uses = [b for b in reply.content if b.type == "tool_use"]
    assert reply.stop_reason == "tool_use" and len(uses) == 1 and uses[0].name == "get_weather" and set(uses[0].input) == {"city"}
    with client.messages.stream(**kwargs) as stream:
        events = list(stream)
        final = stream.get_final_message()
    partial = "".join(e.delta.partial_json for e in events if e.type == "content_block_delta" and e.delta.type == "input_json_delta")
    streamed = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and streamed[0].input == uses[0].input and json.loads(partial) == uses[0].input
    history = [
        *ASK,
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in reply.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": uses[0].id, "content": "sunny, 21 C"}]},
    ]
    answer = client.messages.create(model=MODEL, max_tokens=10, messages=history, tools=[WEATHER], tool_choice={"type": "none"}, extra_body={"temperature": 0})  # type: ignore[arg-type]
    assert answer.stop_reason in ("end_turn", "max_tokens") and answer.content[0].type == "text" and answer.content[0].text


def test_several_tool_use_blocks_plain_and_streamed(client: anthropic.Anthropic) -> None:
    """``any`` with parallel use: one tool_use block per call, each streamed as its own
    content block (start with id and name, then its input_json_delta pieces)."""
    two = [{"role": "user", "content": "What is the weather in Paris and in Rome?"}]
    kwargs: dict = dict(model=MODEL, max_tokens=60, messages=two, tools=[WEATHER], tool_choice={"type": "any"}, extra_body={"temperature": 0})
    reply = client.messages.create(**kwargs)
    uses = [b for b in reply.content if b.type == "tool_use"]
    assert len(uses) >= 2 and [u.input["city"] for u in uses[:2]] == ["Paris", "Rome"], reply
    with client.messages.stream(**kwargs) as stream:
        events = list(stream)
    starts = [e for e in events if e.type == "content_block_start" and e.content_block.type == "tool_use"]
    assert [s.content_block.id for s in starts] and len(starts) == len(uses)
    for start, use in zip(starts, uses, strict=True):
        assert start.content_block.name == "get_weather"
        partial = "".join(e.delta.partial_json for e in events if e.type == "content_block_delta" and e.index == start.index and e.delta.type == "input_json_delta")
        assert json.loads(partial) == use.input
    assert len({s.index for s in starts}) == len(starts)
    single = client.messages.create(**{**kwargs, "tool_choice": {"type": "any", "disable_parallel_tool_use": True}})
    assert single.stop_reason == "tool_use" and len([b for b in single.content if b.type == "tool_use"]) == 1
