"""Tool calls with ``auto`` where a small real model will not go on cue: a model that
writes a call inside its reasoning, and the layout between a call and the text after
it. The model is the script test plugin (tests/plugins/impetus_script.py): a real
backend registered through the real hooks, run in a real worker by the real daemon,
which writes a given answer verbatim and honours prefix, stop strings and formats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from helpers import DaemonProcess

WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
}
ASK = [{"role": "user", "content": "Weather in Oslo?"}]


def call_block(city: str) -> str:
    """A call as the model writes it and the daemon closes it (the Hermes layout)."""
    return '<tool_call>\n{"name": "get_weather", "arguments": {"city": "%s"}}\n</tool_call>\n' % city


def script(tmp_path: Path, answer: str, opened: bool = False, name: str = "m") -> str:
    path = tmp_path / f"{name}.script"
    path.write_text(f"answer = {json.dumps(answer)}\nopened = {'true' if opened else 'false'}\n")
    return str(path)


def plain_and_streamed(d: DaemonProcess, **params: Any) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    params = {"messages": ASK, "tools": [WEATHER], "tool_choice": "auto", "max_tokens": 200, **params}
    with d.connect() as conn:
        plain = conn.call("chat", params)
        assert "result" in plain, plain
        rid = conn.send("chat", {**params, "stream": True})
        notes, final = conn.until_response(rid)
    assert "result" in final, final
    return plain["result"], [n["params"] for n in notes], final["result"]


def streamed_text(notes: list[dict[str, Any]], kind: str) -> str:
    return "".join(n["delta"] for n in notes if n.get("kind", "content") == kind)


@pytest.mark.parametrize("opened", [False, True], ids=["model-writes-think", "template-opens-it"])
def test_a_call_inside_open_reasoning_is_reasoning(shared_daemon: DaemonProcess, tmp_path: Path, opened: bool) -> None:
    """``<tool_call>`` written while the reasoning is still open is the model thinking
    about a call, not making one: it stays in ``reasoning``; only the call opened after
    ``</think>`` counts (whether the model wrote ``<think>`` or the template did)."""
    thought = "I could call " + call_block("Oslo").rstrip("\n") + " but Paris first."
    answer = ("" if opened else "<think>") + thought + "</think>\n" + call_block("Paris")
    plain, notes, final = plain_and_streamed(shared_daemon, model=script(tmp_path, answer, opened))
    message = plain["message"]
    assert message["reasoning"] == thought, message
    assert [json.loads(c["arguments"]) for c in message["tool_calls"]] == [{"city": "Paris"}], message
    assert plain["finish_reason"] == "tool_calls" and message["content"] == "", plain
    assert streamed_text(notes, "reasoning") == thought
    assert [c["arguments"] for c in final["message"]["tool_calls"]] == [c["arguments"] for c in message["tool_calls"]]
    assert final["message"]["reasoning"] == thought


def test_a_call_in_reasoning_that_never_closes_is_no_call(shared_daemon: DaemonProcess, tmp_path: Path) -> None:
    thought = "maybe " + call_block("Oslo") + "or not"
    plain, notes, _ = plain_and_streamed(shared_daemon, model=script(tmp_path, thought, opened=True))
    assert plain["message"]["reasoning"] == thought and "tool_calls" not in plain["message"], plain
    assert plain["message"]["content"] == "" and plain["finish_reason"] == "stop"
    assert streamed_text(notes, "reasoning") == thought


@pytest.mark.parametrize(
    ("before", "after", "content"),
    [
        ("", "\nIt is sunny.", "It is sunny."),  # the answer starts after the call: no separator first
        ("", "\n\n  It is sunny.", "It is sunny."),
        ("Let me look.\n", "\nIt is sunny.", "Let me look.\nIt is sunny."),  # the model's own break before the call stays
        ("Let me look.\n", "\n\nIt is sunny.", "Let me look.\nIt is sunny."),
        ("Let me look.", "\nIt is sunny.", "Let me look.\nIt is sunny."),  # between two texts it separates them
        ("Let me look.", " It is sunny.", "Let me look. It is sunny."),
    ],
)
def test_text_after_a_call_does_not_start_with_the_separator(shared_daemon: DaemonProcess, tmp_path: Path, before: str, after: str, content: str) -> None:
    """After ``</tool_call>\\n`` (written by the daemon), the whitespace the model writes
    before its next text is the layout between the call and the text, not content."""
    answer = before + call_block("Oslo") + after
    plain, notes, final = plain_and_streamed(shared_daemon, model=script(tmp_path, answer))
    assert plain["message"]["content"] == content, plain
    assert streamed_text(notes, "content") == content
    assert final["message"]["content"] == content
    assert [json.loads(c["arguments"]) for c in plain["message"]["tool_calls"]] == [{"city": "Oslo"}]
