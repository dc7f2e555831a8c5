"""OpenAI's streams: typed chunks → ``chat.completion.chunk`` and ``text_completion``
SSE events, ended by ``[DONE]`` or by an error event the client raises."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, TypedDict

from impetusd.protocol.api import Chunk, GenerationResult
from impetusd.protocol.errors import ImpetusError

from ...client import DaemonUnavailable
from ..generation import Item
from ..http import sse
from . import wire
from .translate import chat_logprobs, choices_of, error_of, fingerprint, finish, legacy_logprobs, usage_of


async def _guarded(events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """End the stream with ``[DONE]``, or with an error event the client raises."""
    try:
        async for event in events:
            yield event
    except (ImpetusError, DaemonUnavailable) as exc:
        yield sse(error_of(exc).body())
        return
    yield b"data: [DONE]\n\n"


class _Head(TypedDict):
    """The fields every chunk of one streamed completion repeats."""

    id: str
    created: int
    model: str
    system_fingerprint: str


def _delta(chunk: Chunk) -> wire.Delta:
    """A typed chunk → OpenAI's delta: content, reasoning_content, or a tool call's
    piece (the first with index, id, type and name and empty arguments)."""
    if chunk.kind == "reasoning":
        return wire.Delta(reasoning_content=chunk.delta)
    if chunk.kind == "tool_call" and chunk.tool_call is not None:
        t = chunk.tool_call
        if t.id is not None:
            return wire.Delta(
                tool_calls=[wire.DeltaToolCall(index=t.index, id=t.id, type="function", function=wire.FunctionCall(name=t.name or "", arguments=""))]
            )
        return wire.Delta(tool_calls=[wire.DeltaToolCall(index=t.index, function=wire.FunctionCall(arguments=t.arguments))])
    return wire.Delta(content=chunk.delta)


async def _chat_events(items: AsyncIterator[Item], head: _Head, n: int, include_usage: bool) -> AsyncIterator[bytes]:
    usage: Any = None if include_usage else wire.NOT_GIVEN

    def one(choice: int, delta: wire.Delta, **more: Any) -> bytes:
        return sse(wire.ChatCompletionChunk(choices=[wire.ChunkChoice(index=choice, delta=delta, **more)], usage=usage, **head))

    for i in range(n):
        yield one(i, wire.Delta(role="assistant", content=""))
    async for item in items:
        if isinstance(item, GenerationResult):
            head["model"] = item.model
            ext = wire.ImpetusExtension(backend=item.backend, timings=item.timings, warning=item.warning)
            ends = [wire.ChunkChoice(index=c.index, delta=wire.Delta(), finish_reason=finish(c.finish_reason)) for c in choices_of(item)]
            yield sse(wire.ChatCompletionChunk(choices=ends, usage=usage, impetus=ext, **head))
            if include_usage:
                yield sse(wire.ChatCompletionChunk(choices=[], usage=usage_of(item.usage), **head))
            continue  # the result is the last item
        t = item.tool_call
        if t is not None and t.id is not None and t.arguments:  # a first piece that carries arguments too: two deltas, as OpenAI sends
            yield one(item.choice, _delta(item))
            item = Chunk(
                id=item.id, delta="", kind="tool_call", choice=item.choice, tool_call=type(t)(index=t.index, arguments=t.arguments), logprobs=item.logprobs
            )
        yield one(item.choice, _delta(item), logprobs=chat_logprobs(item.logprobs))


async def _text_events(items: AsyncIterator[Item], head: _Head, include_usage: bool) -> AsyncIterator[bytes]:
    usage: Any = None if include_usage else wire.NOT_GIVEN
    offsets: dict[int, int] = {}
    async for item in items:
        if isinstance(item, GenerationResult):
            head["model"] = item.model
            ext = wire.ImpetusExtension(backend=item.backend, timings=item.timings, warning=item.warning)
            ends = [wire.TextChoice(index=c.index, text="", finish_reason=finish(c.finish_reason)) for c in choices_of(item)]
            yield sse(wire.TextCompletion(choices=ends, usage=usage, impetus=ext, **head))
            if include_usage:
                yield sse(wire.TextCompletion(choices=[], usage=usage_of(item.usage), **head))
            continue  # the result is the last item
        at = offsets.get(item.choice, 0)
        offsets[item.choice] = at + len(item.delta)
        logprobs = legacy_logprobs(item.logprobs, at)
        yield sse(wire.TextCompletion(choices=[wire.TextChoice(index=item.choice, text=item.delta, logprobs=logprobs)], usage=usage, **head))


def events(items: AsyncIterator[Item], *, chat: bool, rid: str, created: int, model: str, n: int, include_usage: bool) -> AsyncIterator[bytes]:
    """A streamed chat (``chat``) or text completion's SSE events, guarded."""
    head = _Head(id=rid, created=created, model=model, system_fingerprint=fingerprint())
    return _guarded(_chat_events(items, head, n, include_usage) if chat else _text_events(items, head, include_usage))
