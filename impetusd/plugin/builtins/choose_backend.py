"""Built-in backend choice: the only capable backend, or the first by name.

It runs last: backend plugins answer first for the machines they suit best
(``impetus_mlx`` on Apple Silicon, ``impetus_llamacpp`` for GGUF where Metal is absent).
"""

from __future__ import annotations

from impetusd.engine.backend import BackendSpec
from impetusd.engine.messages import ModelSpec
from impetusd.plugin.hookspecs import hookimpl


@hookimpl(trylast=True)
def impetus_select_backend(spec: ModelSpec, backends: list[BackendSpec]) -> str | None:
    return backends[0].name if backends else None
