"""Ollama's streams: NDJSON, one object per line, the last with ``done: true``,
``done_reason`` and the counters; a failure after the stream began is one
``{"error": ...}`` line, as Ollama sends."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec

from impetusd.protocol.api import Chunk, GenerationResult, PullProgress, PullResult

from ...aclient import Exchange
from ..generation import Item
from ..http import ndjson
from ..structured import CallAssembler
from .translate import error_of, final, piece
from .wire import ErrorBody, PullStatus


async def errors_as_lines(lines: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """A failure after the stream began: one ``{"error": ...}`` line, as Ollama sends."""
    try:
        async for line in lines:
            yield line
    except Exception as exc:
        yield ndjson(ErrorBody(error=error_of(exc).message))


async def pull_lines(exchange: Exchange, first: Chunk | PullProgress | msgspec.Raw) -> AsyncIterator[bytes]:
    item = first
    totals: dict[str, int] = {}
    try:
        yield ndjson(PullStatus(status="pulling manifest"))
        while True:
            if isinstance(item, msgspec.Raw):
                result = msgspec.json.decode(bytes(item), type=PullResult)
                if result.status == "cancelled":
                    yield ndjson(ErrorBody(error="the pull was cancelled"))
                    return
                for name, total in totals.items():  # the last notification may predate the last bytes
                    yield ndjson(PullStatus(status=f"pulling {name}", digest=name, total=total, completed=total))
                yield ndjson(PullStatus(status="verifying sha256 digest"))
                yield ndjson(PullStatus(status="writing manifest"))
                yield ndjson(PullStatus(status="success"))
                return
            if isinstance(item, PullProgress):
                if item.status == "downloading":
                    for f in item.files:
                        totals[f.name] = f.total
                        yield ndjson(PullStatus(status=f"pulling {f.name}", digest=f.name, total=f.total, completed=f.done))
                else:
                    yield ndjson(PullStatus(status=item.status))
            item = await exchange.next_event()
    finally:
        await exchange.aclose()


async def generate_lines(items: AsyncIterator[Item], chat: bool, model: str) -> AsyncIterator[bytes]:
    """Text and thinking as they come; tool calls whole, in one object before the last
    (as Ollama sends them)."""
    calls = CallAssembler()
    async for item in items:
        if isinstance(item, GenerationResult):
            taken = calls.take()
            if taken:
                yield ndjson(piece(chat, model, "", calls=taken))
            yield ndjson(final(chat, item, whole=False))
            return
        if item.kind == "tool_call" and item.tool_call is not None:
            calls.add(item.tool_call)
        elif item.kind == "reasoning":
            yield ndjson(piece(chat, model, "", thinking=item.delta, logprobs=item.logprobs))
        else:
            yield ndjson(piece(chat, model, item.delta, logprobs=item.logprobs))
