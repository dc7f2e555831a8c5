"""``tokenize`` / ``detokenize``: a model's own tokenizer, for backends declaring ``tokenize``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from impetusd.dispatch.context import RequestContext
from impetusd.engine.messages import DetokenizeRequest, TokenizeRequest
from impetusd.protocol.api import DetokenizeParams, DetokenizeResult, TokenizeParams, TokenizeResult
from impetusd.protocol.errors import InvalidParams, UnsupportedParameter

if TYPE_CHECKING:
    from impetusd.dispatch.services import Services
    from impetusd.residency.resident import Resident

MAX_IDS = 1_000_000


def _check(resident: Resident) -> None:
    backend = resident.backend
    if "tokenize" not in backend.capabilities:
        raise UnsupportedParameter(
            f"model {resident.spec.name!r} runs on backend {backend.name!r}, which cannot tokenize",
            param="tokenize",
            backend=backend.name,
        )


async def tokenize(services: Services, params: TokenizeParams, ctx: RequestContext) -> TokenizeResult:
    if (params.text is None) == (params.messages is None):
        raise InvalidParams("Invalid params: send exactly one of text and messages", field="text")
    async with services.residency.lease(params.model, keep_alive=params.keep_alive) as lease:
        _check(lease.resident)
        out = await lease.tokenize(TokenizeRequest(text=params.text, messages=params.messages))
    resident = lease.resident
    return TokenizeResult(model=resident.spec.name, backend=resident.backend.name, count=len(out.ids), ids=out.ids, pieces=out.pieces)


async def detokenize(services: Services, params: DetokenizeParams, ctx: RequestContext) -> DetokenizeResult:
    if len(params.ids) > MAX_IDS:
        raise InvalidParams(f"Invalid params: at most {MAX_IDS} ids", field="ids")
    if any(i < 0 for i in params.ids):
        raise InvalidParams("Invalid params: token ids are not negative", field="ids")
    async with services.residency.lease(params.model, keep_alive=params.keep_alive) as lease:
        _check(lease.resident)
        out = await lease.detokenize(DetokenizeRequest(ids=params.ids))
    resident = lease.resident
    return DetokenizeResult(model=resident.spec.name, backend=resident.backend.name, text=out.text, pieces=out.pieces)
