"""A request's ``format`` as an llguidance grammar: built, validated and cached.

ML-free (llguidance is a small Rust library with no Python dependencies), so the
daemon validates a format before any worker is used and a worker compiles the
same grammar for its token matcher. docs/structured.md explains the choices.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from impetusd.protocol.api import Format, GrammarFormat, JsonObjectFormat, JsonSchemaFormat, RegexFormat
from impetusd.protocol.errors import InvalidParams

# Compact JSON: one space after ``,`` and ``:`` and no other whitespace, so a small
# model cannot spend its tokens on blank lines inside a value.
_JSON_OPTIONS: dict[str, Any] = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


def _bad(field: str, why: str) -> InvalidParams:
    return InvalidParams(f"Invalid params: {field} {why}", field=field)


def format_key(fmt: Format) -> str:
    """A stable text key for ``fmt`` (the cache key, and what travels to the worker)."""
    if isinstance(fmt, JsonObjectFormat):
        return json.dumps({"type": "json_object"})
    if isinstance(fmt, JsonSchemaFormat):
        # keys in the schema's own order: the engines write an object's properties in that order
        return json.dumps({"type": "json_schema", "schema": fmt.schema})
    if isinstance(fmt, RegexFormat):
        return json.dumps({"type": "regex", "pattern": fmt.pattern})
    return json.dumps({"type": "grammar", "syntax": fmt.syntax, "grammar": fmt.grammar})


def grammar_for(fmt: Format, field: str = "format") -> str:
    """The llguidance grammar for ``fmt``; ``InvalidParams`` naming ``field`` and the
    problem when it is not valid. Cached by content."""
    return _compiled(format_key(fmt), field)


@functools.lru_cache(maxsize=256)
def _compiled(key: str, field: str) -> str:
    from llguidance import LLMatcher  # a small Rust extension: loaded on first use

    spec = json.loads(key)
    kind = spec["type"]
    if kind == "json_object":
        grammar = LLMatcher.grammar_from_json_schema({"type": "object"}, defaults=_JSON_OPTIONS)  # type: ignore[arg-type]  # the stub's TypedDict
        where = field
    elif kind == "json_schema":
        schema = spec["schema"]
        where = f"{field}.schema"
        if not isinstance(schema, dict):
            raise _bad(where, "must be a JSON object")
        try:
            grammar = LLMatcher.grammar_from_json_schema(schema, defaults=_JSON_OPTIONS)  # type: ignore[arg-type]
        except ValueError as exc:
            raise _bad(where, f"is not valid: {exc}") from None
    elif kind == "regex":
        where = f"{field}.pattern"
        grammar = LLMatcher.grammar_from_regex(spec["pattern"])
    elif spec["syntax"] == "lark":
        where = f"{field}.grammar"
        grammar = LLMatcher.grammar_from_lark(spec["grammar"])
    else:
        where = f"{field}.grammar"
        from llguidance.gbnf_to_lark import gbnf_to_lark

        try:
            lark = gbnf_to_lark(spec["grammar"])
        except Exception as exc:  # the converter raises plain errors on bad GBNF
            raise _bad(where, f"is not valid GBNF: {exc}") from None
        grammar = LLMatcher.grammar_from_lark(lark)
    is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar)
    if is_error:
        raise _bad(where, f"is not valid: {messages[0].strip() if messages else 'rejected'}")
    unsupported = [m for m in messages if "unimplemented" in m.lower() or "not supported" in m.lower()]
    if unsupported:
        raise _bad(where, f"uses what cannot be enforced: {unsupported[0].strip()}")
    return grammar


def lark_for(fmt: Format, field: str = "format") -> str:
    """``fmt`` as one Lark text (llguidance's dialect): the form an engine that embeds
    llguidance and takes grammars as text (llama-server built with it) accepts. The same
    grammar as ``grammar_for``: a JSON schema becomes ``%json`` with the same options."""
    return _lark(format_key(fmt), field)


@functools.lru_cache(maxsize=256)
def _lark(key: str, field: str) -> str:
    grammar = _compiled(key, field)
    if not grammar.startswith("{"):
        return grammar  # already Lark
    (one,) = json.loads(grammar)["grammars"]
    if one.get("lark_grammar"):
        return str(one["lark_grammar"])
    return "start: %json " + json.dumps(one["json_schema"])


def tool_call_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON schema of one call to one of ``tools`` (each ``{name, parameters}``):
    ``{"name": <that name>, "arguments": <its parameters>}``."""
    options = [
        {
            "type": "object",
            "properties": {"name": {"const": t["name"]}, "arguments": t.get("parameters") or {"type": "object"}},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for t in tools
    ]
    return options[0] if len(options) == 1 else {"anyOf": options}


def format_dict(fmt: Format) -> dict[str, Any]:
    """``fmt`` as plain JSON data (for engines that take a schema or grammar as is)."""
    result: dict[str, Any] = json.loads(format_key(fmt))
    return result


__all__ = ["GrammarFormat", "JsonObjectFormat", "JsonSchemaFormat", "RegexFormat", "format_dict", "format_key", "grammar_for", "tool_call_schema"]
