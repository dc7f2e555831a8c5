"""Opt-in conversions at import: a format plugin's ``convert`` writes a loadable
copy of a model into the store (``$IMPETUS_HOME/converted/NAME``), once."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import anyio

from impetusd.protocol.errors import InvalidParams

if TYPE_CHECKING:
    from impetusd.plugin.registries import ModelFormat, PluginRegistry


def converted_root(home: Path) -> Path:
    return home / "converted"


async def convert_into_store(formats: PluginRegistry[ModelFormat], home: Path, path: Path, name: str) -> Path:
    """Run the converter of the format that claims ``path``; the new folder's path."""
    converters = [f for f in formats.values() if f.convert is not None and f.detect(path)]
    if not converters:
        raise InvalidParams(f"Invalid params: {path} is not a PyTorch pickle checkpoint; convert_pickle converts only those", field="convert_pickle")
    if "/" in name or name in (".", "..") or name.startswith("."):
        raise InvalidParams(f"Invalid params: {name!r} cannot name a folder in the store", field="name")
    root = converted_root(home)
    root.mkdir(parents=True, exist_ok=True)
    dest = root / name
    work = root / f".{name}.partial"
    shutil.rmtree(work, ignore_errors=True)  # an earlier attempt that died half-way
    work.mkdir()
    convert = converters[0].convert
    assert convert is not None
    try:
        await anyio.to_thread.run_sync(convert, path, work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if dest.exists():  # a leftover of a model no longer registered (the name was free)
        shutil.rmtree(dest)
    work.rename(dest)
    return dest


def remove_converted(home: Path, folder: Path) -> tuple[list[str], int]:
    """Delete a converted copy (only ever inside the store's ``converted`` folder)."""
    root = converted_root(home).resolve()
    folder = folder.resolve()
    if root not in folder.parents or not folder.is_dir():
        return [], 0
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    freed = sum(p.stat().st_size for p in files)
    shutil.rmtree(folder, ignore_errors=True)
    return [p.relative_to(folder).as_posix() for p in files], freed
