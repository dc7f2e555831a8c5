"""Structured output, tool calls, logprobs and n through a real daemon, real workers and
the bundled SmolLM2-135M on both engines (MLX; llama-server on its GGUF): what comes
back validates, the calls parse, and bad input is refused by name before a worker runs."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from helpers import DaemonProcess

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from schemas import SCHEMAS  # noqa: E402

pytestmark = pytest.mark.model
MODEL = "smollm2-135m"
ASK = [{"role": "user", "content": "Answer in JSON."}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"], "additionalProperties": False},
    },
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}, "additionalProperties": False}}}


@pytest.fixture(scope="module", params=["mlx", "llamacpp"])
def engine(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DaemonProcess, str]]:
    d = DaemonProcess(tmp_path_factory.mktemp(f"structured-{request.param}")).start()
    with d.connect() as conn:
        assert "result" in conn.call("models.load", {"model": MODEL, "backend": request.param, "keep_alive": -1})
    yield d, request.param
    d.stop()


def chat(d: DaemonProcess, **params: Any) -> dict[str, Any]:
    with d.connect() as conn:
        reply = conn.call("chat", {"model": MODEL, "messages": ASK, "max_tokens": 40, "temperature": 0, **params})
    assert "result" in reply, reply
    return reply["result"]


def error(d: DaemonProcess, method: str = "chat", **params: Any) -> dict[str, Any]:
    with d.connect() as conn:
        reply = conn.call(method, {"model": MODEL, "messages": ASK, "max_tokens": 8, **params})
    assert "error" in reply, reply
    return reply["error"]


@pytest.mark.parametrize("name", ["nested", "ref", "array_bounds", "any_of", "pattern"])
def test_json_schema_outputs_validate(engine: tuple[DaemonProcess, str], name: str) -> None:
    d, _ = engine
    schema = SCHEMAS[name]
    result = chat(d, format={"type": "json_schema", "schema": schema}, temperature=0.7, seed=3, max_tokens=72)  # llama.cpp allows pretty-printing
    assert result["finish_reason"] == "stop", result
    jsonschema.validate(json.loads(result["message"]["content"]), schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def test_json_object(engine: tuple[DaemonProcess, str]) -> None:
    d, _ = engine
    result = chat(d, format={"type": "json_object"}, max_tokens=30)
    if result["finish_reason"] == "stop":
        assert isinstance(json.loads(result["message"]["content"]), dict)
    else:  # max_tokens inside the value: "length", never a wrong answer dressed as complete
        assert result["finish_reason"] == "length"


def llguidance_everywhere(backend: str) -> bool:
    """MLX always runs llguidance; llama-server does when scripts/setup built it so."""
    from impetus_llamacpp.binary import declared_llguidance

    return backend == "mlx" or declared_llguidance()


def test_regex_and_lark_where_llguidance_runs_gbnf_on_both(engine: tuple[DaemonProcess, str]) -> None:
    d, backend = engine
    gbnf = chat(d, format={"type": "grammar", "syntax": "gbnf", "grammar": 'root ::= ("yes" | "no") "!"'})
    assert gbnf["message"]["content"] in ("yes!", "no!")
    if llguidance_everywhere(backend):
        regex = chat(d, format={"type": "regex", "pattern": "[A-Z]{3}-[0-9]{2}"})
        assert __import__("re").fullmatch("[A-Z]{3}-[0-9]{2}", regex["message"]["content"]), regex
        lark = chat(d, format={"type": "grammar", "syntax": "lark", "grammar": 'start: "n=" /[0-9]{1,3}/'})
        assert __import__("re").fullmatch("n=[0-9]{1,3}", lark["message"]["content"]), lark
    else:  # a llama-server built without llguidance cannot enforce them: refused by name, never relaxed
        err = error(d, format={"type": "regex", "pattern": "a+"})
        assert err["data"]["param"] == "format" and err["data"]["backend"] == "llamacpp", err


@pytest.mark.parametrize("choice", ["required", "get_weather"])
def test_forced_tool_calls_are_valid(engine: tuple[DaemonProcess, str], choice: str) -> None:
    d, _ = engine
    result = chat(d, messages=[{"role": "user", "content": "What is the weather in Paris?"}], tools=[WEATHER, TIME], tool_choice=choice, parallel_tool_calls=False)
    assert result["finish_reason"] == "tool_calls", result
    (call,) = result["message"]["tool_calls"]
    assert call["id"].startswith("call_")
    if choice == "get_weather":
        assert call["name"] == "get_weather"
    params = next(t for t in (WEATHER, TIME) if t["function"]["name"] == call["name"])["function"]["parameters"]
    jsonschema.validate(json.loads(call["arguments"]), params)


def test_streamed_tool_call_deltas_assemble_to_the_call(engine: tuple[DaemonProcess, str]) -> None:
    d, _ = engine
    params = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Weather in Rome?"}],
        "max_tokens": 40,
        "temperature": 0,
        "tools": [WEATHER],
        "tool_choice": "required",
        "parallel_tool_calls": False,
    }
    with d.connect() as conn:
        rid = conn.send("chat", {**params, "stream": True})
        notes, final = conn.until_response(rid)
        plain = conn.call("chat", params)["result"]
    deltas = [n["params"]["tool_call"] for n in notes if n["params"].get("kind") == "tool_call"]
    assert deltas[0]["name"] == "get_weather" and deltas[0]["id"].startswith("call_")
    assert all("id" not in x for x in deltas[1:])
    arguments = "".join(x.get("arguments", "") for x in deltas)
    (call,) = final["result"]["message"]["tool_calls"]
    assert arguments == call["arguments"] == plain["message"]["tool_calls"][0]["arguments"]
    assert deltas[0]["id"] == call["id"]


def _assert_calls_valid(message: dict[str, Any]) -> None:
    for call in message["tool_calls"]:
        assert call["name"] == "get_weather" and call["id"].startswith("call_")
        jsonschema.validate(json.loads(call["arguments"]), WEATHER["function"]["parameters"])


def test_parallel_calls_when_required(engine: tuple[DaemonProcess, str]) -> None:
    """Asked about two cities, the model calls the tool more than once; each call is
    its own entry, streamed under its own index (id and name first, then its
    arguments); with parallel_tool_calls false there is exactly one."""
    d, _ = engine
    params = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "What is the weather in Paris and in Rome?"}],
        "max_tokens": 60,
        "temperature": 0,
        "tools": [WEATHER],
        "tool_choice": "required",
    }
    with d.connect() as conn:
        rid = conn.send("chat", {**params, "stream": True, "logprobs": True})
        notes, final = conn.until_response(rid)
        single = conn.call("chat", {**params, "parallel_tool_calls": False})["result"]
    result = final["result"]
    calls = result["message"]["tool_calls"]
    assert len(calls) >= 2, result
    _assert_calls_valid(result["message"])
    assert [json.loads(c["arguments"])["city"] for c in calls[:2]] == ["Paris", "Rome"]
    if result["finish_reason"] != "tool_calls":  # a later call cut by max_tokens: text, with why
        assert result["finish_reason"] == "length" and result["warning"] and result["message"]["content"].startswith("<tool_call>")
    deltas = [n["params"]["tool_call"] for n in notes if n["params"].get("kind") == "tool_call"]
    assert sorted({x["index"] for x in deltas}) == list(range(len(calls)))
    for i, call in enumerate(calls):
        mine = [x for x in deltas if x["index"] == i]
        assert mine[0]["id"] == call["id"] and mine[0]["name"] == call["name"] and not mine[0].get("arguments"), mine
        assert all("id" not in x and "name" not in x for x in mine[1:])
        assert "".join(x.get("arguments", "") for x in mine) == call["arguments"]
    assert deltas == sorted(deltas, key=lambda x: x["index"])  # one call after the other
    # every generated token's logprob streams once, the markers' between calls too
    assert [t for n in notes for t in n["params"].get("logprobs", [])] == result["logprobs"]
    assert result["logprobs"] and all(t["logprob"] <= 0 for t in result["logprobs"])
    assert single["finish_reason"] == "tool_calls" and len(single["message"]["tool_calls"]) == 1, single
    assert single["message"]["tool_calls"][0]["arguments"] == calls[0]["arguments"]


def test_parallel_calls_when_auto(engine: tuple[DaemonProcess, str]) -> None:
    """auto: after a call the model writes on freely; every call it opens is held to
    the schema. An example exchange in the history makes this model open one."""
    d, _ = engine
    example = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    messages = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": example},
        {"role": "user", "content": "Weather in Paris and in Rome?"},
    ]
    result = chat(d, messages=messages, tools=[WEATHER], tool_choice="auto", max_tokens=50)
    assert result["message"].get("tool_calls"), result
    _assert_calls_valid(result["message"])
    assert "<tool_call>" not in result["message"]["content"] or result.get("warning")
    assert not result["message"]["content"][:1].isspace(), result  # the line break after a call is layout, not text
    single = chat(d, messages=messages, tools=[WEATHER], tool_choice="auto", max_tokens=50, parallel_tool_calls=False)
    assert len(single["message"]["tool_calls"]) == 1 and single["finish_reason"] == "tool_calls", single
    assert single["message"]["content"] == "" and single["usage"]["completion_tokens"] < result["usage"]["completion_tokens"]


def test_tool_round_trip(engine: tuple[DaemonProcess, str]) -> None:
    d, _ = engine
    first = chat(d, messages=[{"role": "user", "content": "Weather in Oslo?"}], tools=[WEATHER], tool_choice="required", parallel_tool_calls=False)
    call = first["message"]["tool_calls"][0]
    history = [
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "name": call["name"], "content": '{"sky": "sunny"}'},
    ]
    answer = chat(d, messages=history, tools=[WEATHER], tool_choice="auto", max_tokens=12)
    assert answer["finish_reason"] in ("stop", "length", "tool_calls"), answer
    message = answer["message"]
    assert message["content"] or message.get("tool_calls")
    if "warning" in answer:  # an unparsable call comes back as text, never lost
        assert "<tool_call>" in message["content"]


def test_logprobs_exactly_n_sorted_and_not_positive(engine: tuple[DaemonProcess, str]) -> None:
    d, _ = engine
    result = chat(d, messages=[{"role": "user", "content": "Hi"}], max_tokens=5, logprobs=True, top_logprobs=3)
    lps = result["logprobs"]
    assert (
        len(lps) == result["usage"]["completion_tokens"] - (1 if result["finish_reason"] == "stop" else 0) or len(lps) == result["usage"]["completion_tokens"]
    )
    for lp in lps:
        assert lp["logprob"] <= 0 and bytes(lp["bytes"]).decode("utf-8", "replace") == lp["token"] or lp["bytes"]
        tops = [t["logprob"] for t in lp["top_logprobs"]]
        assert len(tops) == 3 and tops == sorted(tops, reverse=True) and all(t <= 0 for t in tops)
    assert "".join(lp["token"] for lp in lps).startswith(result["message"]["content"][:3])


def test_n_three_choices(engine: tuple[DaemonProcess, str]) -> None:
    d, _ = engine
    one = chat(d, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0.9, seed=7)
    three = chat(d, messages=[{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0.9, seed=7, n=3)
    assert [c["index"] for c in three["choices"]] == [0, 1, 2]
    assert three["message"] == three["choices"][0]["message"] == one["message"]  # choice 0 is the seed's own answer
    assert (
        three["usage"]["completion_tokens"] == sum(4 if c["finish_reason"] == "length" else 0 for c in three["choices"])
        or three["usage"]["completion_tokens"] >= 3
    )


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"format": {"type": "json_schema", "schema": {"type": "strin"}}}, "format.schema"),
        ({"format": {"type": "regex", "pattern": "[a-"}}, "format.pattern"),
        ({"format": {"type": "grammar", "syntax": "lark", "grammar": "start: b"}}, "format.grammar"),
        ({"tools": [WEATHER], "tool_choice": "get_time"}, "tool_choice"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"n": 9}, "n"),
    ],
)
def test_bad_input_is_invalid_params_naming_the_field(engine: tuple[DaemonProcess, str], params: dict[str, Any], field: str) -> None:
    d, _ = engine
    err = error(d, **params)
    assert err["code"] == -32602 and err["data"]["field"] == field, err


@pytest.mark.parametrize("name", ["tuple", "number_range", "multiple_of", "email"])
def test_a_schema_feature_llama_cpps_converter_drops_is_enforced_or_refused_by_name(engine: tuple[DaemonProcess, str], name: str) -> None:
    """llama.cpp's own converter fails on some features and silently drops others (float
    ranges, multipleOf, most string formats): on a llama-server built without llguidance
    each is refused by name, never relaxed; llguidance (MLX, and llama-server built with
    it) enforces them."""
    d, backend = engine
    schema = SCHEMAS[name]
    if llguidance_everywhere(backend):
        result = chat(d, format={"type": "json_schema", "schema": schema}, max_tokens=24)
        if result["finish_reason"] == "stop":
            jsonschema.validate(json.loads(result["message"]["content"]), schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    else:
        err = error(d, format={"type": "json_schema", "schema": schema})
        assert err["data"]["name"] == "UnsupportedParameter" and err["data"]["param"] == "format" and err["data"]["backend"] == "llamacpp", err


def test_think_is_refused_where_the_template_cannot_switch_it(engine: tuple[DaemonProcess, str]) -> None:
    d, _ = engine
    err = error(d, think=False)
    assert err["data"]["param"] == "think", err


def test_reasoning_is_split_from_content_streamed_and_not(shared_daemon: DaemonProcess, echo_model: Path) -> None:
    """The echo engine says back the last message word by word, so the markers arrive
    split across pieces the way a model's tokens split them."""
    text = "<think> first I plan </think> the answer"
    params = {"model": str(echo_model), "messages": [{"role": "user", "content": text}], "max_tokens": 50}
    with shared_daemon.connect() as conn:
        result = conn.call("chat", params)["result"]
        rid = conn.send("chat", {**params, "stream": True})
        notes, final = conn.until_response(rid)
    assert result["message"]["reasoning"].strip() == "first I plan"
    assert result["message"]["content"] == "the answer"
    kinds = {k: "".join(n["params"]["delta"] for n in notes if n["params"].get("kind", "content") == k) for k in ("reasoning", "content")}
    assert kinds["reasoning"] == result["message"]["reasoning"] and kinds["content"] == "the answer"
    assert final["result"]["message"] == result["message"]


