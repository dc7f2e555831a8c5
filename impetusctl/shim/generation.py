"""What every API surface does with a generation: run ``chat`` or ``complete`` on
the daemon, collected or streamed as typed chunks (``Chunk`` then
``GenerationResult``), cancelled when the client goes away.

The OpenAI, Ollama, Anthropic and Responses packages differ only in shapes; this
is the daemon side of their generations, once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
from starlette.requests import Request

from impetusd.protocol.api import ChatParams, Chunk, CompleteParams, GenerationResult

from ..aclient import AsyncDaemon, Exchange
from .http import until_disconnect

Item = Chunk | GenerationResult


async def _result(exchange: Exchange) -> GenerationResult:
    while not isinstance(item := await exchange.next(), msgspec.Raw):
        pass
    return msgspec.json.decode(bytes(item), type=GenerationResult)


async def generate(request: Request, daemon: AsyncDaemon, params: ChatParams | CompleteParams) -> GenerationResult:
    """Run a request to its end (not streamed); cancelled if the client leaves."""
    exchange = await daemon.open("chat" if isinstance(params, ChatParams) else "complete", params)
    try:
        return await until_disconnect(request, lambda: _result(exchange))
    finally:
        await exchange.aclose()


async def stream(daemon: AsyncDaemon, params: ChatParams | CompleteParams) -> AsyncIterator[Item]:
    """Start a streamed request and wait for its first chunk, so that load and
    validation errors still get a proper status; then its chunks and its result."""
    exchange = await daemon.open("chat" if isinstance(params, ChatParams) else "complete", params)
    try:
        first = await exchange.next()
    except BaseException:
        await exchange.aclose()
        raise
    return _items(exchange, first)


async def _items(exchange: Exchange, first: Chunk | msgspec.Raw) -> AsyncIterator[Item]:
    item = first
    streamed: dict[int, list[str]] = {}
    try:
        while True:
            if isinstance(item, msgspec.Raw):
                result = msgspec.json.decode(bytes(item), type=GenerationResult)
                for missing in unstreamed(result, streamed):
                    yield missing
                yield result
                return
            if item.kind == "content":
                streamed.setdefault(item.choice, []).append(item.delta)
            yield item
            item = await exchange.next()
    finally:
        await exchange.aclose()


def unstreamed(result: GenerationResult, streamed: dict[int, list[str]]) -> list[Chunk]:
    """Content the result has that no chunk carried (a tool call that failed to parse
    comes back as text in ``content``): sent as one last content chunk per choice, so a
    streaming client loses nothing a non-streaming one would get."""
    finals = [(c.index, c.message.content if c.message else (c.text or "")) for c in result.choices or []]
    if not finals:
        finals = [(0, result.message.content if result.message else (result.text or ""))]
    out = []
    for index, text in finals:
        sent = "".join(streamed.get(index, []))
        if len(text) > len(sent) and text.startswith(sent):
            out.append(Chunk(id=None, delta=text[len(sent) :], choice=index))
    return out
