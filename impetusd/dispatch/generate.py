"""``chat`` and ``complete``: validate, check capabilities, run in the worker, time it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio
import msgspec

from impetusd.dispatch.answer import Answer, ChoiceRun, Kind, OnText
from impetusd.dispatch.context import RequestContext
from impetusd.engine.backend import SAMPLING_CAPABILITIES, BackendSpec
from impetusd.engine.messages import GenerateRequest
from impetusd.observe.events import Event
from impetusd.observe.metrics import Outcome, record_outcome
from impetusd.protocol.api import (
    ChatParams,
    Choice,
    Chunk,
    CompleteParams,
    GenerationResult,
    GrammarFormat,
    JsonSchemaFormat,
    Message,
    RecentRequest,
    Timings,
    TokenLogprob,
    ToolCallDelta,
    Usage,
)
from impetusd.protocol.errors import InvalidParams, UnsupportedParameter
from impetusd.toolkit.structured import format_dict, grammar_for

if TYPE_CHECKING:
    from impetusd.dispatch.services import Services
    from impetusd.residency.lease import Lease
    from impetusd.residency.manager import ModelManager
    from impetusd.workers.messages import GenerateDone


def _check_values(params: ChatParams | CompleteParams) -> None:
    def bad(field: str, why: str) -> InvalidParams:
        return InvalidParams(f"Invalid params: {field} {why}", field=field)

    if params.max_tokens is not None and params.max_tokens < 1:
        raise bad("max_tokens", "must be at least 1")
    if params.temperature is not None and not 0.0 <= params.temperature <= 5.0:
        raise bad("temperature", "must be between 0 and 5")
    if params.top_p is not None and not 0.0 < params.top_p <= 1.0:
        raise bad("top_p", "must be in (0, 1]")
    if params.top_k is not None and params.top_k < 0:
        raise bad("top_k", "must be 0 (off) or more")
    if params.min_p is not None and not 0.0 <= params.min_p <= 1.0:
        raise bad("min_p", "must be between 0 and 1")
    stops = [params.stop] if isinstance(params.stop, str) else (params.stop or [])
    if any(not s for s in stops):
        raise bad("stop", "must not contain empty strings")
    if len(stops) > 16:
        raise bad("stop", "may hold at most 16 sequences")
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(params, name)
        if value is not None and not -2.0 <= value <= 2.0:
            raise bad(name, "must be between -2 and 2")
    if params.logit_bias is not None:
        if len(params.logit_bias) > 1024:
            raise bad("logit_bias", "may hold at most 1024 tokens")
        for token, bias in params.logit_bias.items():
            if token < 0:
                raise bad("logit_bias", f"has a negative token id {token}")
            if not -100.0 <= bias <= 100.0:
                raise bad("logit_bias", f"value for token {token} must be between -100 and 100")
    if isinstance(params, ChatParams) and not params.messages:
        raise bad("messages", "must not be empty")
    _check_structured(params, bad)


def _check_structured(params: ChatParams | CompleteParams, bad: Callable[[str, str], InvalidParams]) -> None:
    """format, logprobs, n, tools and tool_choice: checked here, before any worker is used."""
    if not 1 <= params.n <= 8:
        raise bad("n", "must be between 1 and 8")
    if params.top_logprobs is not None:
        if not 0 <= params.top_logprobs <= 20:
            raise bad("top_logprobs", "must be between 0 and 20")
        if not params.logprobs:
            raise bad("top_logprobs", "needs logprobs: true")
    if not isinstance(params, ChatParams):
        return
    tools = params.tools or []
    names = [t.function.name for t in tools]
    for i, tool in enumerate(tools):
        if not tool.function.name or names.count(tool.function.name) > 1:
            raise bad(f"tools[{i}].function.name", "must be a non-empty name, unique among the tools")
    choice = params.tool_choice
    if choice is not None:
        if not tools:
            raise bad("tool_choice", "needs tools")
        if choice not in ("auto", "none", "required") and choice not in names:
            raise bad("tool_choice", f"names {choice!r}, which is not in tools")
    if tools and choice != "none" and params.format is not None:
        raise UnsupportedParameter("'format' cannot be combined with tools (a call has its own schema); use tool_choice 'none' or drop format", param="format")


def _check_grammars(params: ChatParams | CompleteParams) -> None:
    """Compile ``format`` and each tool's parameters (cached): InvalidParams naming
    ``format.schema`` / ``.pattern`` / ``.grammar`` or ``tools[i].function.parameters``.
    Run in a thread: a very large schema takes a second to compile."""
    if params.format is not None:
        grammar_for(params.format)
    tools = (params.tools or []) if isinstance(params, ChatParams) else []
    for i, tool in enumerate(tools):
        grammar_for(JsonSchemaFormat(schema=tool.function.parameters or {"type": "object"}), field=f"tools[{i}].function.parameters")


def _check_capabilities(params: ChatParams | CompleteParams, backend: BackendSpec) -> None:
    kind = "chat" if isinstance(params, ChatParams) else "complete"
    if kind not in backend.capabilities:
        raise UnsupportedParameter(f"backend {backend.name!r} cannot do {kind}", param=kind, backend=backend.name)
    for name in sorted(SAMPLING_CAPABILITIES):
        if getattr(params, name) is not None and name not in backend.capabilities:
            raise UnsupportedParameter(
                f"backend {backend.name!r} does not support {name!r}; remove it from the request",
                param=name,
                backend=backend.name,
            )
    wanted = []
    if params.format is not None:
        kind = params.format.syntax if isinstance(params.format, GrammarFormat) else format_dict(params.format)["type"]
        wanted.append((f"format.{kind}", "format", f"format {kind!r}"))
    if isinstance(params, ChatParams) and params.tools and params.tool_choice != "none":
        wanted.append(("format.json_schema", "tools", "tool calls (they are enforced with a JSON schema)"))
    if params.logprobs:
        wanted.append(("logprobs", "logprobs", "logprobs"))
    for capability, param, what in wanted:
        if capability not in backend.capabilities:
            raise UnsupportedParameter(f"backend {backend.name!r} cannot enforce {what}; see docs/structured.md", param=param, backend=backend.name)


def _check_kind(residency: ModelManager, params: ChatParams | CompleteParams) -> None:
    """An embedding-only model (format metadata ``kind: embedding``) cannot generate:
    refused before it is loaded, whatever its backend can do for other models."""
    kind = "chat" if isinstance(params, ChatParams) else "complete"
    spec = residency.resolve(params.model)
    if spec.metadata.get("kind") == "embedding":
        raise UnsupportedParameter(f"model {spec.name!r} is an embedding model: it cannot do {kind}; use embed", param=kind, model=spec.name)


def build_request(params: ChatParams | CompleteParams, default_max_tokens: int, default_temperature: float) -> GenerateRequest:
    """The worker's request: the sampling resolved (the configuration's defaults for what was not asked for)."""
    sampling = params.resolved(default_max_tokens, default_temperature)
    top_logprobs = (params.top_logprobs or 0) if params.logprobs else None
    if isinstance(params, ChatParams):
        messages, think = list(params.messages), params.think
        return GenerateRequest(kind="chat", messages=messages, think=think, sampling=sampling, format=params.format, top_logprobs=top_logprobs)
    return GenerateRequest(kind="complete", prompt=params.prompt, sampling=sampling, format=params.format, top_logprobs=top_logprobs)


async def generate(services: Services, params: ChatParams | CompleteParams, ctx: RequestContext) -> GenerationResult:
    method = "chat" if isinstance(params, ChatParams) else "complete"
    with record_outcome(services.metrics, method) as outcome:
        result = await _generate(services, params, ctx, outcome)
        outcome.value = result.finish_reason
        return result


async def _generate(services: Services, params: ChatParams | CompleteParams, ctx: RequestContext, outcome: Outcome) -> GenerationResult:
    _check_values(params)
    if params.format is not None or (isinstance(params, ChatParams) and params.tools):
        await anyio.to_thread.run_sync(_check_grammars, params)
    _check_kind(services.residency, params)
    # the model's queue counts this request: Overloaded when too many wait for it
    async with services.residency.lease(params.model, keep_alive=params.keep_alive, queued=ctx) as lease:
        outcome.model = lease.resident.spec.name
        _check_capabilities(params, lease.resident.backend)
        request = build_request(params, services.config.default_max_tokens, services.config.default_temperature)
        ctx.cooperative = True  # $/cancel ends the generation with finish_reason "cancelled"
        info = lease.resident.worker.info
        opened = isinstance(params, ChatParams) and info is not None and params.think in info.reasoning_opened
        first_text: list[float] = []
        outcomes: list[Answer | None] = [None] * params.n

        async def one(index: int) -> None:
            async def send(kind: Kind, text: str, call: ToolCallDelta | None, logprobs: list[TokenLogprob] | None) -> None:
                if not first_text:
                    first_text.append(time.monotonic())
                if params.stream:
                    await ctx.notify("chat.chunk", Chunk(id=ctx.id, delta=text, kind=kind, choice=index, tool_call=call, logprobs=logprobs))

            async def run(req: GenerateRequest, on_text: OnText) -> GenerateDone:
                return await lease.generate(req, on_text, ctx.cancel_requested)

            outcomes[index] = await ChoiceRun(params, _seeded(request, index), run, send, opened).run()

        sent = time.monotonic()
        if params.n == 1:
            await one(0)
        else:  # n independent requests: a batching engine decodes them together
            async with anyio.create_task_group() as tg:
                for i in range(params.n):
                    tg.start_soon(one, i)
    done = [o for o in outcomes if o is not None]
    return _finish(services, params, ctx, lease, done, sent, first_text)


def _seeded(request: GenerateRequest, index: int) -> GenerateRequest:
    """Choice ``index``'s request: a seed asked for moves on by one a choice."""
    seed = request.sampling.seed
    if seed is None or index == 0:
        return request
    return msgspec.structs.replace(request, sampling=msgspec.structs.replace(request.sampling, seed=seed + index))


