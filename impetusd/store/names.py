"""What ``impetusctl pull NAME`` can name, parsed into a typed reference."""

from __future__ import annotations

import re

import msgspec

from impetusd.protocol.errors import InvalidParams
from impetusd.store.catalog import CATALOG

_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_PREFIXES = ("hf.co/", "huggingface.co/", "https://huggingface.co/")


class PullRef(msgspec.Struct, frozen=True):
    """A Hub repository, an optional revision, and an optional file selector.

    ``suffix`` is what followed ``:``; whether it picks files (``Q4_K_M``) or a
    revision (a branch, tag or commit) is decided against the repo's file list.
    """

    name: str  # the name the model is registered under
    repo: str
    revision: str | None = None
    suffix: str | None = None
    files: list[str] | None = None  # fixed by the catalog


def parse(ref: str) -> PullRef:
    text = ref.strip()
    entry = CATALOG.get(text.lower())
    if entry is not None:
        return PullRef(name=entry.alias, repo=entry.repo, files=None if entry.folder else [entry.file])
    for prefix in _PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix) :]
    base, _, suffix = text.partition(":")
    base, _, revision = base.partition("@")
    if not _REPO.match(base) or (":" in suffix) or (suffix == "" and text.endswith(":")):
        raise InvalidParams(
            f"cannot pull {ref!r}: use an alias ({', '.join(sorted(CATALOG))}), 'org/repo', 'org/repo:REVISION' or 'org/repo:QUANT'",
            field="model",
        )
    return PullRef(name=text, repo=base, revision=revision or None, suffix=suffix or None)
