"""``chat`` and ``complete``: validate, check capabilities, run in the worker, time it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TypedDict

import msgspec

from impetusd.dispatch.context import RequestContext
from impetusd.observe.events import Event
from impetusd.observe.metrics import Outcome, record_outcome
from impetusd.plugin.engine import SAMPLING_CAPABILITIES, BackendSpec, GenerateRequest
from impetusd.protocol.api import ChatParams, Chunk, CompleteParams, GenerationResult, Message, RecentRequest, Timings, Usage
from impetusd.protocol.errors import InvalidParams, UnsupportedParameter

if TYPE_CHECKING:
    from impetusd.dispatch.services import Services
    from impetusd.residency.manager import ModelManager


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


def _check_kind(residency: ModelManager, params: ChatParams | CompleteParams) -> None:
    """An embedding-only model (format metadata ``kind: embedding``) cannot generate:
    refused before it is loaded, whatever its backend can do for other models."""
    kind = "chat" if isinstance(params, ChatParams) else "complete"
    spec = residency.resolve(params.model)
    if spec.metadata.get("kind") == "embedding":
        raise UnsupportedParameter(f"model {spec.name!r} is an embedding model: it cannot do {kind}; use embed", param=kind, model=spec.name)


class _Options(TypedDict):
    """The GenerateRequest fields chat and complete share."""

    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    min_p: float
    stop: list[str]
    seed: int | None
    presence_penalty: float
    frequency_penalty: float
    logit_bias: dict[int, float]


def build_request(params: ChatParams | CompleteParams, default_max_tokens: int, default_temperature: float) -> GenerateRequest:
    stops = [params.stop] if isinstance(params.stop, str) else list(params.stop or [])
    common = _Options(
        max_tokens=params.max_tokens or default_max_tokens,
        temperature=default_temperature if params.temperature is None else params.temperature,
        top_p=1.0 if params.top_p is None else params.top_p,
        top_k=params.top_k or 0,
        min_p=params.min_p or 0.0,
        stop=stops,
        seed=params.seed,
        presence_penalty=params.presence_penalty or 0.0,
        frequency_penalty=params.frequency_penalty or 0.0,
        logit_bias=dict(params.logit_bias or {}),
    )
    if isinstance(params, ChatParams):
        return GenerateRequest(kind="chat", messages=list(params.messages), **common)
    return GenerateRequest(kind="complete", prompt=params.prompt, **common)


async def generate(services: Services, params: ChatParams | CompleteParams, ctx: RequestContext) -> GenerationResult:
    method = "chat" if isinstance(params, ChatParams) else "complete"
    with record_outcome(services.metrics, method) as outcome:
        result = await _generate(services, params, ctx, outcome)
        outcome.value = result.finish_reason
        return result


async def _generate(services: Services, params: ChatParams | CompleteParams, ctx: RequestContext, outcome: Outcome) -> GenerationResult:
    _check_values(params)
    _check_kind(services.residency, params)
    # the model's queue counts this request: Overloaded when too many wait for it
    async with services.residency.lease(params.model, keep_alive=params.keep_alive, queued=ctx) as lease:
        outcome.model = lease.resident.spec.name
        _check_capabilities(params, lease.resident.backend)
        request = build_request(params, services.config.default_max_tokens, services.config.default_temperature)
        ctx.cooperative = True  # $/cancel ends the generation with finish_reason "cancelled"
        first_text: list[float] = []

        async def on_text(text: str) -> None:
            if not first_text:
                first_text.append(time.monotonic())
            if params.stream:
                await ctx.notify("chat.chunk", Chunk(id=ctx.id, delta=text))

        sent = time.monotonic()
        done = await lease.generate(request, on_text, ctx.cancel_requested)
    resident, load_ms = lease.resident, lease.load_ms
    finished = time.monotonic()
    res = done.result
    # The backend's own TTFT when it measures one; else when its first text reached the daemon.
    ttft_ms = res.ttft_ms if res.ttft_ms is not None else ((first_text[0] - sent) * 1000 if first_text else None)
    queued_ms = (sent - ctx.received) * 1000 - load_ms + done.queued_ms
    timings = Timings(
        queued_ms=round(max(queued_ms, 0.0), 2),
        load_ms=round(load_ms, 2),
        ttft_ms=None if ttft_ms is None else round(ttft_ms, 2),
        prefill_tps=None if res.prefill_tps is None else round(res.prefill_tps, 2),
        decode_tps=None if res.decode_tps is None else round(res.decode_tps, 2),
        total_ms=round((finished - ctx.received) * 1000, 2),
        batch_size=res.batch_size,
        nodes=[n.address for n in resident.placement.nodes] if resident.placement and resident.placement.nodes else None,
    )
    usage = Usage(prompt_tokens=res.prompt_tokens, completion_tokens=res.completion_tokens, cached_tokens=res.cached_tokens)
    services.metrics.tokens(resident.spec.name, usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)
    resident.stats.record(usage.prompt_tokens, usage.completion_tokens, res.decode_tps)
    services.metrics.timings(resident.spec.name, ttft_ms, res.decode_tps)
    services.metrics.finished(
        RecentRequest(
            time=time.time(),
            model=resident.spec.name,
            method="chat" if isinstance(params, ChatParams) else "complete",
            outcome=res.finish_reason,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            ttft_ms=timings.ttft_ms,
            decode_tps=timings.decode_tps,
            total_ms=timings.total_ms,
        )
    )
    services.emit(
        Event(
            kind="request.finished",
            model=resident.spec.name,
            data={
                "finish_reason": res.finish_reason,
                "usage": msgspec.to_builtins(usage),
                "timings": msgspec.to_builtins(timings),
            },
        )
    )
    message = Message(role="assistant", content=res.text) if isinstance(params, ChatParams) else None
    text = None if isinstance(params, ChatParams) else res.text
    return GenerationResult(
        model=resident.spec.name,
        backend=resident.backend.name,
        finish_reason=res.finish_reason,
        usage=usage,
        timings=timings,
        message=message,
        text=text,
        stop_sequence=res.stop_sequence,
    )
