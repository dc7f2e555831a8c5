"""Registered models as the API shows them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from impetusd.protocol.api import ModelInfo, StoredFile
from impetusd.store.registry import Registered

if TYPE_CHECKING:
    from impetusd.daemon import Daemon


def model_info(daemon: Daemon, model: Registered) -> ModelInfo:
    return ModelInfo(
        name=model.name,
        format=model.format,
        path=model.path,
        source=model.source.describe(),
        repo=model.source.repo,
        revision=model.source.revision,
        commit=model.source.commit,
        size_bytes=model.size_bytes,
        digest=model.digest,
        created_at=model.created_at,
        loaded=model.name in daemon.models.resident,
        files=[StoredFile(name=f.name, location=f.location, size=f.size, sha256=f.sha256) for f in model.files],
        metadata=model.metadata,
    )
