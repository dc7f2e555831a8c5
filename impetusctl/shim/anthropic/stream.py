"""Anthropic's stream: typed chunks → the Messages API's event sequence
(``message_start``, content blocks opened, filled and closed in turn, ``message_delta``,
``message_stop``); ``tool_use`` blocks stream their input as ``input_json_delta``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from impetusd.protocol.api import GenerationResult

from ..generation import Item
from ..http import sse_event
from .translate import error_of, message_of, stop_reason, usage


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return sse_event(kind, {"type": kind, **data})


class _Blocks:
    """The content blocks of a streamed message: one open at a time, each with its index."""

    def __init__(self) -> None:
        self.index = -1
        self.open: str | None = None  # "text", "thinking", or a tool call's index as "tool:N"

    def switch(self, key: str, start: dict[str, Any]) -> list[bytes]:
        if self.open == key:
            return []
        events = self.close()
        self.index += 1
        self.open = key
        events.append(_event("content_block_start", {"index": self.index, "content_block": start}))
        return events

    def close(self) -> list[bytes]:
        if self.open is None:
            return []
        self.open = None
        return [_event("content_block_stop", {"index": self.index})]


def _block_events(item: Any, blocks: _Blocks) -> list[bytes]:
    if item.kind == "reasoning":
        events = blocks.switch("thinking", {"type": "thinking", "thinking": "", "signature": ""})
        return [*events, _event("content_block_delta", {"index": blocks.index, "delta": {"type": "thinking_delta", "thinking": item.delta}})]
    if item.kind == "tool_call" and item.tool_call is not None:
        t = item.tool_call
        events = []
        if t.id is not None:
            events = blocks.switch(f"tool:{t.index}", {"type": "tool_use", "id": t.id, "name": t.name or "", "input": {}})
        if t.arguments:
            events.append(_event("content_block_delta", {"index": blocks.index, "delta": {"type": "input_json_delta", "partial_json": t.arguments}}))
        return events
    events = blocks.switch("text", {"type": "text", "text": ""})
    return [*events, _event("content_block_delta", {"index": blocks.index, "delta": {"type": "text_delta", "text": item.delta}})]


async def events(items: AsyncIterator[Item], mid: str, model: str) -> AsyncIterator[bytes]:
    blocks = _Blocks()
    try:
        yield _event("message_start", {"message": message_of(mid, model, [], None)})
        started = False
        async for item in items:
            if isinstance(item, GenerationResult):
                if blocks.index < 0:  # nothing was said: one empty text block, as Anthropic sends
                    yield _event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
                    blocks.open = "text"
                    blocks.index = 0
                for event in blocks.close():
                    yield event
                # Input tokens are known at the end only; message_delta's usage counts are totals.
                delta = {"stop_reason": stop_reason(item), "stop_sequence": item.stop_sequence}
                yield _event("message_delta", {"delta": delta, "usage": usage(item)})
                yield _event("message_stop", {})
                continue
            for event in _block_events(item, blocks):
                yield event
                if not started:
                    started = True
                    yield _event("ping", {})
    except Exception as exc:
        yield sse_event("error", error_of(exc).body())
