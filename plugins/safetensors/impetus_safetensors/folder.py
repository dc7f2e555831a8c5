"""The layout of a safetensors model folder: which files it needs, read with bounds.

A folder qualifies when it holds ``config.json`` and either a shard index
(``model.safetensors.index.json``) or a single ``model.safetensors``. The index,
when present, is the list of weight files; other ``*.safetensors`` files beside
it (``consolidated.safetensors``, adapters) are not part of the model.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec

from impetusd.plugin_api import InvalidModelFile

from .reader import SafetensorsHeader, read_header

CONFIG = "config.json"
INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
GENERATION_CONFIG = "generation_config.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "spiece.model",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "chat_template.jinja",
    "chat_template.json",
    "tiktoken.model",
)
# sentence-transformers' pipeline description, and its modules' configs in numbered folders.
SENTENCE_TRANSFORMERS_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")
MODULE_DIR = re.compile(r"^\d+_\w+$")
MAX_CONFIG = 4 << 20
MAX_INDEX = 32 << 20
MAX_TOKENIZER_CONFIG = 16 << 20
MAX_SHARDS = 1 << 14


class ShardIndex(msgspec.Struct):
    weight_map: dict[str, str]
    metadata: dict[str, Any] = {}


def read_json(path: Path, limit: int) -> dict[str, Any]:
    """A JSON object from ``path``, refusing files over ``limit`` bytes before reading them."""
    size = path.stat().st_size
    if size > limit:
        raise InvalidModelFile(f"{path}: {size} bytes is over the {limit}-byte limit for this file", path=str(path))
    try:
        doc = msgspec.json.decode(path.read_bytes())
    except msgspec.DecodeError as exc:
        raise InvalidModelFile(f"{path}: not valid JSON ({exc})", path=str(path)) from None
    if not isinstance(doc, dict):
        raise InvalidModelFile(f"{path}: not a JSON object", path=str(path))
    return doc


def qualifies(path: Path) -> bool:
    """Cheap: a folder with config.json and safetensors weights (single or indexed)."""
    return path.is_dir() and (path / CONFIG).is_file() and ((path / INDEX).is_file() or (path / SINGLE).is_file())


class Folder:
    """A qualifying folder's config, index and weight files, each read at most once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._config: dict[str, Any] | None = None
        self._index: ShardIndex | None = None
        self._headers: dict[str, SafetensorsHeader] = {}

    @property
    def config(self) -> dict[str, Any]:
        if self._config is None:
            self._config = read_json(self.path / CONFIG, MAX_CONFIG)
        return self._config

    @property
    def index(self) -> ShardIndex | None:
        if self._index is None and (self.path / INDEX).is_file():
            index_path = self.path / INDEX
            try:
                self._index = msgspec.convert(read_json(index_path, MAX_INDEX), ShardIndex)
            except msgspec.ValidationError as exc:
                raise InvalidModelFile(f"{index_path}: not a shard index ({exc})", path=str(index_path)) from None
        return self._index

    def weight_files(self) -> list[str]:
        """The weight files' names, sorted; an index's names are checked to be plain files here."""
        index = self.index
        if index is None:
            return [SINGLE]
        names = sorted(set(index.weight_map.values()))
        index_path = str(self.path / INDEX)
        if not names:
            raise InvalidModelFile(f"{index_path}: the weight map is empty", path=index_path)
        if len(names) > MAX_SHARDS:
            raise InvalidModelFile(f"{index_path}: {len(names)} weight files exceeds the limit", path=index_path)
        for name in names:
            if "/" in name or "\\" in name or name.startswith(".") or not name.endswith(".safetensors"):
                raise InvalidModelFile(f"{index_path}: weight file {name!r} is not a safetensors file in the folder", path=index_path)
            if not (self.path / name).is_file():
                raise InvalidModelFile(f"{index_path}: weight file {name!r} is missing", path=str(self.path / name))
        return names

    def header(self, name: str) -> SafetensorsHeader:
        if name not in self._headers:
            self._headers[name] = read_header(self.path / name)
        return self._headers[name]

    def tokenizer_config(self) -> dict[str, Any]:
        p = self.path / "tokenizer_config.json"
        return read_json(p, MAX_TOKENIZER_CONFIG) if p.is_file() else {}

    def support_files(self) -> list[str]:
        """Config, generation config, index, tokenizer and sentence-transformers files that are present."""
        names = [n for n in (CONFIG, GENERATION_CONFIG, INDEX, *TOKENIZER_FILES, *SENTENCE_TRANSFORMERS_FILES) if (self.path / n).is_file()]
        names += sorted(p.name for p in self.path.glob("*.tiktoken") if p.is_file())
        names += sorted(f"{p.parent.name}/{p.name}" for p in self.path.glob("*/config.json") if MODULE_DIR.match(p.parent.name) and p.is_file())
        return names