def _finish(
    services: Services, params: ChatParams | CompleteParams, ctx: RequestContext, lease: Lease, done: list[Answer], sent: float, first_text: list[float]
) -> GenerationResult:
    """The result of every choice, once their usage and timings are recorded."""
    usage = _usage(done)
    timings, ttft_ms = _timings(ctx, lease, done, sent, first_text)
    _record(services, params, lease, done, usage, timings, ttft_ms)
    return _result(params, lease, done, usage, timings)


def _usage(done: list[Answer]) -> Usage:
    """Each choice's prompt once (a later phase re-reads it from the prompt cache); every generated token."""
    return Usage(
        prompt_tokens=sum(o.results[0].prompt_tokens for o in done),
        completion_tokens=sum(r.completion_tokens for o in done for r in o.results),
        cached_tokens=sum(o.results[0].cached_tokens for o in done),
    )


def _timings(ctx: RequestContext, lease: Lease, done: list[Answer], sent: float, first_text: list[float]) -> tuple[Timings, float | None]:
    """The request's timings, and its time to first token unrounded (for the metrics)."""
    head = done[0]
    res, last = head.results[0], head.results[-1]
    every = [r for o in done for r in o.results]
    drafted = sum(r.draft_tokens or 0 for r in every)  # speculative decoding, over every phase and choice
    accepted = sum(r.draft_accepted or 0 for r in every)
    resident, load_ms = lease.resident, lease.load_ms
    finished = time.monotonic()
    # The backend's own TTFT when it measures one; else when its first text reached the daemon.
    ttft_ms = res.ttft_ms if res.ttft_ms is not None else ((first_text[0] - sent) * 1000 if first_text else None)
    queued_ms = (sent - ctx.received) * 1000 - load_ms + head.queued_ms
    timings = Timings(
        queued_ms=round(max(queued_ms, 0.0), 2),
        load_ms=round(load_ms, 2),
        ttft_ms=None if ttft_ms is None else round(ttft_ms, 2),
        prefill_tps=None if res.prefill_tps is None else round(res.prefill_tps, 2),
        decode_tps=None if last.decode_tps is None else round(last.decode_tps, 2),
        total_ms=round((finished - ctx.received) * 1000, 2),
        batch_size=max((r.batch_size or 0 for r in every), default=0) or None,
        nodes=list(resident.placement.addresses) if resident.placement and resident.placement.addresses else None,
        draft_tokens=drafted or None,
        draft_accepted=accepted if drafted else None,
        acceptance_rate=round(accepted / drafted, 4) if drafted else None,
    )
    return timings, ttft_ms