THINKING = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}{% endif %}"
)


@pytest.mark.parametrize("backend", ["mlx", "llamacpp"])
def test_a_thinking_template_keeps_reasoning_free_and_out_of_content(shared_daemon: DaemonProcess, tmp_path: Path, backend: str) -> None:
    """A tiny random model with a template that switches thinking: with ``think`` the
    reasoning runs free (random text, not the format) and stays out of ``content``;
    without it the answer is held to the format from its first token."""
    from gguf_factory import write_tiny_llama

    model = str(write_tiny_llama(tmp_path / "thinker.gguf", chat_template=THINKING))
    fmt = {"type": "json_schema", "schema": {"enum": ["yes", "no"]}}
    base = {"model": model, "messages": [{"role": "user", "content": "ok?"}], "temperature": 0, "format": fmt}
    with shared_daemon.connect() as conn:
        assert "result" in conn.call("models.load", {"model": model, "backend": backend})
        rid = conn.send("chat", {**base, "think": True, "max_tokens": 10, "stream": True})
        notes, final = conn.until_response(rid)
        off = conn.call("chat", {**base, "think": False, "max_tokens": 10})
        conn.call("models.unload", {"model": model})
    thought = final["result"]["message"]
    assert thought.get("reasoning") and thought["content"] == "", final
    assert thought["reasoning"].strip() not in ('"yes"', '"no"')  # not held to the format
    assert {n["params"].get("kind") for n in notes} == {"reasoning"}
    answer = off["result"]
    assert answer["message"]["content"] in ('"yes"', '"no"') and "reasoning" not in answer["message"], answer


