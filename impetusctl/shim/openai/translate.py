"""OpenAI's requests → the daemon's params, the daemon's results → OpenAI's
responses, and any failure → OpenAI's error object.

Fields Impetus can honour are passed on; fields it cannot are refused by name
when set to anything but their neutral value. Nothing is dropped quietly.
"""

from __future__ import annotations

import array
import base64
import re
import secrets
import time
from typing import Any, Literal

import msgspec

from impetusd.protocol.api import (
    ChatParams,
    Choice,
    CompleteParams,
    EmbedParams,
    EmbedResult,
    GenerationResult,
    Message,
    ModelEntry,
    Sampling,
    TokenLogprob,
    ToolCall,
    Usage,
)
from impetusd.protocol.errors import ImpetusError
from impetusd.protocol.version import __version__

from ...client import DaemonUnavailable
from ..http import BadBody, daemon_message, daemon_status, fields_of, first_refused
from ..structured import openai_tools, response_format, tool_choice
from .wire import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessage,
    ChoiceLogprobs,
    CompletionRequest,
    CompletionUsage,
    ContentLogprob,
    EmbeddingItem,
    EmbeddingList,
    EmbeddingRequest,
    EmbeddingUsage,
    FunctionCall,
    ImpetusExtension,
    InvalidRequest,
    LegacyLogprobs,
    ModelCard,
    ModelCardList,
    OpenAIError,
    OutToolCall,
    PromptTokensDetails,
    TextChoice,
    TextCompletion,
    TopLogprob,
    _Sampling,
)

# The daemon's field names that OpenAI's API spells otherwise.
RENAMED = {"format.schema": "response_format.json_schema.schema", "format": "response_format"}


# --- requests ---------------------------------------------------------------

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
    sampling = {name: getattr(body, name) for name in Sampling.__struct_fields__}
    return sampling | dict(
        model=body.model,
        max_tokens=max_tokens,
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


def chat_params(body: ChatCompletionRequest) -> ChatParams:
    _refuse_unneutral(body)
    fmt = response_format(body.response_format)
    tools = openai_tools(body.tools)
    choice = tool_choice(body.tool_choice, tools)
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


# --- responses --------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def fingerprint() -> str:
    return f"impetus-{__version__}"


def finish(reason: str) -> str:
    # "cancelled" only reaches a client that is already gone; OpenAI has no such value.
    return "stop" if reason == "cancelled" else reason


def usage_of(usage: Usage) -> CompletionUsage:
    return CompletionUsage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.prompt_tokens + usage.completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_tokens),
    )


def choices_of(result: GenerationResult) -> list[Choice]:
    """Every choice of a result (one, unless ``n`` > 1)."""
    if result.choices:
        return result.choices
    one = Choice(index=0, finish_reason=result.finish_reason, message=result.message, text=result.text, logprobs=result.logprobs)
    return [one]


def tool_calls_of(calls: list[ToolCall] | None) -> list[OutToolCall] | msgspec.UnsetType:
    if not calls:
        return msgspec.UNSET
    return [OutToolCall(id=c.id, function=FunctionCall(name=c.name, arguments=c.arguments)) for c in calls]


def assistant(message: Message | None) -> AssistantMessage:
    if message is None:
        return AssistantMessage(role="assistant", content="")
    calls = tool_calls_of(message.tool_calls)
    content = None if calls and not message.content else message.content
    reasoning = message.reasoning if message.reasoning else msgspec.UNSET
    return AssistantMessage(role="assistant", content=content, tool_calls=calls, reasoning_content=reasoning)


def chat_logprobs(tokens: list[TokenLogprob] | None) -> ChoiceLogprobs | None:
    if tokens is None:
        return None
    return ChoiceLogprobs(
        content=[ContentLogprob(t.token, t.logprob, t.bytes, [TopLogprob(a.token, a.logprob, a.bytes) for a in t.top_logprobs]) for t in tokens]
    )


