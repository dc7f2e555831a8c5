"""Models as the API shows them: a registered model's details (``models.show``) and the
list of every model known here (``models.list``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from impetusd.engine.messages import ModelSpec
from impetusd.protocol.api import ModelEntry, ModelInfo, StoredFile
from impetusd.store.catalog import CATALOG
from impetusd.store.registry import ModelStore, Registered


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


def list_models(store: ModelStore, loaded: Mapping[str, ModelSpec]) -> list[ModelEntry]:
    """The registered models, then the catalog's aliases not registered, then the ``loaded``
    models (name -> spec) that are neither (a path loaded as it is)."""
    entries = [_registered(model, loaded) for model in store.all()]
    seen = {e.name for e in entries}
    entries += [_alias(alias, loaded) for alias in sorted(CATALOG) if alias not in seen]
    seen |= set(CATALOG)
    entries += [_loaded(name, spec) for name, spec in sorted(loaded.items()) if name not in seen]
    return entries


def _registered(model: Registered, loaded: Mapping[str, ModelSpec]) -> ModelEntry:
    return ModelEntry(
        name=model.name,
        path=model.path,
        format=model.format,
        size_bytes=model.size_bytes,
        available=True,
        loaded=model.name in loaded,
        source=model.source.describe(),
        metadata=model.metadata,
    )


def _alias(alias: str, loaded: Mapping[str, ModelSpec]) -> ModelEntry:
    item = CATALOG[alias]
    path = item.local_path()
    size = (sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if item.folder else path.stat().st_size) if path else None
    fmt = "gguf" if item.file.endswith(".gguf") else ("safetensors" if item.folder else None)
    return ModelEntry(
        name=alias,
        path=str(path) if path else None,
        format=fmt,
        size_bytes=size,
        available=path is not None,
        loaded=alias in loaded,
        source=item.repo,
    )


def _loaded(name: str, spec: ModelSpec) -> ModelEntry:
    p = Path(spec.path)
    return ModelEntry(
        name=name,
        path=str(p),
        format=spec.format,
        size_bytes=p.stat().st_size if p.is_file() else None,
        available=True,
        loaded=True,
        source=spec.source,
        metadata=spec.metadata,
    )
