"""Refuse model files that can run code when loaded: pickle-based weights.

PyTorch's ``.bin``/``.pt``/``.pth``/``.ckpt`` files are pickles (bare, or inside
a zip as ``*/data.pkl``); unpickling runs whatever the file says. Impetus
refuses them unless the user sets ``allow_pickle = true``. Recognised by name
and by content, so renaming a pickle does not get it through.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from .errors import UnsafeModelFile

PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"})
_HINT = "pickle-based weights can run code when loaded; use a GGUF or safetensors file, or set allow_pickle = true in config.toml"


def _looks_pickled(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle protocol 2-5
        return True
    if head == b"PK\x03\x04":  # a zip: torch.save's format keeps the pickle as */data.pkl
        try:
            with zipfile.ZipFile(path) as zf:
                return any(name.endswith("data.pkl") for name in zf.namelist()[:10_000])
        except (zipfile.BadZipFile, OSError, ValueError):
            return False
    return False


def refuse_pickle(path: Path, allowed: bool) -> None:
    """Raise ``UnsafeModelFile`` for pickle weights (a file, or a folder holding only such weights)."""
    if allowed:
        return
    if path.is_file():
        if path.suffix.lower() in PICKLE_SUFFIXES or _looks_pickled(path):
            raise UnsafeModelFile(f"{path}: {_HINT}", path=str(path), reason="pickle")
        return
    if path.is_dir():
        try:
            names = [p for p in path.iterdir() if p.is_file()][:10_000]
        except OSError:
            return
        if any(p.suffix == ".safetensors" for p in names) or any(p.suffix == ".gguf" for p in names):
            return  # a loader can use the safe weights
        pickled = sorted(p.name for p in names if p.suffix.lower() in PICKLE_SUFFIXES and p.name != "training_args.bin")
        if pickled:
            raise UnsafeModelFile(f"{path}: holds only pickle weights ({', '.join(pickled[:3])}); {_HINT}", path=str(path), reason="pickle")
