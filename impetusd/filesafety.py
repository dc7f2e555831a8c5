"""Refuse model files that run code when loaded: pickle-based weights.

PyTorch's ``.bin``/``.pt``/``.pth``/``.ckpt`` files are pickles (bare, or inside
a zip as ``*/data.pkl``); unpickling one runs whatever it names. They are
refused during resolution, before any plugin opens them, and recognised by
content as well as by name, so a renamed pickle does not get through.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from .errors import PickleRefused

PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"})
MAX_LISTED = 10_000
_HOW = (
    "pickle weights can run code when they are loaded, so Impetus does not load them; "
    "convert them once, with tools you trust, to safetensors or GGUF and load the copy"
)


def _looks_pickled(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            head = fh.read(4)
    except OSError:
        return False
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle protocol 2-5
        return True
    if head == b"PK\x03\x04":  # a zip: torch.save keeps the pickle as */data.pkl
        try:
            with zipfile.ZipFile(path) as zf:
                return any(name.endswith("data.pkl") for name in zf.namelist()[:MAX_LISTED])
        except (zipfile.BadZipFile, OSError, ValueError):
            return False
    return False


def refuse_pickle(path: Path) -> None:
    """Raise ``PickleRefused`` for pickle weights: a file, or a folder whose only weights are pickles."""
    if path.is_file():
        if path.suffix.lower() in PICKLE_SUFFIXES or _looks_pickled(path):
            raise PickleRefused(f"{path}: {_HOW}", path=str(path), files=[path.name])
        return
    if not path.is_dir():
        return
    try:
        files = [p for p in path.iterdir() if p.is_file()][:MAX_LISTED]
    except OSError:
        return
    if any(p.suffix in (".safetensors", ".gguf") for p in files):
        return  # a loader can use the safe weights
    pickled = sorted(p.name for p in files if p.suffix.lower() in PICKLE_SUFFIXES and p.name != "training_args.bin")
    if pickled:
        raise PickleRefused(f"{path}: its only weights are pickles ({', '.join(pickled[:3])}); {_HOW}", path=str(path), files=pickled)
