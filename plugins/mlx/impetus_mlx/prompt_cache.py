"""Prompt-cache tiers for MLX KV caches: the memory tier, and the engine's view of all tiers.

A tier holds KV caches of earlier token sequences and serves the longest common
prefix of a new prompt; the engine prefills only the rest.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from mlx_lm.models.cache import LRUPromptCache

from impetusd.plugin_api import CacheTierContext, PromptCacheTier

log = logging.getLogger("impetus_mlx")

MIN_PREFIX = 8  # shorter matches are not worth a cache copy


def cache_tokens(cache: list[Any]) -> int:
    """How many tokens a KV cache holds."""
    return int(cache[0].offset) if cache else 0


class MemoryTier:
    """KV caches in an LRU bounded by bytes (mlx-lm's ``LRUPromptCache``), found
    by longest common token prefix; a longer entry is copied and trimmed."""

    def __init__(self, max_bytes: int, key: str) -> None:
        self.lru = LRUPromptCache(max_size=4096, max_bytes=max_bytes)
        self.key = key
        self.hits = 0
        self.stores = 0

    def match(self, tokens: list[int]) -> int:
        got = self.fetch(tokens)
        return got[1] if got else 0

    def fetch(self, tokens: list[int]) -> tuple[Any, int] | None:
        cache, rest = self.lru.fetch_nearest_cache(self.key, tokens)
        if cache is None:
            return None
        self.hits += 1
        return cache, len(tokens) - len(rest)

    def store(self, tokens: list[int], cache: Any) -> None:
        self.lru.insert_cache(self.key, list(tokens), cache)
        self.stores += 1

    def stats(self) -> dict[str, int]:
        return {"entries": len(self.lru), "bytes": self.lru.nbytes, "hits": self.hits, "stores": self.stores}


def memory_tier(ctx: CacheTierContext) -> MemoryTier | None:
    return MemoryTier(ctx.memory_bytes, ctx.model_digest) if ctx.memory_bytes > 0 else None


class PromptCaches:
    """The tiers an engine was given, in order (memory first)."""

    def __init__(self, tiers: list[tuple[str, PromptCacheTier]]) -> None:
        self.tiers = tiers

    def fetch(self, tokens: list[int]) -> tuple[Any, int]:
        """The cache for the longest prefix any tier holds, and its length; a hit
        in a later tier (disk) is copied into the earlier ones (memory)."""
        best: tuple[Any, int] | None = None
        found_in = -1
        for i, (name, tier) in enumerate(self.tiers):
            if best is not None and tier.match(tokens) <= best[1]:
                continue
            try:
                got = tier.fetch(tokens)
            except Exception:  # a tier that fails is skipped, never trusted
                log.exception("prompt-cache tier %s failed to fetch", name)
                continue
            if got is not None and got[1] >= MIN_PREFIX and (best is None or got[1] > best[1]):
                best, found_in = got, i
        if best is None:
            return None, 0
        cache, n = best
        for _name, tier in self.tiers[:found_in]:
            tier.store(tokens[:n], copy.deepcopy(cache))
        return cache, n

    def store(self, tokens: list[int], cache: Any) -> None:
        """Offer a finished sequence's cache (holding exactly ``tokens``) to every tier."""
        if cache_tokens(cache) != len(tokens) or len(tokens) < MIN_PREFIX:
            return
        for name, tier in self.tiers:
            try:
                tier.store(tokens, cache)
            except Exception:
                log.exception("prompt-cache tier %s failed to store", name)

    def stats(self) -> dict[str, dict[str, int]]:
        return {name: tier.stats() for name, tier in self.tiers}
