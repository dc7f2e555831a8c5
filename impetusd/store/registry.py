"""The model registry: SQLite in WAL mode under ``IMPETUS_HOME``.

A model row and its file rows are written in one transaction, and only after
every file is complete and verified, so a ``kill -9`` at any moment leaves either
the whole model or nothing. Files themselves live where they were found (the
Hugging Face cache for pulls, the user's folder for imports); the registry
records where, how big, and their sha256.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import msgspec

from impetusd.protocol.errors import ModelExists, ModelNotFound

SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    name        TEXT PRIMARY KEY,
    format      TEXT NOT NULL,
    path        TEXT NOT NULL,
    source      TEXT NOT NULL,
    metadata    TEXT NOT NULL,
    size_bytes  INTEGER NOT NULL,
    digest      TEXT NOT NULL,
    created_at  REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    model       TEXT NOT NULL REFERENCES models(name) ON DELETE CASCADE,
    name        TEXT NOT NULL,
    location    TEXT NOT NULL,
    size        INTEGER NOT NULL,
    sha256      TEXT NOT NULL,
    PRIMARY KEY (model, name)
);
CREATE INDEX IF NOT EXISTS files_location ON files(location);
"""


class Source(msgspec.Struct, frozen=True, omit_defaults=True):
    kind: str  # "hub", "local" or "converted"
    repo: str | None = None
    revision: str | None = None
    commit: str | None = None
    path: str | None = None

    def describe(self) -> str:
        if self.kind == "hub":
            return f"hf:{self.repo}@{(self.commit or '')[:12] or self.revision}"
        if self.kind == "converted":  # a pickle checkpoint at ``path``, converted into the store
            return f"converted:{self.path}"
        return f"local:{self.path}"


class ModelFile(msgspec.Struct, frozen=True):
    name: str  # path inside the model (repo-relative for pulls)
    location: str  # absolute path on disk
    size: int
    sha256: str


class Registered(msgspec.Struct, frozen=True):
    name: str
    format: str
    path: str  # what a backend loads: the GGUF file or the model folder
    source: Source
    metadata: dict[str, Any]
    size_bytes: int
    digest: str
    created_at: float
    files: list[ModelFile]


class ModelStore:
    """Thread-safe; every call is short (the hashing happens before ``add``)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        for made in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if made.exists() and made.stat().st_mode & 0o077:  # made before the daemon kept its files private
                os.chmod(made, 0o600)
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        self._enc = msgspec.json.Encoder()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _files(self, name: str) -> list[ModelFile]:
        rows = self._db.execute("SELECT name, location, size, sha256 FROM files WHERE model = ? ORDER BY name", (name,))
        return [ModelFile(name=r[0], location=r[1], size=r[2], sha256=r[3]) for r in rows]

    def _row(self, row: tuple[Any, ...]) -> Registered:
        name, fmt, path, source, metadata, size, digest, created = row
        return Registered(
            name=name,
            format=fmt,
            path=path,
            source=msgspec.json.decode(source, type=Source),
            metadata=msgspec.json.decode(metadata),
            size_bytes=size,
            digest=digest,
            created_at=created,
            files=self._files(name),
        )

    def get(self, name: str) -> Registered | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM models WHERE name = ?", (name,)).fetchone()
            return self._row(row) if row else None

    def require(self, name: str) -> Registered:
        found = self.get(name)
        if found is None:
            raise ModelNotFound(f"model {name!r} is not registered (see 'impetusctl ls')", model=name)
        return found

    def all(self) -> list[Registered]:
        with self._lock:
            return [self._row(r) for r in self._db.execute("SELECT * FROM models ORDER BY name").fetchall()]

    def add(self, model: Registered, *, replace: bool = False) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                if replace:
                    self._db.execute("DELETE FROM models WHERE name = ?", (model.name,))
                self._db.execute(
                    "INSERT INTO models VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        model.name,
                        model.format,
                        model.path,
                        self._enc.encode(model.source),
                        self._enc.encode(model.metadata),
                        model.size_bytes,
                        model.digest,
                        model.created_at,
                    ),
                )
                self._db.executemany(
                    "INSERT INTO files VALUES (?, ?, ?, ?, ?)",
                    [(model.name, f.name, f.location, f.size, f.sha256) for f in model.files],
                )
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError:
                self._db.execute("ROLLBACK")
                raise ModelExists(f"a model named {model.name!r} is already registered", model=model.name) from None
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def remove(self, name: str) -> Registered:
        found = self.require(name)
        with self._lock:
            self._db.execute("DELETE FROM models WHERE name = ?", (name,))
        return found

    def copy(self, source: str, destination: str) -> Registered:
        src = self.require(source)
        copied = msgspec.structs.replace(src, name=destination, created_at=time.time())
        self.add(copied)
        return copied

    def users_of(self, location: str) -> list[str]:
        """Names of the models that use the file at ``location``."""
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT DISTINCT model FROM files WHERE location = ?", (location,))]