def legacy_logprobs(tokens: list[TokenLogprob] | None, offset: int = 0) -> LegacyLogprobs | None:
    """``offset``: where these tokens' text starts in the whole completion."""
    if tokens is None:
        return None
    offsets = []
    for t in tokens:
        offsets.append(offset)
        offset += len(t.token)
    tops = [{a.token: a.logprob for a in t.top_logprobs} for t in tokens]
    return LegacyLogprobs(
        tokens=[t.token for t in tokens],
        token_logprobs=[t.logprob for t in tokens],
        top_logprobs=tops if any(tops) else None,
        text_offset=offsets,
    )


def chat_completion(rid: str, created: int, result: GenerationResult) -> ChatCompletion:
    return ChatCompletion(
        id=rid,
        created=created,
        model=result.model,
        system_fingerprint=fingerprint(),
        choices=[
            ChatChoice(index=c.index, message=assistant(c.message), finish_reason=finish(c.finish_reason), logprobs=chat_logprobs(c.logprobs))
            for c in choices_of(result)
        ],
        usage=usage_of(result.usage),
        impetus=ImpetusExtension(backend=result.backend, timings=result.timings, warning=result.warning),
    )


def text_completion(rid: str, created: int, result: GenerationResult) -> TextCompletion:
    return TextCompletion(
        id=rid,
        created=created,
        model=result.model,
        system_fingerprint=fingerprint(),
        choices=[
            TextChoice(index=c.index, text=c.text or "", finish_reason=finish(c.finish_reason), logprobs=legacy_logprobs(c.logprobs))
            for c in choices_of(result)
        ],
        usage=usage_of(result.usage),
        impetus=ImpetusExtension(backend=result.backend, timings=result.timings, warning=result.warning),
    )


def embedding_list(result: EmbedResult, encoding: str | None) -> EmbeddingList:
    def encode(vector: list[float]) -> list[float] | str:
        if encoding != "base64":
            return vector
        return base64.b64encode(array.array("f", vector).tobytes()).decode("ascii")  # little-endian float32

    return EmbeddingList(
        data=[EmbeddingItem(index=i, embedding=encode(v)) for i, v in enumerate(result.embeddings)],
        model=result.model,
        usage=EmbeddingUsage(prompt_tokens=result.usage.prompt_tokens, total_tokens=result.usage.prompt_tokens),
    )


def model_cards(entries: list[ModelEntry], started: float) -> ModelCardList:
    cards = [ModelCard(id=e.name, created=int(started), owned_by="impetus") for e in entries if e.available]
    return ModelCardList(data=cards)


def now() -> int:
    return int(time.time())


# --- errors -----------------------------------------------------------------


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def from_daemon(exc: ImpetusError, renamed: dict[str, str] | None = None) -> OpenAIError:
    """``renamed``: the daemon's field names as this API spells them (``format`` → ``response_format``)."""
    status = daemon_status(exc)
    param = exc.fields.get("param") or exc.fields.get("field") or ("model" if status == 404 else None)
    if param and renamed:
        for ours, theirs in renamed.items():
            if param == ours or param.startswith((ours + ".", ours + "[")):
                param = theirs + param[len(ours) :]
    return OpenAIError(status, daemon_message(exc), param=param, code=_snake(exc.name))


def unavailable(exc: DaemonUnavailable) -> OpenAIError:
    return OpenAIError(503, f"the Impetus daemon is not reachable: {exc}", code="daemon_unavailable")


def bad_body(exc: BadBody) -> OpenAIError:
    if exc.status == 413:
        return OpenAIError(413, exc.message, code="request_too_large", type="invalid_request_error")
    return InvalidRequest(exc.message, param=exc.param)


def error_of(exc: Exception, renamed: dict[str, str] = RENAMED) -> OpenAIError:
    """Any failure → OpenAI's error object, the daemon's field names spelt as in ``renamed``."""
    if isinstance(exc, OpenAIError):
        return exc
    if isinstance(exc, BadBody):
        return bad_body(exc)
    if isinstance(exc, ImpetusError):
        return from_daemon(exc, renamed)
    if isinstance(exc, DaemonUnavailable):
        return unavailable(exc)
    return OpenAIError(500, f"internal error in the shim: {type(exc).__name__}: {exc}", code="internal_error")
