"""Build the prompt-cache tiers registered for this worker's backend and hand them to the engine."""

from __future__ import annotations

import logging
from typing import Any

from impetusd.engine.capabilities import CacheTierEngine
from impetusd.plugin.registries import CacheTier, CacheTierContext, PluginRegistry, PromptCacheTier
from impetusd.protocol.errors import PluginError
from impetusd.workers.messages import CacheSettings

log = logging.getLogger("impetusd.workers")


def attach_cache_tiers(engine: Any, backend: str, settings: CacheSettings, registry: PluginRegistry[CacheTier]) -> list[str]:
    """Instantiate every tier that serves ``backend`` (in ``order``) and pass them
    to ``engine.use_cache_tiers``; engines that are no ``CacheTierEngine`` get
    none. Returns the names of the tiers attached."""
    if not isinstance(engine, CacheTierEngine):
        return []
    ctx = CacheTierContext(
        backend=backend,
        model_digest=settings.model_digest,
        directory=settings.directory,
        memory_bytes=settings.memory_bytes,
        disk_bytes=settings.disk_bytes,
        variant=str(engine.cache_variant or ""),
    )
    chosen = sorted((t for t in registry.values() if not t.backends or backend in t.backends), key=lambda t: (t.order, t.name))
    tiers: list[tuple[str, PromptCacheTier]] = []
    for tier in chosen:
        try:
            instance = tier.factory(ctx)
        except Exception as exc:
            raise PluginError(f"cache tier {tier.name!r} failed to start: {exc}", tier=tier.name) from exc
        if instance is not None:  # a tier may decline (no budget, no directory)
            tiers.append((tier.name, instance))
    engine.use_cache_tiers(tiers)
    log.info("prompt-cache tiers: %s", ", ".join(name for name, _ in tiers) or "none")
    return [name for name, _ in tiers]
