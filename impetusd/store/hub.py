"""Talking to the Hugging Face Hub: repository facts through huggingface_hub,
typed errors for its failures. Runs in worker threads (it blocks)."""

from __future__ import annotations

from typing import Any

import msgspec

from impetusd.protocol.errors import DownloadFailed, GatedRepo, RepoNotFound, RevisionNotFound, Unauthorized
from impetusd.store.files import RemoteFile


class RemoteRepo(msgspec.Struct, frozen=True):
    repo: str
    revision: str
    commit: str
    files: list[RemoteFile]


class Transient(Exception):
    """A failure worth retrying: a dropped connection, a timeout, 5xx, 429."""


def typed(exc: Exception, repo: str, revision: str | None) -> Exception:
    """huggingface_hub's errors as Impetus's typed ones (or Transient)."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    if isinstance(exc, GatedRepoError):
        return GatedRepo(f"{repo} is gated: accept its terms on the Hub and set HF_TOKEN to a token of that account", repo=repo)
    if isinstance(exc, RevisionNotFoundError):
        return RevisionNotFound(f"{repo} has no revision {revision!r}", repo=repo, revision=revision)
    if isinstance(exc, RepositoryNotFoundError):
        status = exc.response.status_code if exc.response is not None else None
        if status == 401 and _token() is not None:
            return Unauthorized(f"the Hub refused the token in HF_TOKEN for {repo}", repo=repo)
        return RepoNotFound(f"{repo} was not found on the Hub (or is private: set HF_TOKEN)", repo=repo)
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else 0
        if status == 401:
            return Unauthorized(f"the Hub refused the request for {repo} (HTTP 401): check HF_TOKEN", repo=repo)
        if status >= 500 or status in (408, 429):
            return Transient(f"HTTP {status} from the Hub")
        return DownloadFailed(f"the Hub answered HTTP {status} for {repo}: {exc}", repo=repo, status=status)
    return Transient(f"{type(exc).__name__}: {exc}")


def _token() -> str | None:
    from huggingface_hub import get_token

    return get_token()  # HF_TOKEN, or the token saved by `hf auth login`


def describe(repo: str, revision: str | None, timeout: float, endpoint: str | None = None) -> RemoteRepo:
    """The commit a revision points to and every file with its size and hashes.
    ``timeout`` bounds each network wait (connecting, each read)."""
    from huggingface_hub import HfApi

    try:
        info: Any = HfApi(endpoint=endpoint).model_info(repo, revision=revision, files_metadata=True, token=_token(), timeout=timeout)
    except Exception as exc:
        raise typed(exc, repo, revision) from exc
    files = [
        RemoteFile(
            name=s.rfilename,
            size=int(s.size or (s.lfs.size if s.lfs else 0) or 0),
            sha256=s.lfs.sha256 if s.lfs else None,
            blob_id=s.blob_id,
        )
        for s in info.siblings or []
    ]
    return RemoteRepo(repo=repo, revision=revision or "main", commit=info.sha, files=files)


def file_url(repo: str, name: str, commit: str, endpoint: str | None = None) -> str:
    from huggingface_hub import hf_hub_url

    return hf_hub_url(repo, name, revision=commit, endpoint=endpoint)


def auth_headers() -> dict[str, str]:
    from huggingface_hub.utils import build_hf_headers

    return build_hf_headers(token=_token(), library_name="impetus")
