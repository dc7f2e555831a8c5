"""Ollama's request bodies, decoded strictly, and their translation to daemon params.

Options Impetus can honour map onto its sampling fields; every other option is
refused by name (never ignored). Model names may carry Ollama's ``:latest`` tag.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from impetusd.protocol.api import ChatParams, CompleteParams, Format, JsonObjectFormat, Message, ToolCall

from .generation import BadBody, fields_of, first_refused
from .structured import arguments_text, new_call_id, openai_tools, schema_format

ROLES: dict[str, Literal["system", "user", "assistant", "tool"]] = {"system": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
NOT_YET = {
    "images": "images are not supported by Impetus yet",
    "suffix": "fill-in-the-middle (suffix) is not supported by Impetus yet",
    "template": "a per-request template is not supported; Impetus uses the model's own chat template",
    "context": "the legacy 'context' token array is not supported; send the conversation with /api/chat",
    "dimensions": "Impetus cannot shorten embeddings (dimensions)",
    "insecure": "insecure pulls are not supported",
}
# Ollama options that are neutral at these values (sent by some clients as defaults).
_NEUTRAL_OPTIONS: dict[str, tuple[Any, ...]] = {"repeat_penalty": (1.0, 1), "num_keep": (), "typical_p": (1.0, 1), "tfs_z": (1.0, 1), "mirostat": (0,)}


class OllamaBadRequest(Exception):
    """A request Ollama's API would answer with 400; ``field`` names what is wrong."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class OllamaMessage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    role: str
    content: str = ""
    images: list[str] | None = None
    tool_calls: list[Any] | None = None
    tool_name: str | None = None
    tool_call_id: str | None = None
    thinking: str | None = None