OPENS_THINKING = (  # DeepSeek-R1 / Qwen3-thinking style: the generation prompt opens the reasoning
    "{# takes tools and tool_call messages, lists none: the tiny model's context is short #}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n<think>\n{% endif %}"
)


@pytest.mark.parametrize("backend", ["mlx", "llamacpp"])
def test_a_template_that_opens_the_reasoning_starts_the_answer_in_it(shared_daemon: DaemonProcess, tmp_path: Path, backend: str) -> None:
    """The template ends its prompt with ``<think>\n``: what the model writes (a tiny
    random model: never ``</think>`` here) is reasoning, not content, plain and streamed;
    with a format or a forced call, the reasoning stays free of it."""
    from gguf_factory import write_tiny_llama

    model = str(write_tiny_llama(tmp_path / "opener.gguf", chat_template=OPENS_THINKING))
    base = {"model": model, "messages": [{"role": "user", "content": "ok?"}], "temperature": 0, "max_tokens": 8}
    with shared_daemon.connect() as conn:
        assert "result" in conn.call("models.load", {"model": model, "backend": backend})
        plain = conn.call("chat", base)["result"]
        rid = conn.send("chat", {**base, "stream": True})
        notes, final = conn.until_response(rid)
        shaped = conn.call("chat", {**base, "format": {"type": "json_schema", "schema": {"enum": ["yes", "no"]}}})["result"]
        forced = conn.call("chat", {**base, "tools": [WEATHER], "tool_choice": "required"})
        assert "result" in forced, forced
        forced = forced["result"]
        conn.call("models.unload", {"model": model})
    message = plain["message"]
    assert message.get("reasoning") and message["content"] == "", plain
    assert final["result"]["message"] == message
    assert {n["params"].get("kind") for n in notes} == {"reasoning"}
    assert "".join(n["params"]["delta"] for n in notes) == message["reasoning"]
    assert shaped["message"]["content"] == "" and shaped["message"]["reasoning"].strip() not in ('"yes"', '"no"'), shaped
    # a forced call comes after the reasoning, never inside it: here the budget ends first
    assert forced["finish_reason"] == "length" and forced["message"]["reasoning"] and "tool_calls" not in forced["message"], forced


