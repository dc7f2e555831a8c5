"""Where a model's worker keeps its prompt caches, and the digest that keys them."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from impetusd.engine.messages import ModelSpec
from impetusd.workers.messages import CacheSettings

if TYPE_CHECKING:
    from impetusd.config import Config
    from impetusd.store.registry import ModelStore


def cache_key(store: ModelStore, spec: ModelSpec) -> str:
    """The registry's sha256 digest for a registered model; otherwise one derived
    from the files' paths, sizes and modification times (hashing a multi-GB file
    at every load would cost more than the cache saves), so changed weights never
    meet caches of the old ones."""
    registered = store.get(spec.name)
    if registered is not None and registered.path == spec.path and registered.digest:
        return registered.digest
    path = Path(spec.path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256(b"impetus-file-identity\0")
    for file in files:
        st = file.stat()
        h.update(f"{file.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return "id-" + h.hexdigest()


def cache_settings(cfg: Config, store: ModelStore, spec: ModelSpec) -> CacheSettings:
    digest = cache_key(store, spec)
    directory = None
    if cfg.prompt_cache_disk_bytes > 0:
        directory = str(cfg.home / "cache" / "prompts" / digest)
    return CacheSettings(
        model_digest=digest,
        directory=directory,
        memory_bytes=max(cfg.prompt_cache_memory_bytes, 0),
        disk_bytes=max(cfg.prompt_cache_disk_bytes, 0),
    )
