"""The Responses API's stream: typed chunks → the events of each output item
(a message, a reasoning item, a function call), opened and closed in turn,
numbered, between ``response.created`` and ``response.completed``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from impetusd.protocol.api import Chunk, GenerationResult, ToolCall
from impetusd.protocol.errors import ImpetusError

from ...client import DaemonUnavailable
from ..generation import Item
from .translate import error_of, status_of
from .wire import (
    ArgumentsDelta,
    ArgumentsDone,
    Completed,
    Created,
    ErrorEvent,
    Incompleted,
    InProgress,
    ItemAdded,
    ItemDone,
    OutputItem,
    PartAdded,
    PartDone,
    ReasoningDelta,
    ReasoningDone,
    Shape,
    TextDelta,
    TextDone,
    call_item,
    message_item,
    new_id,
    reasoning_item,
    text_part,
)


class _Open:
    """The output item being streamed: a message, a reasoning item or a function call."""

    def __init__(self, kind: str, index: int, call: ToolCall | None = None) -> None:
        self.kind = kind
        self.index = index
        self.id = new_id({"message": "msg", "reasoning": "rs", "function_call": "fc"}[kind])
        self.call = call
        self.text: list[str] = []


class _Items:
    """Chunks → the Responses events of each output item, opened and closed in turn."""

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self.open: _Open | None = None
        self.done: list[OutputItem] = []
        self.call_index = -1

    def switch(self, kind: str, call: ToolCall | None = None) -> list[bytes]:
        if self.open is not None and self.open.kind == kind and call is None:
            return []
        events = self.close()
        self.open = item = _Open(kind, len(self.done), call)
        ev = self.shape.event
        if kind == "message":
            events.append(ev(ItemAdded, output_index=item.index, item=message_item("", "in_progress", item.id)))
            events.append(ev(PartAdded, part=text_part(""), **self._at()))
        elif kind == "reasoning":
            events.append(ev(ItemAdded, output_index=item.index, item=reasoning_item("", item.id)))
        else:
            assert call is not None
            events.append(ev(ItemAdded, output_index=item.index, item=call_item(call, "in_progress", item.id)))
        return events

    def _at(self) -> dict[str, Any]:
        assert self.open is not None
        return {"item_id": self.open.id, "output_index": self.open.index, "content_index": 0}

    def close(self) -> list[bytes]:
        item, ev = self.open, self.shape.event
        if item is None:
            return []
        text = "".join(item.text)
        done: OutputItem
        if item.kind == "message":
            done = message_item(text, "completed", item.id)
            events = [
                ev(TextDone, text=text, logprobs=[], **self._at()),
                ev(PartDone, part=text_part(text), **self._at()),
            ]
        elif item.kind == "reasoning":
            done = reasoning_item(text, item.id)
            events = [ev(ReasoningDone, text=text, **self._at())]
        else:
            assert item.call is not None
            call = ToolCall(id=item.call.id, name=item.call.name, arguments=text or "{}")
            done = call_item(call, "completed", item.id)
            events = [ev(ArgumentsDone, item_id=item.id, output_index=item.index, name=call.name, arguments=call.arguments)]
        events.append(ev(ItemDone, output_index=item.index, item=done))
        self.done.append(done)
        self.open = None
        return events

    def add(self, chunk: Chunk) -> list[bytes]:
        ev = self.shape.event
        if chunk.kind == "tool_call" and chunk.tool_call is not None:
            t = chunk.tool_call
            events = self.switch("function_call", ToolCall(id=t.id, name=t.name or "", arguments="")) if t.id is not None else []
            if t.arguments and self.open is not None:
                self.open.text.append(t.arguments)
                events.append(ev(ArgumentsDelta, item_id=self.open.id, output_index=self.open.index, delta=t.arguments))
            return events
        kind = "reasoning" if chunk.kind == "reasoning" else "message"
        events = self.switch(kind)
        assert self.open is not None
        self.open.text.append(chunk.delta)
        if kind == "reasoning":
            events.append(ev(ReasoningDelta, delta=chunk.delta, **self._at()))
        else:
            events.append(ev(TextDelta, delta=chunk.delta, logprobs=[], **self._at()))
        return events


async def events(items: AsyncIterator[Item], shape: Shape, model: str) -> AsyncIterator[bytes]:
    out = _Items(shape)
    try:
        yield shape.event(Created, response=shape.response("in_progress", model, [], None))
        yield shape.event(InProgress, response=shape.response("in_progress", model, [], None))
        async for item in items:
            if isinstance(item, GenerationResult):
                if out.open is None and not out.done:  # nothing was said: one empty message
                    for event in out.switch("message"):
                        yield event
                for event in out.close():
                    yield event
                status = status_of(item)
                yield shape.event(Completed if status == "completed" else Incompleted, response=shape.response(status, item.model, out.done, item))
                continue
            for event in out.add(item):
                yield event
    except (ImpetusError, DaemonUnavailable) as exc:
        err = error_of(exc)
        yield shape.event(ErrorEvent, code=err.code, message=err.message, param=err.param)
