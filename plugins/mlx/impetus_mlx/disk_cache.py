"""The disk tier: prompt KV caches persisted under ``$IMPETUS_HOME/cache/prompts/<model digest>/``.

Files are mlx-lm prompt-cache safetensors (``save_prompt_cache``). Loading one
instantiates the classes it names, so a file is loaded only when the index
Impetus wrote vouches for it: each entry records the file's token prefix and an
HMAC (key in ``cache/prompts/key``, mode 0600) over the model digest, the tokens
and the file's sha256. A file that is missing from the index, fails its HMAC,
or does not load as the KV cache the entry describes is deleted, never trusted.
The directory is bounded in bytes; the least recently used files go first.
An engine variant (float32 weights: ``<digest>-f32``) gets its own directory.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

import msgspec
from mlx_lm.models.cache import KVCache, load_prompt_cache, save_prompt_cache, trim_prompt_cache

from impetusd.plugin_api import CacheTierContext

from .prompt_cache import cache_tokens

log = logging.getLogger("impetus_mlx")

INDEX = "index.json"
SUFFIX = ".safetensors"


class Entry(msgspec.Struct, kw_only=True):
    tokens: list[int]
    nbytes: int
    sha256: str
    mac: str
    used: float


class Index(msgspec.Struct, kw_only=True):
    model_digest: str
    entries: dict[str, Entry] = {}


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _secret(root: Path) -> bytes:
    path = root / "key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) >= 32:
            return key
        path.unlink()  # unusable: start over (every entry signed with it is then discarded)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


class DiskTier:
    """Prefix caches on disk, keyed by model digest and token prefix."""

    def __init__(self, directory: Path, model_digest: str, max_bytes: int, min_tokens: int = 32) -> None:
        self.dir = directory
        self.digest = model_digest
        self.max_bytes = max_bytes
        self.min_tokens = min_tokens
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir.parent, 0o700)
        os.chmod(self.dir, 0o700)
        self.key = _secret(self.dir.parent)
        self.index = self._read_index()
        self.hits = 0
        self.stores = 0
        self.discarded = 0
        self._sweep()

    # --- integrity ------------------------------------------------------------
    def _mac(self, tokens: list[int], sha: str) -> str:
        msg = msgspec.json.encode([self.digest, tokens, sha])
        return hmac.new(self.key, msg, hashlib.sha256).hexdigest()

    def _read_index(self) -> Index:
        path = self.dir / INDEX
        try:
            index = msgspec.json.decode(path.read_bytes(), type=Index)
        except FileNotFoundError:
            return Index(model_digest=self.digest)
        except (OSError, msgspec.DecodeError) as exc:
            log.warning("prompt cache index %s is unreadable (%s): discarding it", path, exc)
            return Index(model_digest=self.digest)
        if index.model_digest != self.digest:
            log.warning("prompt cache index %s is for another model: discarding it", path)
            return Index(model_digest=self.digest)
        return index

    def _write_index(self) -> None:
        tmp = self.dir / f".{INDEX}.{os.getpid()}"
        tmp.write_bytes(msgspec.json.encode(self.index))
        os.replace(tmp, self.dir / INDEX)

    def _sweep(self) -> None:
        """Delete files the index does not vouch for; drop entries whose file is gone."""
        known = set(self.index.entries)
        for path in self.dir.iterdir():
            if path.name in (INDEX,) or path.name in known:
                continue
            log.warning("prompt cache: deleting %s (not written by this index)", path.name)
            path.unlink(missing_ok=True)
            self.discarded += 1
        for name in [n for n in known if not (self.dir / n).is_file()]:
            del self.index.entries[name]
        self._evict()
        self._write_index()

    def _discard(self, name: str, why: str) -> None:
        log.warning("prompt cache: discarding %s (%s)", name, why)
        self.index.entries.pop(name, None)
        (self.dir / name).unlink(missing_ok=True)
        self.discarded += 1
        self._write_index()

    # --- the tier protocol ----------------------------------------------------
    def _best(self, tokens: list[int]) -> tuple[str, int] | None:
        best: tuple[str, int] | None = None
        for name, entry in self.index.entries.items():
            n = min(_common_prefix(entry.tokens, tokens), len(tokens) - 1)
            if n > 0 and (best is None or n > best[1]):
                best = (name, n)
        return best

    def match(self, tokens: list[int]) -> int:
        best = self._best(tokens)
        return best[1] if best else 0

    def fetch(self, tokens: list[int]) -> tuple[Any, int] | None:
        best = self._best(tokens)
        if best is None:
            return None
        name, n = best
        entry = self.index.entries[name]
        path = self.dir / name
        try:
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as exc:
            self._discard(name, f"unreadable: {exc}")
            return None
        if not hmac.compare_digest(self._mac(entry.tokens, sha), entry.mac) or sha != entry.sha256:
            self._discard(name, "its contents do not match what Impetus wrote")
            return None
        try:
            cache = load_prompt_cache(str(path))
        except Exception as exc:
            self._discard(name, f"does not load: {exc}")
            return None
        if not cache or not all(isinstance(c, KVCache) for c in cache) or cache_tokens(cache) != len(entry.tokens):
            self._discard(name, "not the KV cache its entry describes")
            return None
        trim_prompt_cache(cache, len(entry.tokens) - n)
        entry.used = time.time()
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
        data = tmp.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        name = sha[:32] + SUFFIX
        os.replace(tmp, self.dir / name)
        self.index.entries[name] = Entry(tokens=list(tokens), nbytes=len(data), sha256=sha, mac=self._mac(list(tokens), sha), used=time.time())
        self.stores += 1
        self._evict()
        self._write_index()

    def _evict(self) -> None:
        entries = self.index.entries
        total = sum(e.nbytes for e in entries.values())
        for name in sorted(entries, key=lambda n: entries[n].used):
            if total <= self.max_bytes:
                break
            total -= entries.pop(name).nbytes
            (self.dir / name).unlink(missing_ok=True)

    def stats(self) -> dict[str, int]:
        return {
            "entries": len(self.index.entries),
            "bytes": sum(e.nbytes for e in self.index.entries.values()),
            "hits": self.hits,
            "stores": self.stores,
            "discarded": self.discarded,
        }


def disk_tier(ctx: CacheTierContext) -> DiskTier | None:
    if not ctx.directory or ctx.disk_bytes <= 0:
        return None
    directory = Path(ctx.directory)
    digest = ctx.model_digest
    if ctx.variant:  # e.g. float32 weights: their caches are not the quantized model's
        directory = directory.with_name(f"{directory.name}-{ctx.variant}")
        digest = f"{digest}-{ctx.variant}"
    return DiskTier(directory, digest, ctx.disk_bytes)
