"""Anthropic's stream: typed chunks → the Messages API's event sequence
(``message_start``, content blocks opened, filled and closed in turn, ``message_delta``,
``message_stop``); ``tool_use`` blocks stream their input as ``input_json_delta``."""

from __future__ import annotations

from collections.abc import AsyncIterator

from impetusd.protocol.api import Chunk, GenerationResult

from ..generation import Item
from ..http import sse_event
from .translate import error_of, message_of, stop_reason, usage
from .wire import (
    BlockDelta,
    BlockStart,
    BlockStop,
    ContentBlock,
    InputJsonDelta,
    MessageDelta,
    MessageStart,
    MessageStop,
    Ping,
    StopDelta,
    StreamEvent,
    TextBlock,
    TextDelta,
    ThinkingBlock,
    ThinkingDelta,
    ToolUseBlock,
)


def _event(event: StreamEvent) -> bytes:
    return sse_event(str(event.__struct_config__.tag), event)  # the event name is its type


class _Blocks:
    """The content blocks of a streamed message: one open at a time, each with its index."""

    def __init__(self) -> None:
        self.index = -1
        self.open: str | None = None  # "text", "thinking", or a tool call's index as "tool:N"

    def switch(self, key: str, start: ContentBlock) -> list[bytes]:
        if self.open == key:
            return []
        events = self.close()
        self.index += 1
        self.open = key
        events.append(_event(BlockStart(index=self.index, content_block=start)))
        return events

    def close(self) -> list[bytes]:
        if self.open is None:
            return []
        self.open = None
        return [_event(BlockStop(index=self.index))]


def _block_events(item: Chunk, blocks: _Blocks) -> list[bytes]:
    if item.kind == "reasoning":
        events = blocks.switch("thinking", ThinkingBlock(thinking=""))
        return [*events, _event(BlockDelta(index=blocks.index, delta=ThinkingDelta(thinking=item.delta)))]
    if item.kind == "tool_call" and item.tool_call is not None:
        t = item.tool_call
        events = []
        if t.id is not None:
            events = blocks.switch(f"tool:{t.index}", ToolUseBlock(id=t.id, name=t.name or "", input={}))
        if t.arguments:
            events.append(_event(BlockDelta(index=blocks.index, delta=InputJsonDelta(partial_json=t.arguments))))
        return events
    events = blocks.switch("text", TextBlock(text=""))
    return [*events, _event(BlockDelta(index=blocks.index, delta=TextDelta(text=item.delta)))]


async def events(items: AsyncIterator[Item], mid: str, model: str) -> AsyncIterator[bytes]:
    blocks = _Blocks()
    try:
        yield _event(MessageStart(message=message_of(mid, model, [], None)))
        started = False
        async for item in items:
            if isinstance(item, GenerationResult):
                if blocks.index < 0:  # nothing was said: one empty text block, as Anthropic sends
                    yield _event(BlockStart(index=0, content_block=TextBlock(text="")))
                    blocks.open = "text"
                    blocks.index = 0
                for event in blocks.close():
                    yield event
                # Input tokens are known at the end only; message_delta's usage counts are totals.
                yield _event(MessageDelta(delta=StopDelta(stop_reason=stop_reason(item), stop_sequence=item.stop_sequence), usage=usage(item)))
                yield _event(MessageStop())
                continue
            for event in _block_events(item, blocks):
                yield event
                if not started:
                    started = True
                    yield _event(Ping())
    except Exception as exc:
        yield sse_event("error", error_of(exc).body())