def test_the_splitter_started_inside_the_reasoning() -> None:
    from impetusd.dispatch.answer import ThinkSplitter

    split = ThinkSplitter(opened=True)
    pieces = [p for text in ("I plan", " a bit</th", "ink>\n\n", "The answer") for p in split.feed(text)] + split.flush()
    assert pieces == [("reasoning", "I plan"), ("reasoning", " a bit"), ("content", "The answer")]
    assert ThinkSplitter().feed("no reasoning </think> here") == [("content", "no reasoning </think> here")]


def test_complete_with_a_format(engine: tuple[DaemonProcess, str]) -> None:
    d, _ = engine
    with d.connect() as conn:
        result = conn.call("complete", {"model": MODEL, "prompt": "The answer is", "max_tokens": 8, "temperature": 0, "format": {"type": "grammar", "syntax": "gbnf", "grammar": 'root ::= " " [0-9] [0-9]? "."'}})
    assert __import__("re").fullmatch(r" [0-9][0-9]?\.", result["result"]["text"]), result


def test_streamed_logprobs_come_with_their_text(engine: tuple[DaemonProcess, str]) -> None:
    d, _ = engine
    params = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "temperature": 0, "logprobs": True, "top_logprobs": 2}
    with d.connect() as conn:
        rid = conn.send("chat", {**params, "stream": True})
        notes, final = conn.until_response(rid)
    streamed = [lp for n in notes for lp in n["params"].get("logprobs") or []]
    assert streamed == final["result"]["logprobs"] and streamed
    assert "".join(n["params"]["delta"] for n in notes) == final["result"]["message"]["content"]


