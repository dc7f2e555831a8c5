"""Registered models as the API shows them."""

from __future__ import annotations

from impetusd.protocol.api import ModelInfo, StoredFile
from impetusd.store.registry import Registered


def model_info(model: Registered, *, loaded: bool) -> ModelInfo:
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
        loaded=loaded,
        files=[StoredFile(name=f.name, location=f.location, size=f.size, sha256=f.sha256) for f in model.files],
        metadata=model.metadata,
    )
