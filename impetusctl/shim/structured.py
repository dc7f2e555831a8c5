"""Tools, tool choices, output formats and tool calls, between each API's shapes
and the protocol's: the pieces the OpenAI, Ollama, Anthropic and Responses
packages share. Bad input raises ``BadBody`` naming the field as the API calls it.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import msgspec

from impetusd.protocol.api import Format, FunctionDef, JsonObjectFormat, JsonSchemaFormat, Message, Tool, ToolCall, ToolCallDelta

from .http import BadBody


def bad(message: str, param: str) -> BadBody:
    return BadBody(400, f"{param}: {message}", param)


def function_tool(fields: Any, where: str) -> Tool:
    """A function's ``name``, ``description``, ``parameters`` and ``strict`` → a protocol ``Tool``."""
    if not isinstance(fields, dict):
        raise bad("must be an object", where)
    if not isinstance(fields.get("name"), str) or not fields["name"]:
        raise bad("a function needs a 'name'", f"{where}.name")
    params = fields.get("parameters")
    if params is not None and not isinstance(params, dict):
        raise bad("must be a JSON schema object", f"{where}.parameters")
    try:
        return Tool(function=msgspec.convert({k: v for k, v in fields.items() if v is not None}, FunctionDef))
    except msgspec.ValidationError as exc:
        raise bad(str(exc), where) from None


def openai_tools(given: list[Any] | None, where: str = "tools") -> list[Tool] | None:
    """OpenAI's (and Ollama's) ``[{type: function, function: {...}}]``."""
    if not given:
        return None
    tools = []
    for i, t in enumerate(given):
        at = f"{where}[{i}]"
        if not isinstance(t, dict) or t.get("type", "function") != "function":
            kind = t.get("type") if isinstance(t, dict) else None
            raise bad(f"only function tools are supported, got type {kind!r}", f"{at}.type")
        if set(t) - {"type", "function"}:
            raise bad(f"unknown field {sorted(set(t) - {'type', 'function'})[0]!r}", at)
        tools.append(function_tool(t.get("function"), f"{at}.function"))
    return tools


def choice_name(choice: Any, where: str, allowed: tuple[str, ...] = ("auto", "none", "required")) -> str | None:
    """``"auto"``/``"none"``/``"required"`` or ``{type: function, function: {name}}`` (or
    Responses' ``{type: function, name}``) → the protocol's ``tool_choice`` string."""
    if choice is None:
        return None
    if isinstance(choice, str):
        if choice not in allowed:
            raise bad(f"must be one of {', '.join(allowed)} or a named function", where)
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        fn = choice.get("function", choice)
        name = fn.get("name") if isinstance(fn, dict) else None
        if isinstance(name, str) and name:
            return name
    raise bad("a named choice is {'type': 'function', 'function': {'name': ...}}", where)


def named_in(choice: str | None, tools: list[Tool] | None, where: str) -> None:
    """A named choice must be one of the tools (the daemon checks too; this names the API's field)."""
    if choice in (None, "auto", "none", "required"):
        return
    if not tools:
        raise bad(f"names {choice!r} but no tools were given", where)
    if choice not in {t.function.name for t in tools}:
        raise bad(f"names {choice!r}, which is not among the tools", where)


def tool_choice(given: Any, tools: list[Tool] | None, where: str = "tool_choice") -> str | None:
    """OpenAI's (or Responses') ``tool_choice``, checked against the tools given."""
    choice = choice_name(given, where)
    named_in(choice, tools, where)
    return choice


def schema_format(spec: Any, where: str) -> JsonSchemaFormat:
    """``{name, schema, strict, description}`` (OpenAI's json_schema object) → the protocol format.
    ``strict`` is passed on as given; left out, the protocol's default (strict) holds."""
    if not isinstance(spec, dict):
        raise bad("must be an object with 'schema'", where)
    unknown = set(spec) - {"name", "schema", "strict", "description", "type"}
    if unknown:
        raise bad(f"unknown field {sorted(unknown)[0]!r}", where)
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        raise bad("'schema' must be a JSON schema object", f"{where}.schema")
    strict = spec.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise bad("must be true or false", f"{where}.strict")
    extra: dict[str, Any] = {} if strict is None else {"strict": strict}
    return JsonSchemaFormat(schema=schema, name=spec.get("name"), **extra)


def response_format(given: Any, where: str = "response_format", *, flat: bool = False) -> Format | None:
    """OpenAI's ``response_format``: text, json_object or json_schema (its name, schema
    and strict under ``json_schema``; at the top level when ``flat``, as the Responses
    API's ``text.format`` has them)."""
    if given is None:
        return None
    kind = given.get("type") if isinstance(given, dict) else None
    if kind == "text" and len(given) == 1:
        return None
    if kind == "json_object" and len(given) == 1:
        return JsonObjectFormat()
    if kind == "json_schema" and flat:
        return schema_format(given, where)
    if kind == "json_schema" and set(given) <= {"type", "json_schema"}:
        return schema_format(given.get("json_schema"), f"{where}.json_schema")
    schema = "{'type': 'json_schema', 'name': ..., 'schema': {...}}" if flat else "{'type': 'json_schema', 'json_schema': {...}}"
    raise bad(f"must be {{'type': 'text'}}, {{'type': 'json_object'}} or {schema}", where)


def new_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


def arguments_object(call: ToolCall) -> dict[str, Any]:
    """A call's arguments as an object (Ollama, Anthropic). The engine returns a call
    only when its arguments parse; anything else stays visible under ``arguments``."""
    try:
        value = json.loads(call.arguments or "{}")
    except ValueError:
        return {"arguments": call.arguments}
    return value if isinstance(value, dict) else {"arguments": value}


def arguments_text(value: Any, where: str) -> str:
    """An object (Ollama, Anthropic) or a JSON string (OpenAI) → the protocol's JSON string."""
    if isinstance(value, str):
        try:
            json.loads(value or "{}")
        except ValueError:
            raise bad("must be a JSON object as a string", where) from None
        return value or "{}"
    if isinstance(value, dict):
        return json.dumps(value)
    raise bad("must be a JSON object", where)


def assistant_calls(calls: list[ToolCall], content: str = "", reasoning: str | None = None) -> Message:
    return Message(role="assistant", content=content, tool_calls=calls or None, reasoning=reasoning)


class CallAssembler:
    """Streamed tool-call deltas → whole calls (for APIs that send a call in one piece)."""

    def __init__(self) -> None:
        self.calls: dict[int, list[str]] = {}

    def add(self, delta: ToolCallDelta) -> None:
        slot = self.calls.setdefault(delta.index, ["", "", ""])
        if delta.id is not None:
            slot[0] = delta.id
        if delta.name is not None:
            slot[1] = delta.name
        slot[2] += delta.arguments

    def take(self) -> list[ToolCall]:
        done = [ToolCall(id=i or new_call_id(), name=n, arguments=a or "{}") for _, (i, n, a) in sorted(self.calls.items())]
        self.calls.clear()
        return done
