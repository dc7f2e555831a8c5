"""Which installed model-format plugin recognises a path, and what it reads from it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from impetusd.protocol.errors import ImpetusError, InvalidModelFile, UnsupportedFormat

if TYPE_CHECKING:
    from impetusd.plugin.registries import ModelFormat, PluginRegistry


def detect_format(formats: PluginRegistry[ModelFormat], path: Path) -> tuple[str, dict[str, Any]]:
    """The name of the format plugin that recognises ``path``, and its metadata."""
    for fmt in formats.values():
        try:
            matched = fmt.detect(path)
        except OSError as exc:
            raise InvalidModelFile(f"{path}: {exc}", path=str(path)) from exc
        if matched:
            try:
                meta = fmt.inspect(path)
            except ImpetusError:
                raise
            except Exception as exc:  # a malformed file is the file's fault
                raise InvalidModelFile(f"{path}: not a valid {fmt.name} file ({exc})", path=str(path), format=fmt.name) from exc
            return fmt.name, meta
    raise UnsupportedFormat(
        f"{path}: no installed model-format plugin recognises it (have: {', '.join(formats.names()) or 'none'})",
        path=str(path),
    )
