"""Typed events: observed by plugins through the ``impetus_event`` hook, and
streamed to clients through ``events.subscribe``.

Each subscriber has its own bounded queue. A subscriber that cannot keep up loses
its oldest events (and is told how many), so a slow client never holds up the
daemon or the other subscribers.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Literal

import anyio
import msgspec

EventKind = Literal[
    "model.loading",
    "model.loaded",
    "model.unloaded",
    "model.failed",
    "model.pulled",
    "request.finished",
    "hardware.sample",
    "memory.pressure",
    "thermal.changed",
    "thermal.backoff",
    "thermal.restored",
]
TOPICS = ("model", "request", "hardware", "memory", "thermal")  # a topic is the kind's first part
QUEUE_LIMIT = 1024


class Event(msgspec.Struct, frozen=True, kw_only=True):
    kind: EventKind
    model: str | None = None
    data: dict[str, Any] = {}
    time: float = msgspec.field(default_factory=time.time)

    @property
    def topic(self) -> str:
        return self.kind.split(".", 1)[0]


class Subscriber:
    def __init__(self, topics: set[str]) -> None:
        self.topics = topics
        self.queue: deque[Event] = deque(maxlen=QUEUE_LIMIT)
        self.dropped = 0
        self.ready = anyio.Event()

    def offer(self, event: Event) -> None:
        if event.topic not in self.topics:
            return
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1  # deque drops the oldest
        self.queue.append(event)
        self.ready.set()

    async def next_batch(self) -> list[Event]:
        await self.ready.wait()
        self.ready = anyio.Event()
        batch = list(self.queue)
        self.queue.clear()
        return batch


class EventBus:
    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()

    def publish(self, event: Event) -> None:
        for sub in list(self.subscribers):
            sub.offer(event)

    def subscribe(self, topics: set[str]) -> Subscriber:
        sub = Subscriber(topics)
        self.subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
