"""What ``impetusctl pull NAME`` can name, parsed into a typed reference."""

from __future__ import annotations

import re

import msgspec

from impetusd.protocol.errors import InvalidParams, ModelExists
from impetusd.store.catalog import CATALOG

_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$", re.ASCII)
NAME_MAX = 200
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]*", re.ASCII)
NAME_RULE = f"1 to {NAME_MAX} characters from A-Z a-z 0-9 . _ : @ / -, starting with a letter or digit, with no empty, '.' or '..' part between slashes"


def check_name(name: str, field: str = "name") -> str:
    """A name a model may be registered under (docs/store.md): it reaches
    file names, logs and terminals, so nothing outside a small ASCII set."""
    if len(name) > NAME_MAX or not _NAME.fullmatch(name) or any(part in ("", ".", "..") for part in name.split("/")):
        shown = repr(name[:60]) + ("..." if len(name) > 60 else "")
        raise InvalidParams(f"{field}: {shown} is not a valid model name: use {NAME_RULE}", field=field)
    return name


def check_not_alias(name: str) -> str:
    """A catalog alias's name belongs to the alias: registered only by pulling it."""
    entry = CATALOG.get(name.lower())
    if entry is not None:
        raise ModelExists(
            f"{name!r} is the catalog alias of {entry.repo}; register under another name ('impetusctl pull {entry.alias}' fetches the alias itself)",
            model=name,
        )
    return name


def default_name(stem: str) -> str:
    """A valid name made from a file or folder name (for an import without a name)."""
    made = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:NAME_MAX].rstrip("-._")
    if not made:
        raise InvalidParams(f"cannot make a model name from {stem[:60]!r}: give one with --name", field="name")
    return made


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
    check_name(text, field="model")
    return PullRef(name=text, repo=base, revision=revision or None, suffix=suffix or None)
