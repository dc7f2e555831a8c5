"""The disk tier: prompt KV caches persisted under ``$IMPETUS_HOME/cache/prompts/<model digest>/``.

Files are mlx-lm prompt-cache safetensors (``save_prompt_cache``). Loading one
instantiates the classes it names, so a file is loaded only when the signed index
(``SignedFiles``, shared with the llama.cpp backend) vouches for it, and then only
if it loads as the plain KV cache its entry describes; anything else is deleted.
An engine variant (float32 weights: ``<digest>-f32``) gets its own directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mlx_lm.models.cache import KVCache, load_prompt_cache, save_prompt_cache, trim_prompt_cache

from impetusd.plugin_api import CacheTierContext, SignedFiles

from .prompt_cache import cache_tokens

SUFFIX = ".safetensors"


class DiskTier:
    """Prefix caches on disk, keyed by model digest and token prefix (integrity: ``SignedFiles``)."""

    def __init__(self, directory: Path, model_digest: str, max_bytes: int, min_tokens: int = 32) -> None:
        self.files = SignedFiles(directory, model_digest, max_bytes, SUFFIX)
        self.dir = directory
        self.max_bytes = max_bytes
        self.min_tokens = min_tokens
        self.hits = 0
        self.stores = 0

    def match(self, tokens: list[int]) -> int:
        return self.files.match(tokens)

    def fetch(self, tokens: list[int]) -> tuple[Any, int] | None:
        best = self.files.best(tokens)
        if best is None:
            return None
        name, n = best
        path = self.files.verified(name)
        if path is None:
            return None
        held = len(self.files.tokens(name))
        try:
            cache = load_prompt_cache(str(path))
        except Exception as exc:
            self.files.discard(name, f"does not load: {exc}")
            return None
        if not cache or not all(isinstance(c, KVCache) for c in cache) or cache_tokens(cache) != held:
            self.files.discard(name, "not the KV cache its entry describes")
            return None
        trim_prompt_cache(cache, held - n)
        self.hits += 1
        return cache, n

    def store(self, tokens: list[int], cache: Any) -> None:
        """Persist a cache unless this tier already serves most of it."""
        if len(tokens) < self.min_tokens or self.max_bytes <= 0:
            return
        if self.match(tokens) * 2 >= len(tokens):
            return
        if not all(isinstance(c, KVCache) for c in cache):
            return  # only plain KV caches are written, so only they are ever loaded
        tmp = self.dir / f".tmp.{os.getpid()}{SUFFIX}"
        save_prompt_cache(str(tmp), cache)
        self.files.add(list(tokens), tmp)
        self.stores += 1

    def stats(self) -> dict[str, int]:
        return {**self.files.stats(), "hits": self.hits, "stores": self.stores}


def disk_tier(ctx: CacheTierContext) -> DiskTier | None:
    if not ctx.directory or ctx.disk_bytes <= 0:
        return None
    directory = Path(ctx.directory)
    digest = ctx.model_digest
    if ctx.variant:  # e.g. float32 weights: their caches are not the quantized model's
        directory = directory.with_name(f"{directory.name}-{ctx.variant}")
        digest = f"{digest}-{ctx.variant}"
    return DiskTier(directory, digest, ctx.disk_bytes)
