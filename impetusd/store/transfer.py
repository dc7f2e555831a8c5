"""One file from the Hub into the cache: resumed from its partial, hashed while
it streams, moved into place only when its hashes match. Blocking (a thread).

Per attempt: read what the partial already holds into the hashers, ask for the
rest with ``Range``, append, then compare the sha256 (LFS files) or git's blob
sha1 (small files) with the Hub's metadata. A mismatch deletes the partial: the
next attempt starts over. Connection drops, timeouts, 5xx and 429 raise
``Transient`` with the partial kept, so the caller's retry resumes.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import httpx

from impetusd.protocol.api import FileProgress
from impetusd.protocol.errors import ChecksumMismatch, DownloadFailed, GatedRepo, Unauthorized
from impetusd.store.files import RemoteFile
from impetusd.store.hub import Transient

CHUNK = 1 << 20


class Cancelled(Exception):
    """The pull was cancelled; the partial stays for the next pull."""


class Hashes:
    def __init__(self, f: RemoteFile) -> None:
        self.sha256 = hashlib.sha256()
        self.git = hashlib.sha1(b"blob %d\0" % f.size) if f.blob_id and not f.sha256 else None  # noqa: S324 - git's id, not security

    def update(self, data: bytes) -> None:
        self.sha256.update(data)
        if self.git is not None:
            self.git.update(data)

    def problem(self, f: RemoteFile) -> str | None:
        if f.sha256 and self.sha256.hexdigest() != f.sha256:
            return f"sha256 {self.sha256.hexdigest()} != {f.sha256} from the Hub"
        if self.git is not None and self.git.hexdigest() != f.blob_id:
            return f"git blob id {self.git.hexdigest()} != {f.blob_id} from the Hub"
        return None


def _absorb(part: Path, hashes: Hashes, cancel: threading.Event) -> int:
    have = 0
    with open(part, "rb") as fh:
        while chunk := fh.read(CHUNK):
            if cancel.is_set():
                raise Cancelled()
            hashes.update(chunk)
            have += len(chunk)
    return have


def _refuse(status: int, url: str, repo: str) -> Exception:
    if status in (408, 429) or status >= 500:
        return Transient(f"HTTP {status}")
    if status == 401:
        return Unauthorized(f"the Hub refused the download from {repo} (HTTP 401): check HF_TOKEN", repo=repo)
    if status == 403:
        return GatedRepo(f"{repo} is gated: accept its terms on the Hub and set HF_TOKEN", repo=repo)
    return DownloadFailed(f"HTTP {status} for {url}", repo=repo, status=status)


def fetch(
    repo: str,
    url: str,
    headers: dict[str, str],
    f: RemoteFile,
    blob: Path,
    part: Path,
    progress: FileProgress,
    cancel: threading.Event,
    timeout: float = 60.0,
) -> str:
    """Download ``f`` into ``blob``; return its sha256."""
    part.parent.mkdir(parents=True, exist_ok=True)
    hashes = Hashes(f)
    have = _absorb(part, hashes, cancel) if part.exists() else 0
    if have > f.size:  # not ours to trust
        part.unlink()
        hashes, have = Hashes(f), 0
    progress.done, progress.state = have, "downloading"
    if have < f.size:
        ask = {**headers, "Range": f"bytes={have}-"} if have else dict(headers)
        try:
            with httpx.Client(follow_redirects=True, timeout=httpx.Timeout(timeout, connect=15.0)) as client:
                with client.stream("GET", url, headers=ask) as resp:
                    if resp.status_code not in (200, 206):
                        raise _refuse(resp.status_code, url, repo)
                    mode = "ab"
                    if have and resp.status_code == 200:  # the server ignored Range: start over
                        hashes, have, mode = Hashes(f), 0, "wb"
                        progress.done = 0
                    with open(part, mode) as out:
                        for chunk in resp.iter_bytes():  # as it arrives: a drop loses nothing received
                            if cancel.is_set():
                                raise Cancelled()
                            out.write(chunk)
                            hashes.update(chunk)
                            have += len(chunk)
                            progress.done = have
                        out.flush()
                        os.fsync(out.fileno())
        except httpx.TransportError as exc:  # dropped, reset, timed out: the partial is kept
            raise Transient(f"{type(exc).__name__}: {exc}") from exc
    if have != f.size:
        raise Transient(f"got {have} of {f.size} bytes")
    progress.state = "verifying"
    problem = hashes.problem(f)
    if problem:
        part.unlink(missing_ok=True)
        raise ChecksumMismatch(f"{repo}/{f.name}: {problem}", repo=repo, file=f.name)
    os.replace(part, blob)
    progress.state = "done"
    return hashes.sha256.hexdigest()


def sha256_of(path: Path, cancel: threading.Event | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            h.update(chunk)
    return h.hexdigest()
