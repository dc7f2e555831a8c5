"""The dashboard's shapes: what its page posts (a model, and a backend to load it
on) and the state it draws in one poll."""

from __future__ import annotations

import msgspec

from impetusd.protocol.api import Health, LoadedList, ModelList


class ModelParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    model: str
    backend: str | None = None


class State(msgspec.Struct, frozen=True):
    """Everything the page draws, in one poll."""

    version: str
    started_at: float
    health: Health
    models: ModelList
    loaded: LoadedList
