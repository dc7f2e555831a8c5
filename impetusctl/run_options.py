"""``impetusctl run``'s structured options (``--format``, ``--tools``, ``--logprobs``)
as chat params, and how their results are printed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from impetusd.protocol.api import GenerationResult

# A file whose "type" is one of these holds a whole format object; anything else is a JSON schema.
_FORMAT_TYPES = ("json_object", "json_schema", "regex", "grammar")


def _json_file(path: str, option: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise click.BadParameter(f"{path}: {exc}", param_hint=option) from None


def format_of(given: str) -> dict[str, Any]:
    """``json`` → any JSON object; a file → its JSON schema (or the format object it holds)."""
    if given == "json":
        return {"type": "json_object"}
    if not Path(given).is_file():
        raise click.BadParameter(f"{given!r} is neither 'json' nor a file", param_hint="--format")
    value = _json_file(given, "--format")
    if not isinstance(value, dict):
        raise click.BadParameter(f"{given}: must hold a JSON object (a schema)", param_hint="--format")
    return value if value.get("type") in _FORMAT_TYPES else {"type": "json_schema", "schema": value}


def tools_of(path: str) -> list[Any]:
    value = _json_file(path, "--tools")
    if not isinstance(value, list) or not value:
        raise click.BadParameter(f"{path}: must hold a non-empty JSON list of tools", param_hint="--tools")
    return value


def params(fmt: str | None, tools_file: str | None, tool_choice: str | None, logprobs: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if fmt is not None:
        out["format"] = format_of(fmt)
    if tools_file is not None:
        out["tools"] = tools_of(tools_file)
    if tool_choice is not None:
        if tools_file is None:
            raise click.BadParameter("needs --tools", param_hint="--tool-choice")
        out["tool_choice"] = tool_choice
    if logprobs is not None:
        out["logprobs"] = True
        out["top_logprobs"] = logprobs
    return out


def show(result: GenerationResult) -> None:
    """After a streamed answer: each tool call as NAME(ARGUMENTS), then the logprobs table."""
    m = result.message
    for call in m.tool_calls or [] if m is not None else []:
        click.echo(f"{call.name}({call.arguments})")
    if result.warning:
        click.echo(f"warning: {result.warning}", err=True)
    for t in result.logprobs or []:
        alternatives = "  ".join(f"{a.token!r} {a.logprob:.3f}" for a in t.top_logprobs)
        click.echo(f"{t.token!r}\t{t.logprob:.3f}\t{alternatives}".rstrip())
