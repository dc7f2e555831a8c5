"""Typed events observed through the ``impetus_event`` hook."""

from __future__ import annotations

import time
from typing import Any, Literal

import msgspec

EventKind = Literal[
    "model.loading", "model.loaded", "model.unloaded", "model.failed", "request.finished"
]


class Event(msgspec.Struct, frozen=True, kw_only=True):
    kind: EventKind
    model: str | None = None
    data: dict[str, Any] = {}
    time: float = msgspec.field(default_factory=time.time)
