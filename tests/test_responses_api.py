"""OpenAI's Responses API on the shim (stateless), driven by the official ``openai``
package's ``responses.create`` and ``responses.stream``, on the bundled SmolLM2 (MLX)."""

from __future__ import annotations

import json

import openai
import pytest

from helpers import ShimProcess

MODEL = "smollm2-135m"
QUESTION = "What is the capital of France?"


@pytest.fixture
def client(mlx_shim: ShimProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=mlx_shim.url, api_key="unused", max_retries=0, timeout=120)


def test_create_and_stream_agree(client: openai.OpenAI) -> None:
    items = [{"role": "user", "content": [{"type": "input_text", "text": QUESTION}]}]
    reply = client.responses.create(model=MODEL, input=items, max_output_tokens=8, temperature=0)  # type: ignore[arg-type]
    assert reply.object == "response" and reply.id.startswith("resp_") and reply.status in ("completed", "incomplete")
    assert "Paris" in reply.output_text and reply.output[0].role == "assistant"
    assert reply.usage.input_tokens > 5 and 0 < reply.usage.output_tokens <= 8
    with client.responses.stream(model=MODEL, input=items, max_output_tokens=8, temperature=0) as stream:  # type: ignore[arg-type]
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
    assert kinds[-1] == f"response.{reply.status}"
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) >= 2 and "".join(deltas) == reply.output_text == final.output_text
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_string_input_and_instructions(client: openai.OpenAI) -> None:
    reply = client.responses.create(model=MODEL, instructions="Answer in one word.", input=QUESTION, max_output_tokens=2)
    assert reply.status == "incomplete" and reply.incomplete_details.reason == "max_output_tokens"
    assert reply.usage.output_tokens == 2 and reply.instructions == "Answer in one word."


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"previous_response_id": "resp_123"}, "previous_response_id"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": [{"type": "function", "parameters": {"type": "object"}}]}, "tools[0].name"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"text": {"format": {"type": "xml"}}}, "text.format"),
        ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object", "properties": {"a": {"type": "nope"}}}}}}, "text.format.schema"),
        ({"store": True}, "store"),
    ],
)
def test_unsupported_fields_are_refused_by_name(client: openai.OpenAI, extra: dict, named: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=MODEL, input="hi", max_output_tokens=4, **extra)
    assert err.value.body["param"] == named and err.value.body["message"]  # type: ignore[index]


def test_unknown_model_and_items(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="hi")
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=MODEL, input=[{"type": "computer_call_output", "call_id": "c", "output": {}}])  # type: ignore[list-item]
    assert "computer_call_output" in err.value.message


WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"], "additionalProperties": False},
}


def test_function_call_plain_and_streamed_then_round_trip(client: openai.OpenAI) -> None:
    ask = "What is the weather in Paris?"
    kwargs: dict = dict(model=MODEL, input=ask, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False, max_output_tokens=30, temperature=0)
    reply = client.responses.create(**kwargs)
    calls = [o for o in reply.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].name == "get_weather" and calls[0].call_id.startswith("call_")
    assert set(json.loads(calls[0].arguments)) == {"city"}
    with client.responses.stream(**kwargs) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[2] == "response.output_item.added" and "response.function_call_arguments.done" in kinds and kinds[-1] == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    streamed = [o for o in final.output if o.type == "function_call"][0]
    assert deltas == streamed.arguments == calls[0].arguments
    history = [
        {"role": "user", "content": ask},
        calls[0].model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21 C"},
    ]
    answer = client.responses.create(model=MODEL, input=history, tools=[WEATHER], tool_choice="none", max_output_tokens=10, temperature=0)  # type: ignore[arg-type]
    assert answer.output_text and not [o for o in answer.output if o.type == "function_call"]


def test_text_format_json_schema(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 10}, "big": {"type": "boolean"}},
        "required": ["city", "big"],
        "additionalProperties": False,
    }
    reply = client.responses.create(
        model=MODEL,
        input="Paris as JSON.",
        text={"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}},
        max_output_tokens=30,
        temperature=0,
    )
    assert reply.status == "completed" and reply.text.format.type == "json_schema"
    value = json.loads(reply.output_text)
    assert set(value) == {"city", "big"} and isinstance(value["big"], bool) and len(value["city"]) <= 10


def test_parallel_function_calls_are_items_of_their_own(client: openai.OpenAI) -> None:
    """Several calls: one function_call item each, plain and streamed (each item
    added with its call id and name, then its own argument deltas)."""
    kwargs: dict = dict(model=MODEL, input="What is the weather in Paris and in Rome?", tools=[WEATHER], tool_choice="required", max_output_tokens=60, temperature=0)
    reply = client.responses.create(**kwargs)
    calls = [o for o in reply.output if o.type == "function_call"]
    assert len(calls) >= 2 and [json.loads(c.arguments)["city"] for c in calls[:2]] == ["Paris", "Rome"], reply.output
    with client.responses.stream(**kwargs) as stream:
        events = list(stream)
    added = [e for e in events if e.type == "response.output_item.added" and e.item.type == "function_call"]
    assert len(added) == len(calls) and len({e.output_index for e in added}) == len(added)
    for event, call in zip(added, calls, strict=True):
        assert event.item.name == "get_weather" and event.item.call_id.startswith("call_")
        deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta" and e.output_index == event.output_index)
        assert deltas == call.arguments
