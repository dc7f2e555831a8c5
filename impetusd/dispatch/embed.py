"""``embed``: vectors for texts from a model whose backend declares ``embed``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from impetusd.dispatch.context import RequestContext
from impetusd.engine.messages import EmbedRequest
from impetusd.observe.metrics import record_outcome
from impetusd.protocol.api import EmbedParams, EmbedResult, Timings, Usage
from impetusd.protocol.errors import InvalidParams, UnsupportedParameter

if TYPE_CHECKING:
    from impetusd.dispatch.services import Services

MAX_INPUTS = 256


async def embed(services: Services, params: EmbedParams, ctx: RequestContext) -> EmbedResult:
    texts = [params.input] if isinstance(params.input, str) else list(params.input)
    with record_outcome(services.metrics, "embed") as outcome:
        if not texts:
            raise InvalidParams("Invalid params: input must not be empty", field="input")
        if len(texts) > MAX_INPUTS:
            raise InvalidParams(f"Invalid params: input may hold at most {MAX_INPUTS} texts", field="input")
        async with services.residency.lease(params.model, keep_alive=params.keep_alive) as lease:
            resident, load_ms = lease.resident, lease.load_ms
            outcome.model = resident.spec.name
            backend = resident.backend
            if "embed" not in backend.capabilities:
                raise UnsupportedParameter(
                    f"model {resident.spec.name!r} runs on backend {backend.name!r}, which cannot make embeddings",
                    param="embed",
                    backend=backend.name,
                )
            sent = time.monotonic()
            done = await lease.embed(EmbedRequest(texts=texts))
        out = done.output
        services.metrics.tokens(resident.spec.name, out.prompt_tokens, 0, 0)
        resident.stats.record(out.prompt_tokens, 0, None)
        queued_ms = (sent - ctx.received) * 1000 - load_ms + done.queued_ms
        timings = Timings(
            queued_ms=round(max(queued_ms, 0.0), 2),
            load_ms=round(load_ms, 2),
            ttft_ms=None,
            prefill_tps=None,
            decode_tps=None,
            total_ms=round((time.monotonic() - ctx.received) * 1000, 2),
        )
        outcome.value = "ok"
        return EmbedResult(
            model=resident.spec.name,
            backend=backend.name,
            embeddings=out.vectors,
            usage=Usage(prompt_tokens=out.prompt_tokens, completion_tokens=0),
            timings=timings,
        )
