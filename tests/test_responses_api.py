"""OpenAI's Responses API on the shim (stateless), driven by the official ``openai``
package's ``responses.create`` and ``responses.stream``, on the bundled SmolLM2 (MLX)."""

from __future__ import annotations

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
        ({"tools": [{"type": "function", "name": "f", "parameters": {"type": "object", "properties": {}}}]}, "tools"),
        ({"text": {"format": {"type": "json_object"}}}, "text.format"),
        ({"store": True}, "store"),
    ],
)
def test_unsupported_fields_are_refused_by_name(client: openai.OpenAI, extra: dict, named: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=MODEL, input="hi", max_output_tokens=4, **extra)
    assert err.value.body["param"] == named and named in err.value.body["message"]  # type: ignore[index]


def test_unknown_model_and_items(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="no-such-model", input="hi")
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=MODEL, input=[{"type": "function_call_output", "call_id": "c", "output": "1"}])  # type: ignore[list-item]
    assert "function_call_output" in err.value.message
