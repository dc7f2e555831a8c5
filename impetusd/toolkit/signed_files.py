"""Files of prompt KV caches in one directory, each vouched for by a signed index.

Shared by the backends' disk tiers (MLX's safetensors, llama-server's slot files): a file
is used only when ``index.json`` lists it with its token prefix, sha256 and an
HMAC-SHA256 over (model digest, tokens, sha256) keyed by ``<parent>/key`` (random, 0600;
directories 0700). A file the index does not list, or whose bytes do not match, is
deleted, never used. The directory is bounded in bytes; the least recently used files go
first. What a file holds and how it is loaded is the backend's business.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import shutil
import time
from pathlib import Path

import msgspec

log = logging.getLogger("impetusd.toolkit.signed_files")

_INDEX = "index.json"
_CHUNK = 1 << 20


class _Entry(msgspec.Struct, kw_only=True):
    tokens: list[int]
    nbytes: int
    sha256: str
    mac: str
    used: float


class _Index(msgspec.Struct, kw_only=True):
    model_digest: str
    entries: dict[str, _Entry] = {}


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


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class SignedFiles:
    """The files of one model (digest) in ``directory``, keyed by token prefix."""

    def __init__(self, directory: Path, model_digest: str, max_bytes: int, suffix: str) -> None:
        self.dir = directory
        self.digest = model_digest
        self.max_bytes = max_bytes
        self.suffix = suffix
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir.parent, 0o700)
        os.chmod(self.dir, 0o700)
        self.key = _secret(self.dir.parent)
        self.index = self._read_index()
        self.discarded = 0
        self._sweep()

    def _mac(self, tokens: list[int], sha: str) -> str:
        msg = msgspec.json.encode([self.digest, tokens, sha])
        return hmac.new(self.key, msg, hashlib.sha256).hexdigest()

    def _read_index(self) -> _Index:
        path = self.dir / _INDEX
        try:
            index = msgspec.json.decode(path.read_bytes(), type=_Index)
        except FileNotFoundError:
            return _Index(model_digest=self.digest)
        except (OSError, msgspec.DecodeError) as exc:
            log.warning("prompt cache index %s is unreadable (%s): discarding it", path, exc)
            return _Index(model_digest=self.digest)
        if index.model_digest != self.digest:
            log.warning("prompt cache index %s is for another model: discarding it", path)
            return _Index(model_digest=self.digest)
        return index

    def _write_index(self) -> None:
        tmp = self.dir / f".{_INDEX}.{os.getpid()}"
        tmp.write_bytes(msgspec.json.encode(self.index))
        os.replace(tmp, self.dir / _INDEX)

    def _sweep(self) -> None:
        """Delete files the index does not vouch for; drop entries whose file is gone."""
        known = set(self.index.entries)
        for path in self.dir.iterdir():
            if path.name == _INDEX or path.name in known:
                continue
            log.warning("prompt cache: deleting %s (not written by this index)", path.name)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            self.discarded += 1
        for name in [n for n in known if not (self.dir / n).is_file() or (self.dir / n).is_symlink()]:
            del self.index.entries[name]
        self._evict()
        self._write_index()

    def discard(self, name: str, why: str) -> None:
        log.warning("prompt cache: discarding %s (%s)", name, why)
        self.index.entries.pop(name, None)
        (self.dir / name).unlink(missing_ok=True)
        self.discarded += 1
        self._write_index()

    def best(self, tokens: list[int]) -> tuple[str, int] | None:
        """The file holding the longest prefix of ``tokens`` (at most all but the last) and its length."""
        found: tuple[str, int] | None = None
        for name, entry in self.index.entries.items():
            n = min(_common_prefix(entry.tokens, tokens), len(tokens) - 1)
            if n > 0 and (found is None or n > found[1]):
                found = (name, n)
        return found

    def match(self, tokens: list[int]) -> int:
        found = self.best(tokens)
        return found[1] if found else 0

    def verified(self, name: str) -> Path | None:
        """The file's path if its bytes are what this index signed; else it is deleted."""
        entry = self.index.entries.get(name)
        if entry is None:
            return None
        path = self.dir / name
        try:
            sha = _sha256(path)
        except OSError as exc:
            self.discard(name, f"unreadable: {exc}")
            return None
        if not hmac.compare_digest(self._mac(entry.tokens, sha), entry.mac) or sha != entry.sha256:
            self.discard(name, "its contents do not match what Impetus wrote")
            return None
        entry.used = time.time()
        return path

    def tokens(self, name: str) -> list[int]:
        return self.index.entries[name].tokens

    def add(self, tokens: list[int], source: Path) -> str:
        """Move ``source`` (holding exactly ``tokens``, or more) in, sign it, keep the budget."""
        sha = _sha256(source)
        name = sha[:32] + self.suffix
        nbytes = source.stat().st_size
        shutil.move(str(source), str(self.dir / name))  # a rename on one filesystem
        os.chmod(self.dir / name, 0o600)
        self.index.entries[name] = _Entry(tokens=list(tokens), nbytes=nbytes, sha256=sha, mac=self._mac(list(tokens), sha), used=time.time())
        self._evict()
        self._write_index()
        return name

    def _evict(self) -> None:
        entries = self.index.entries
        total = sum(e.nbytes for e in entries.values())
        for name in sorted(entries, key=lambda n: entries[n].used):
            if total <= self.max_bytes:
                break
            total -= entries.pop(name).nbytes
            (self.dir / name).unlink(missing_ok=True)

    common_prefix = staticmethod(_common_prefix)

    def stats(self) -> dict[str, int]:
        return {"entries": len(self.index.entries), "bytes": sum(e.nbytes for e in self.index.entries.values()), "discarded": self.discarded}
