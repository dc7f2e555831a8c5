"""Ollama's requests → the daemon's params, the daemon's results → Ollama's
objects, and any failure → Ollama's error.

Options Impetus can honour map onto its sampling fields; every other option is
refused by name (never ignored). Model names may carry Ollama's ``:latest`` tag.
Counters are in nanoseconds, timestamps in RFC 3339.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Literal

import msgspec

from impetusd.protocol.api import (
    ChatParams,
    CompleteParams,
    EmbedResult,
    Format,
    GenerationResult,
    JsonObjectFormat,
    LoadedList,
    Message,
    ModelList,
    Timings,
    TokenLogprob,
    ToolCall,
    Usage,
)
from impetusd.protocol.errors import ImpetusError

from ..http import common_failure, daemon_message, daemon_status, fields_of, first_refused
from ..structured import arguments_object, arguments_text, new_call_id, openai_tools, schema_format
from .wire import (
    AssistantOut,
    ChatPiece,
    ChatRequest,
    Details,
    EmbedResponse,
    FunctionOut,
    GeneratePiece,
    GenerateRequest,
    NameRequest,
    OllamaBadRequest,
    OllamaError,
    OllamaMessage,
    Running,
    RunningList,
    ShowResponse,
    Tag,
    Tags,
    ToolCallOut,
    _Generation,
)

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


# --- requests ---------------------------------------------------------------


def model_name(name: str) -> str:
    """``smollm2-135m:latest`` → ``smollm2-135m`` (other tags are Impetus's own selectors)."""
    return name.removesuffix(":latest")


def name_of(body: NameRequest) -> str:
    """show / delete / pull: the model named by ``model`` (or the older ``name``)."""
    given = body.model or body.name
    if not given:
        raise OllamaBadRequest("model is required", "model")
    return model_name(given)


def tagged(name: str) -> str:
    """How Ollama lists a name: with a tag (``:latest`` unless the name has one)."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def refuse_not_yet(body: msgspec.Struct) -> None:
    name = first_refused(fields_of(body), dict.fromkeys(NOT_YET, (None, [], "", False)))
    if name is not None:
        raise OllamaBadRequest(f"'{name}' is not supported: {NOT_YET[name]}", name)


def format_of(given: Any) -> Format | None:
    """``"json"`` → any JSON object; an object → that JSON schema (enforced, never relaxed)."""
    if given in (None, ""):
        return None
    if given == "json":
        return JsonObjectFormat()
    if isinstance(given, dict):
        return schema_format({"schema": given}, "format")
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
        args = arguments_text(fn.get("arguments", {}), f"{where}[{j}].function.arguments")
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
    tools = openai_tools(body.tools)
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


# --- results ----------------------------------------------------------------


def stamp(at: float | None = None) -> str:
    return datetime.fromtimestamp(at if at is not None else time.time(), UTC).isoformat().replace("+00:00", "Z")


def ns(ms: float | None) -> int:
    return int((ms or 0.0) * 1_000_000)


def counters(usage: Usage, timings: Timings) -> dict[str, int]:
    """Ollama's final counters from Impetus's timings (nanoseconds)."""
    ttft = timings.ttft_ms or 0.0
    # the rate is over the tokens prefilled: a prompt read from the cache took none of that time
    prefilled = usage.prompt_tokens - usage.cached_tokens
    prefill_ms = prefilled / timings.prefill_tps * 1000 if timings.prefill_tps else max(ttft - timings.load_ms - timings.queued_ms, 0.0)
    decode_ms = usage.completion_tokens / timings.decode_tps * 1000 if timings.decode_tps else max(timings.total_ms - ttft, 0.0)
    prefill_ms, decode_ms = min(prefill_ms, timings.total_ms), min(decode_ms, timings.total_ms)  # rates of one phase of several
    return {
        "total_duration": ns(timings.total_ms),
        "load_duration": ns(timings.load_ms),
        "prompt_eval_count": usage.prompt_tokens,
        "prompt_eval_duration": ns(prefill_ms),
        "eval_count": usage.completion_tokens,
        "eval_duration": ns(decode_ms),
    }


def _reason(result: GenerationResult) -> str:
    return "length" if result.finish_reason == "length" else "stop"


def _calls_out(calls: list[ToolCall]) -> list[ToolCallOut]:
    """Ollama's tool calls: arguments as an object."""
    return [ToolCallOut(id=c.id, function=FunctionOut(index=i, name=c.name, arguments=arguments_object(c))) for i, c in enumerate(calls)]


def piece(
    chat: bool,
    model: str,
    text: str,
    *,
    thinking: str | None = None,
    calls: list[ToolCall] | None = None,
    logprobs: list[TokenLogprob] | None = None,
    **end: Any,
) -> ChatPiece | GeneratePiece:
    """One object of a chat's or a generation's answer; ``end``: the last one's fields."""
    given: Any = msgspec.UNSET if logprobs is None else logprobs
    if chat:
        message = AssistantOut(role="assistant", content=text, thinking=thinking or msgspec.UNSET, tool_calls=_calls_out(calls) if calls else msgspec.UNSET)
        return ChatPiece(model=model, created_at=stamp(), message=message, logprobs=given, **end)
    return GeneratePiece(model=model, created_at=stamp(), response=text, thinking=thinking or msgspec.UNSET, logprobs=given, **end)


def final(chat: bool, result: GenerationResult, whole: bool) -> ChatPiece | GeneratePiece:
    """The last object; ``whole``: it carries the answer too (not streamed)."""
    end: dict[str, Any] = dict(done=True, done_reason=_reason(result), **counters(result.usage, result.timings))
    if not chat:
        end["context"] = []
    m = result.message
    if not whole:
        return piece(chat, tagged(result.model), "", **end)
    text = m.content if m else (result.text or "")
    return piece(chat, tagged(result.model), text, thinking=m.reasoning if m else None, calls=m.tool_calls if m else None, logprobs=result.logprobs, **end)


def details(fmt: str | None, meta: dict[str, Any]) -> Details:
    family = str(meta.get("architecture") or "")
    params = meta.get("parameters")
    return Details(
        parent_model="",
        format=fmt or "",
        family=family,
        families=[family] if family else None,
        parameter_size=_size_label(params) if isinstance(params, int) else "",
        quantization_level=str(meta.get("quantization") or ""),
    )


def _size_label(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}".replace(".0", "")
    return str(n)


def tags_of(listing: ModelList) -> Tags:
    """``/api/tags``: the models available, tagged."""
    models = []
    for e in listing.models:
        if not e.available:
            continue
        meta = e.metadata or {}
        created = meta.get("created_at")
        models.append(
            Tag(
                name=tagged(e.name),
                model=tagged(e.name),
                modified_at=stamp(created if isinstance(created, float) else None),
                size=e.size_bytes or 0,
                digest=str(meta.get("digest") or ""),
                details=details(e.format, meta),
            )
        )
    return Tags(models=models)


def ps_of(loaded: LoadedList) -> RunningList:
    """``/api/ps``: the models in memory (no keep-alive: expiring in a hundred years)."""
    models = []
    for m in loaded.models:
        expires = m.expires_at if m.expires_at is not None else time.time() + 100 * 365 * 86400
        models.append(
            Running(
                name=tagged(m.name),
                model=tagged(m.name),
                size=m.memory_bytes,
                digest="",
                details=details(m.format, {}),
                expires_at=stamp(expires),
                size_vram=m.memory_bytes if m.backend == "mlx" else 0,
                context_length=m.estimate.context_tokens if m.estimate else 0,
            )
        )
    return RunningList(models=models)


def show_of(name: str, fmt: str, path: str, meta: dict[str, Any], created: float | None) -> ShowResponse:
    """``/api/show``: what Impetus knows of a model, in Ollama's fields."""
    return ShowResponse(
        modelfile=f"# Impetus model {name}\nFROM {path}\n",
        parameters="",
        template="",
        details=details(fmt, meta),
        model_info={k: v for k, v in meta.items() if isinstance(v, str | int | float | bool)},
        capabilities=["completion", "tools"],  # every model: a template without tools gets the fallback
        modified_at=stamp(created),
    )


def embed_of(result: EmbedResult) -> EmbedResponse:
    """``/api/embed``'s answer."""
    return EmbedResponse(
        model=tagged(result.model),
        embeddings=result.embeddings,
        total_duration=ns(result.timings.total_ms),
        load_duration=ns(result.timings.load_ms),
        prompt_eval_count=result.usage.prompt_tokens,
    )


# --- errors -----------------------------------------------------------------


def error_of(exc: Exception) -> OllamaError:
    """Any failure → Ollama's error: its status and message."""
    if isinstance(exc, OllamaError):
        return exc
    if isinstance(exc, ImpetusError):
        status = daemon_status(exc)
        if exc.name in ("ModelNotFound", "ModelNotLoaded"):
            return OllamaError(404, exc.message if "not found" in exc.message else f"model not found: {exc.message}")
        return OllamaError(status if status < 500 else 500, daemon_message(exc))
    return OllamaError(*common_failure(exc))
