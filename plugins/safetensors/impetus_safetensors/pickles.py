"""Refuse PyTorch pickle checkpoints: unpickling one runs whatever code it names.

A path is a pickle checkpoint when it is a ``.bin``/``.pt``/``.pth``/``.ckpt``
file that starts like one (a zip archive, as ``torch.save`` writes, or a pickle
protocol 2+ stream), a file of any other name whose bytes are a pickle stream or
a zip holding ``*/data.pkl`` (a renamed checkpoint), or a folder whose only
weights are such files. A folder
that also has safetensors weights is not one: the safetensors formats take it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from impetusd.plugin_api import PickleRefused

from .folder import qualifies

SUFFIXES = frozenset({".bin", ".pt", ".pth", ".ckpt"})
SAFE_SUFFIXES = frozenset({".safetensors", ".gguf", ".json", ".txt", ".md"})
MAX_LISTED = 64

HOW = (
    "pickle files can run arbitrary code when they are loaded, so Impetus never loads them. "
    "Convert the weights once, with tools you trust, to safetensors (transformers: "
    "model.save_pretrained(out, safe_serialization=True); or safetensors.torch.save_file("
    "torch.load(path, weights_only=True), 'model.safetensors')) or to GGUF (llama.cpp's "
    "convert_hf_to_gguf.py), and load the converted copy; or let Impetus convert it once with "
    "torch.load(weights_only=True) in a separate process: impetusctl import PATH --convert-pickle"
)


def _looks_pickled(path: Path) -> bool:
    # Safe formats are never sniffed: a safetensors header length of 0x280..0x5FF
    # begins with the same two bytes as a pickle stream.
    if not path.is_file() or path.suffix.lower() in SAFE_SUFFIXES:
        return False
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return True
    if head != b"PK\x03\x04":
        return False
    if path.suffix.lower() in SUFFIXES:
        return True
    try:  # a zip under another name: a checkpoint only if torch.save's pickle is inside
        with zipfile.ZipFile(path) as zf:
            return any(name.endswith("data.pkl") for name in zf.namelist()[:10_000])
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def pickle_files(path: Path) -> list[Path]:
    """The pickle checkpoints ``path`` is, or that a folder holds as its only weights."""
    if path.is_file():
        return [path] if _looks_pickled(path) else []
    if not path.is_dir() or qualifies(path) or any(path.glob("*.safetensors")):
        return []
    found: list[Path] = []
    for child in sorted(path.iterdir()):
        if _looks_pickled(child):
            found.append(child)
            if len(found) >= MAX_LISTED:
                break
    return found


def detect(path: Path) -> bool:
    return bool(pickle_files(path))


def inspect(path: Path) -> dict[str, Any]:
    files = pickle_files(path)
    raise PickleRefused(f"{path}: {HOW}", path=str(path), files=[f.name for f in files])
