"""OpenAI request bodies, decoded strictly, and their translation to daemon params.

Every field OpenAI defines is declared. Fields Impetus can honour are passed on;
fields it cannot are refused by name when set to anything but their neutral
value; fields OpenAI does not define are refused too. Nothing is dropped quietly.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from impetusd.protocol.api import ChatParams, CompleteParams, EmbedParams, KeepAlive, Message, ToolCall

from .errors import InvalidRequest
from .generation import BadBody, fields_of, first_refused
from .structured import choice_name, named_in, openai_tools, response_format


class StreamOptions(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    include_usage: bool = False


class FunctionCallIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    arguments: str


class ToolCallIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: str
    function: FunctionCallIn
    type: Literal["function"] = "function"


class ChatMessage(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    role: str
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    refusal: str | None = None
    reasoning_content: str | None = None  # an earlier answer's thinking, as llama-server returns it


class _Sampling(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    model: str
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: Any = None
    user: str | None = None  # an end-user id for the caller's own records; changes nothing
    # Extensions other local servers accept too.
    top_k: int | None = None
    min_p: float | None = None
    keep_alive: KeepAlive = None
    think: bool | None = None  # reasoning on/off where the model's template supports it (as Ollama's)


class ChatCompletionRequest(_Sampling, frozen=True, forbid_unknown_fields=True, kw_only=True):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    functions: list[Any] | None = None
    function_call: Any = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    modalities: list[str] | None = None
    audio: Any = None
    prediction: Any = None
    reasoning_effort: str | None = None
    service_tier: str | None = None
    web_search_options: Any = None


class CompletionRequest(_Sampling, frozen=True, forbid_unknown_fields=True, kw_only=True):
    prompt: str | list[str]
    echo: bool | None = None
    suffix: str | None = None
    best_of: int | None = None


class EmbeddingRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    model: str
    input: str | list[Any]
    encoding_format: str | None = None
    dimensions: int | None = None
    user: str | None = None
    keep_alive: KeepAlive = None


# Fields whose every value but the neutral one asks for something not built yet.
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "functions": (None, []),
    "function_call": (None, "none"),
    "store": (None, False),
    "metadata": (None,),
    "modalities": (None, ["text"]),
    "audio": (None,),
    "prediction": (None,),
    "reasoning_effort": (None,),
    "service_tier": (None, "auto", "default"),
    "web_search_options": (None,),
    "echo": (None, False),
    "suffix": (None, ""),
    "best_of": (None, 1),
}


def _refuse_unneutral(body: msgspec.Struct) -> None:
    name = first_refused(fields_of(body), _NEUTRAL)
    if name is not None:
        raise InvalidRequest(f"'{name}' is not supported by Impetus yet; remove it from the request", param=name, code="unsupported_parameter")


def _common(body: _Sampling, max_tokens: int | None) -> dict[str, Any]:
    if body.stream_options is not None and not body.stream:
        raise InvalidRequest("stream_options is only allowed when stream is true", param="stream_options")
    bias: dict[int, float] | None = None
    if body.logit_bias is not None:
        try:
            bias = {int(k): v for k, v in body.logit_bias.items()}
        except ValueError:
            raise InvalidRequest("logit_bias keys must be token ids", param="logit_bias") from None
    return dict(
        model=body.model,
        max_tokens=max_tokens,
        temperature=body.temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        min_p=body.min_p,
        stop=body.stop,
        seed=body.seed,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        logit_bias=bias,
        stream=bool(body.stream),
        keep_alive=body.keep_alive,
        n=1 if body.n is None else body.n,
    )


_ROLES: dict[str, Literal["system", "user", "assistant", "tool"]] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}


def _message(i: int, m: ChatMessage) -> Message:
    where = f"messages[{i}]"
    role = _ROLES.get(m.role)
    if role is None:
        raise InvalidRequest(f"{where}.role must be one of {', '.join(_ROLES)}", param=f"{where}.role")
    if m.tool_calls and role != "assistant":
        raise InvalidRequest("tool_calls belong on assistant messages", param=f"{where}.tool_calls")
    if m.reasoning_content is not None and role != "assistant":
        raise InvalidRequest("reasoning_content belongs on assistant messages", param=f"{where}.reasoning_content")
    if m.name is not None and role != "tool":
        raise InvalidRequest("message names are supported on tool messages only", param=f"{where}.name", code="unsupported_parameter")
    if m.tool_call_id is not None and role != "tool":
        raise InvalidRequest("tool_call_id belongs on tool messages", param=f"{where}.tool_call_id")
    if role == "tool" and not m.tool_call_id:
        raise InvalidRequest("a tool message needs the tool_call_id it answers", param=f"{where}.tool_call_id")
    calls = [ToolCall(id=c.id, name=c.function.name, arguments=c.function.arguments) for c in m.tool_calls or []]
    if m.content is None and not calls:
        raise InvalidRequest(f"{where}.content is required", param=f"{where}.content")
    extra: dict[str, Any] = dict(tool_calls=calls or None, tool_call_id=m.tool_call_id, name=m.name, reasoning=m.reasoning_content)
    if m.content is None or isinstance(m.content, str):
        return Message(role=role, content=m.content or "", **extra)
    texts = []
    for j, part in enumerate(m.content):
        kind = part.get("type")
        if kind != "text" or not isinstance(part.get("text"), str) or set(part) - {"type", "text"}:
            raise InvalidRequest(
                f"{where}.content[{j}]: only text parts ({{'type': 'text', 'text': ...}}) are supported, got type {kind!r}",
                param=f"{where}.content[{j}]",
                code="unsupported_parameter" if kind != "text" else None,
            )
        texts.append(part["text"])
    return Message(role=role, content="".join(texts), **extra)


def _openai(error: BadBody) -> InvalidRequest:
    return InvalidRequest(error.message, param=error.param)


def chat_params(body: ChatCompletionRequest) -> ChatParams:
    _refuse_unneutral(body)
    try:
        fmt = response_format(body.response_format)
        tools = openai_tools(body.tools)
        choice = choice_name(body.tool_choice, "tool_choice")
        named_in(choice, tools, "tool_choice")
    except BadBody as exc:
        raise _openai(exc) from None
    if body.logprobs is not None and not isinstance(body.logprobs, bool):
        raise InvalidRequest("logprobs must be true or false", param="logprobs")
    if body.top_logprobs is not None and not body.logprobs:
        raise InvalidRequest("top_logprobs needs logprobs: true", param="top_logprobs")
    if body.max_tokens is not None and body.max_completion_tokens is not None and body.max_tokens != body.max_completion_tokens:
        raise InvalidRequest("max_tokens and max_completion_tokens disagree; send one", param="max_completion_tokens")
    limit = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    messages = [_message(i, m) for i, m in enumerate(body.messages)]
    return ChatParams(
        messages=messages,
        format=fmt,
        tools=tools,
        tool_choice=choice,
        parallel_tool_calls=body.parallel_tool_calls is not False,
        logprobs=bool(body.logprobs),
        top_logprobs=body.top_logprobs,
        think=body.think,
        **_common(body, limit),
    )


def complete_params(body: CompletionRequest) -> CompleteParams:
    _refuse_unneutral(body)
    prompt = body.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise InvalidRequest("prompt must be one string (batches of prompts are not supported yet)", param="prompt", code="unsupported_parameter")
        prompt = prompt[0]
    if body.think is not None:
        raise InvalidRequest("think applies to chat only", param="think")
    given = body.logprobs
    if given is not None and (isinstance(given, bool) or not isinstance(given, int) or given < 0):
        raise InvalidRequest("logprobs must be an integer: how many alternatives per token (0 for the chosen token only)", param="logprobs")
    logprobs: dict[str, Any] = {} if given is None else {"logprobs": True, "top_logprobs": given}
    return CompleteParams(prompt=prompt, **logprobs, **_common(body, body.max_tokens))


def embed_params(body: EmbeddingRequest) -> EmbedParams:
    if body.encoding_format not in (None, "float", "base64"):
        raise InvalidRequest("encoding_format must be 'float' or 'base64'", param="encoding_format")
    texts = body.input
    if isinstance(texts, list) and any(not isinstance(t, str) for t in texts):
        raise InvalidRequest("input must be text; token arrays are not supported yet", param="input", code="unsupported_parameter")
    return EmbedParams(model=body.model, input=texts, keep_alive=body.keep_alive)