def _record(
    services: Services, params: ChatParams | CompleteParams, lease: Lease, done: list[Answer], usage: Usage, timings: Timings, ttft_ms: float | None
) -> None:
    """Metrics, the model's stats and the ``request.finished`` event."""
    resident = lease.resident
    name, finish, decode_tps = resident.spec.name, done[0].finish, done[0].results[-1].decode_tps
    services.metrics.tokens(name, usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)
    resident.stats.record(usage.prompt_tokens, usage.completion_tokens, decode_tps)
    services.metrics.timings(name, ttft_ms, decode_tps)
    services.metrics.finished(
        RecentRequest(
            time=time.time(),
            model=name,
            method="chat" if isinstance(params, ChatParams) else "complete",
            outcome=finish,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            ttft_ms=timings.ttft_ms,
            decode_tps=timings.decode_tps,
            total_ms=timings.total_ms,
        )
    )
    data = {"finish_reason": finish, "usage": msgspec.to_builtins(usage), "timings": msgspec.to_builtins(timings)}
    services.emit(Event(kind="request.finished", model=name, data=data))


def _result(params: ChatParams | CompleteParams, lease: Lease, done: list[Answer], usage: Usage, timings: Timings) -> GenerationResult:
    """The first choice at the top level, as a single-choice client reads it; all of them in ``choices`` when n > 1."""
    resident = lease.resident
    chat = isinstance(params, ChatParams)
    choices = [
        Choice(
            index=i,
            finish_reason=o.finish,
            message=_message(o) if chat else None,
            text=None if chat else o.content,
            stop_sequence=o.stop_sequence,
            logprobs=o.logprobs,
            warning=o.warning,
        )
        for i, o in enumerate(done)
    ]
    first = choices[0]
    return GenerationResult(
        model=resident.spec.name,
        backend=resident.backend.name,
        finish_reason=first.finish_reason,
        usage=usage,
        timings=timings,
        message=first.message,
        text=first.text,
        stop_sequence=first.stop_sequence,
        logprobs=first.logprobs,
        choices=choices if len(choices) > 1 else None,
        warning=first.warning,
    )


def _message(o: Answer) -> Message:
    return Message(role="assistant", content=o.content, tool_calls=o.tool_calls or None, reasoning=o.reasoning or None)
