"""Which files of a Hub repository make up the model to pull."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

import msgspec

from impetusd.protocol.errors import NoMatchingFiles, PickleRefused

# What an mlx-lm or transformers folder needs besides its weights.
FOLDER_FILES = {
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
    "model.safetensors.index.json",
    "vocab.txt",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
}
_MODULE_CONFIG = re.compile(r"^\d+_\w+/config\.json$")  # sentence-transformers modules (1_Pooling/config.json)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
DEFAULT_QUANT = "Q4_K_M"  # what most GGUF users expect when they do not say
_SHARD = re.compile(r"-\d{5}-of-\d{5}\.gguf$")


class RemoteFile(msgspec.Struct, frozen=True):
    name: str
    size: int
    sha256: str | None = None  # LFS files: the content's sha256
    blob_id: str | None = None  # git's sha1 of the blob (what the Hub calls the etag of small files)

    @property
    def etag(self) -> str:
        return self.sha256 or self.blob_id or ""


class Selection(msgspec.Struct, frozen=True):
    kind: str  # "gguf" or "folder"
    files: list[RemoteFile]
    primary: str  # the file or folder (repo-relative; "" for the repo root) a backend loads


def _gguf_group(name: str) -> str:
    """Shards of one GGUF share a group: ``m-Q4_K_M-00001-of-00002.gguf`` -> ``m-Q4_K_M``."""
    return _SHARD.sub("", name).removesuffix(".gguf")


def _quant_match(selector: str, name: str) -> bool:
    # the selector as a whole token of the file name: Q4_0 must not match Q4_0_4_8
    pattern = rf"(?<![A-Za-z0-9]){re.escape(selector)}(?![A-Za-z0-9_])"
    return re.search(pattern, PurePosixPath(name).name, re.IGNORECASE) is not None


def ggufs(files: list[RemoteFile]) -> list[RemoteFile]:
    return [f for f in files if f.name.endswith(".gguf") and not PurePosixPath(f.name).name.startswith("mmproj")]


def selects_files(files: list[RemoteFile], selector: str) -> bool:
    return any(_quant_match(selector, f.name) for f in ggufs(files))


def choose(repo: str, files: list[RemoteFile], selector: str | None, fixed: list[str] | None) -> Selection:
    if fixed:
        by_name = {f.name: f for f in files}
        missing = [n for n in fixed if n not in by_name]
        if missing:
            raise NoMatchingFiles(f"{repo} has no file {missing[0]!r}", repo=repo, file=missing[0])
        return Selection(kind="gguf" if fixed[0].endswith(".gguf") else "folder", files=[by_name[n] for n in fixed], primary=fixed[0])
    candidates = ggufs(files)
    if candidates:
        groups: dict[str, list[RemoteFile]] = {}
        for f in candidates:
            groups.setdefault(_gguf_group(f.name), []).append(f)
        if selector:
            picked = {g: fs for g, fs in groups.items() if any(_quant_match(selector, f.name) for f in fs)}
        elif len(groups) == 1:
            picked = groups
        else:
            picked = {g: fs for g, fs in groups.items() if any(_quant_match(DEFAULT_QUANT, f.name) for f in fs)}
        if len(picked) != 1:
            choices = ", ".join(sorted(PurePosixPath(g).name for g in groups))
            why = "matches none" if not picked else "matches several"
            what = f"{selector!r} {why} of" if selector else "holds several GGUF files; pick one with :QUANT from"
            raise NoMatchingFiles(f"{repo} {what}: {choices}", repo=repo, choices=sorted(groups))
        [chosen] = picked.values()
        chosen = sorted(chosen, key=lambda f: f.name)
        return Selection(kind="gguf", files=chosen, primary=chosen[0].name)
    top = [f for f in files if "/" not in f.name]
    weights = [f for f in top if f.name.endswith(".safetensors")]
    if weights:
        needed = weights + [f for f in top if f.name in FOLDER_FILES or f.name.endswith(".tiktoken")]
        needed += [f for f in files if _MODULE_CONFIG.match(f.name)]
        return Selection(kind="folder", files=sorted(needed, key=lambda f: f.name), primary="")
    if any(f.name.endswith(PICKLE_SUFFIXES) for f in files):
        raise PickleRefused(
            f"{repo} only has PyTorch pickle weights, which can run code when loaded; Impetus pulls GGUF or SafeTensors. "
            "Look for a SafeTensors or GGUF version of this model",
            repo=repo,
        )
    raise NoMatchingFiles(f"{repo} has no GGUF or SafeTensors weights", repo=repo)