class _Generation(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    model: str
    stream: bool = True  # Ollama streams unless told not to
    format: Any = None
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None  # the daemon's own: seconds or "5m"; 0 unloads; negative keeps
    think: bool | str | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None


class ChatRequest(_Generation, frozen=True, forbid_unknown_fields=True, kw_only=True):
    messages: list[OllamaMessage] = []
    tools: list[Any] | None = None


class GenerateRequest(_Generation, frozen=True, forbid_unknown_fields=True, kw_only=True):
    prompt: str | None = None
    suffix: str | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool | None = None
    images: list[str] | None = None


class EmbedRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    model: str
    input: str | list[str]
    truncate: bool | None = None  # over-long input is refused either way, never cut
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None
    dimensions: int | None = None


class EmbeddingsRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    model: str
    prompt: str
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None


class NameRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """show / delete / pull: ``model`` (or the older ``name``)."""

    model: str | None = None
    name: str | None = None
    verbose: bool | None = None  # show: the full tensor listing; Impetus has no more to add
    stream: bool = True
    insecure: bool | None = None

    def ref(self) -> str:
        given = self.model or self.name
        if not given:
            raise OllamaBadRequest("model is required", "model")
        return model_name(given)


class CopyRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    source: str
    destination: str


def model_name(name: str) -> str:
    """``smollm2-135m:latest`` → ``smollm2-135m`` (other tags are Impetus's own selectors)."""
    return name.removesuffix(":latest")


def tagged(name: str) -> str:
    """How Ollama lists a name: with a tag (``:latest`` unless the name has one)."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def refuse_not_yet(body: msgspec.Struct) -> None:
    name = first_refused(fields_of(body), dict.fromkeys(NOT_YET, (None, [], "", False)))
    if name is not None:
        raise OllamaBadRequest(f"'{name}' is not supported: {NOT_YET[name]}", name)


def _ollama(exc: BadBody) -> OllamaBadRequest:
    return OllamaBadRequest(exc.message, exc.param)


def format_of(given: Any) -> Format | None:
    """``"json"`` → any JSON object; an object → that JSON schema (enforced, never relaxed)."""
    if given in (None, ""):
        return None
    if given == "json":
        return JsonObjectFormat()
    if isinstance(given, dict):
        try:
            return schema_format({"schema": given}, "format")
        except BadBody as exc:
            raise _ollama(exc) from None
    raise OllamaBadRequest('format must be "json" or a JSON schema object', "format")


def think_of(given: bool | str | None) -> bool | None:
    if given is None or isinstance(given, bool):
        return given
    raise OllamaBadRequest(f"think {given!r}: only true or false is supported (reasoning levels are not)", "think")


def _structured(body: _Generation) -> dict[str, Any]:
    if body.top_logprobs and not body.logprobs:
        raise OllamaBadRequest("top_logprobs needs logprobs: true", "top_logprobs")
    return dict(format=format_of(body.format), think=think_of(body.think), logprobs=bool(body.logprobs), top_logprobs=body.top_logprobs or None)


def _calls(given: list[Any], where: str) -> list[ToolCall]:
    """Ollama's ``[{function: {name, arguments: {...}}}]`` → protocol calls (ids made up when absent)."""
    calls = []
    for j, c in enumerate(given):
        fn = c.get("function") if isinstance(c, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise OllamaBadRequest(f"{where}[{j}] must be {{'function': {{'name': ..., 'arguments': {{...}}}}}}", f"{where}[{j}]")
        try:
            args = arguments_text(fn.get("arguments", {}), f"{where}[{j}].function.arguments")
        except BadBody as exc:
            raise _ollama(exc) from None
        calls.append(ToolCall(id=str(c.get("id") or new_call_id()), name=fn["name"], arguments=args))
    return calls


def _message(i: int, m: OllamaMessage, calls_so_far: dict[str, str]) -> Message:
    """``calls_so_far``: each earlier call's name → its id, so a tool message naming a
    function (``tool_name``) answers that call."""
    refuse_not_yet(m)
    where = f"messages[{i}]"
    role = ROLES.get(m.role)
    if role is None:
        raise OllamaBadRequest(f"{where}.role must be one of {', '.join(ROLES)}", f"{where}.role")
    if role != "assistant" and (m.tool_calls or m.thinking):
        raise OllamaBadRequest(f"{where}: tool_calls and thinking belong on assistant messages", f"{where}.tool_calls")
    calls = _calls(m.tool_calls or [], f"{where}.tool_calls")
    calls_so_far.update((c.name, c.id) for c in calls)
    if role != "tool":
        return Message(role=role, content=m.content, tool_calls=calls or None, reasoning=m.thinking or None)
    call_id = m.tool_call_id or calls_so_far.get(m.tool_name or "") or (next(reversed(calls_so_far.values())) if calls_so_far else None)
    if call_id is None:
        raise OllamaBadRequest(f"{where}: a tool message answers a call; none came before it", f"{where}.tool_name")
    return Message(role="tool", content=m.content, tool_call_id=call_id, name=m.tool_name)


def sampling(options: dict[str, Any] | None) -> dict[str, Any]:
    """Ollama ``options`` → Impetus sampling fields; anything else is refused by name."""
    out: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if value is None:
            continue
        if key == "num_predict":
            out["max_tokens"] = None if value < 0 else int(value)
        elif key in ("temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty"):
            out[key] = float(value)
        elif key in ("top_k", "seed"):
            out[key] = int(value)
        elif key == "stop":
            out["stop"] = [value] if isinstance(value, str) else list(value)
        elif key in _NEUTRAL_OPTIONS and value in _NEUTRAL_OPTIONS[key]:
            continue
        elif key == "num_ctx":
            raise OllamaBadRequest("option 'num_ctx' is not supported: Impetus's backends size the context from the model, not per request", f"options.{key}")
        else:
            raise OllamaBadRequest(f"option '{key}' is not supported by Impetus", f"options.{key}")
    if out.get("max_tokens") == 0:
        raise OllamaBadRequest("option 'num_predict' must be positive (or -1 for no limit)", "options.num_predict")
    return out


def chat_params(body: ChatRequest) -> ChatParams:
    refuse_not_yet(body)
    calls: dict[str, str] = {}
    messages = [_message(i, m, calls) for i, m in enumerate(body.messages)]
    try:
        tools = openai_tools(body.tools)
    except BadBody as exc:
        raise _ollama(exc) from None
    return ChatParams(
        model=model_name(body.model),
        messages=messages,
        stream=body.stream,
        keep_alive=body.keep_alive,
        tools=tools,
        **_structured(body),
        **sampling(body.options),
    )


def generate_params(body: GenerateRequest) -> ChatParams | CompleteParams:
    """``raw`` prompts go to ``complete`` as they are; others through the chat template, as Ollama does."""
    refuse_not_yet(body)
    common: dict[str, Any] = dict(model=model_name(body.model), stream=body.stream, keep_alive=body.keep_alive, **sampling(body.options))
    structured = _structured(body)
    prompt = body.prompt or ""
    if body.raw:
        if body.system:
            raise OllamaBadRequest("'system' has no place in a raw prompt", "system")
        if structured.pop("think") is not None:
            raise OllamaBadRequest("'think' has no place in a raw prompt (no chat template renders it)", "think")
        return CompleteParams(prompt=prompt, **structured, **common)
    common.update(structured)
    messages = [Message(role="system", content=body.system)] if body.system else []
    messages.append(Message(role="user", content=prompt))
    return ChatParams(messages=messages, **common)
