"""Files in the Hugging Face cache layout, so other tools reuse what Impetus
pulled and Impetus reuses what they fetched.

huggingface_hub documents the layout: ``models--ORG--NAME/blobs/<etag>`` holds
each file once (etag = sha256 for LFS files, git's blob sha1 otherwise),
``snapshots/<commit>/<path>`` are relative symlinks to blobs, ``refs/<revision>``
holds the commit a branch or tag pointed to. Impetus writes its own partial
downloads beside the blobs (``<etag>.impetus-partial``) because huggingface_hub
deletes a partial when a download stops, and a pull must resume after a cancel
or a crash.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_COMMIT = re.compile(r"^[0-9a-f]{40}$")


def hub_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_folder(repo: str, root: Path | None = None) -> Path:
    return (root or hub_cache()) / ("models--" + repo.replace("/", "--"))


def blob(repo: str, etag: str, root: Path | None = None) -> Path:
    return repo_folder(repo, root) / "blobs" / etag


def partial(repo: str, etag: str, root: Path | None = None) -> Path:
    return repo_folder(repo, root) / "blobs" / f"{etag}.impetus-partial"


def snapshot(repo: str, commit: str, name: str = "", root: Path | None = None) -> Path:
    base = repo_folder(repo, root) / "snapshots" / commit
    return base / name if name else base


def link(repo: str, commit: str, name: str, etag: str, root: Path | None = None) -> Path:
    """Point ``snapshots/<commit>/<name>`` at its blob (relative, as huggingface_hub does)."""
    target = snapshot(repo, commit, name, root)
    target.parent.mkdir(parents=True, exist_ok=True)
    relative = os.path.relpath(blob(repo, etag, root), target.parent)
    tmp = target.with_name(target.name + ".impetus-link")
    tmp.unlink(missing_ok=True)
    os.symlink(relative, tmp)
    os.replace(tmp, target)
    return target


def record_ref(repo: str, revision: str, commit: str, root: Path | None = None) -> None:
    if _COMMIT.match(revision):
        return  # a commit needs no ref
    ref = repo_folder(repo, root) / "refs" / revision
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(ref.name + ".impetus-tmp")
    tmp.write_text(commit)
    os.replace(tmp, ref)