def test_completion_tokens_count_alike_on_both_engines(tmp_path: Path) -> None:
    """``usage.completion_tokens`` counts every token the engine sampled, in every phase:
    the one that ends the phase (end-of-sequence, the last token of a stop string such
    as ``<tool_call>`` or ``</think>``, the end a grammar allows) included. MLX and
    llama-server count alike: the same answers report the same counts, ended each way,
    and a forced call (its own phase, ended where its JSON ends) costs its text plus
    that one end token on each."""
    asks: dict[str, dict[str, Any]] = {
        "end-of-sequence": {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 30},
        "stop string": {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 30, "stop": [" How"]},
        "grammar's end": {"messages": [{"role": "user", "content": "yes or no?"}], "max_tokens": 10, "format": {"type": "json_schema", "schema": {"enum": ["yes", "no"]}}},
    }
    seen: dict[str, dict[str, tuple[str, int]]] = {}
    d = DaemonProcess(tmp_path).start()
    try:
        for backend in ("llamacpp", "mlx"):
            with d.connect() as conn:
                assert "result" in conn.call("models.load", {"model": MODEL, "backend": backend})
                for name, ask in asks.items():
                    result = conn.call("chat", {"model": MODEL, "temperature": 0, **ask})["result"]
                    assert result["finish_reason"] == "stop", result
                    seen.setdefault(name, {})[backend] = (result["message"]["content"], result["usage"]["completion_tokens"])
                if backend == "mlx":  # the call's text, tokenized, plus its end token
                    forced = conn.call("chat", {"model": MODEL, "temperature": 0, "messages": [{"role": "user", "content": "Time?"}], "tools": [TIME], "tool_choice": "required", "parallel_tool_calls": False, "max_tokens": 30})["result"]
                    call = forced["message"]["tool_calls"][0]
                    text = '{"name": "%s", "arguments": %s}' % (call["name"], call["arguments"])
                    count = conn.call("tokenize", {"model": MODEL, "text": text})["result"]["count"]
                    assert forced["usage"]["completion_tokens"] == count + 1, (forced, count)
                conn.call("models.unload", {"model": MODEL})
    finally:
        d.stop()
    for name, by in seen.items():
        assert by["mlx"] == by["llamacpp"], (name, by)
