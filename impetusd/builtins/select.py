"""Built-in backend choice: the only capable backend, or the first by name."""

from __future__ import annotations

from ..backend import BackendSpec, ModelSpec
from ..hookspecs import hookimpl


@hookimpl(trylast=True)
def impetus_select_backend(spec: ModelSpec, backends: list[BackendSpec]) -> str | None:
    return backends[0].name if backends else None
