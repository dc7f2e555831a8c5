"""Which backend runs a model, and on which device of this machine.

The one place the choice is made: the residency manager loads models with it and
``impetusctl doctor`` reports it, so the two cannot disagree."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from impetusd.plugin.engine import BackendSpec, ModelSpec
from impetusd.plugin.machine import device_for
from impetusd.plugin.registries import Registries
from impetusd.protocol.errors import NoBackend


def choose_backend(registries: Registries, hook: Any, configured: Mapping[str, str], spec: ModelSpec, wanted: str | None) -> BackendSpec:
    """``wanted`` (a request's ``backend``), else the config's ``backend`` for the format,
    else what the ``impetus_select_backend`` hooks pick among the capable backends."""
    backends = registries.backends
    capable = [b for b in backends.values() if spec.format in b.formats]
    wanted = wanted or configured.get(spec.format)
    if wanted:
        chosen = backends.get(wanted)
        if chosen is None:
            raise NoBackend(f"backend {wanted!r} is not installed (have: {', '.join(backends.names()) or 'none'})", backend=wanted)
        if chosen not in capable:
            raise NoBackend(f"backend {wanted!r} cannot run {spec.format} models", backend=wanted, format=spec.format)
        return chosen
    if not capable:
        fmt = registries.formats.get(spec.format)
        hint = (
            f": {fmt.backend_hint}"
            if fmt is not None and fmt.backend_hint
            else (" (install the impetus-llamacpp or impetus-mlx plugin)" if spec.format == "gguf" else "")
        )
        raise NoBackend(f"no installed backend can run {spec.format} models{hint}", format=spec.format)
    name = hook.impetus_select_backend(spec=spec, backends=capable)
    chosen = backends.get(name) if name else None
    return chosen if chosen in capable else capable[0]


def placement(backend: BackendSpec) -> str:
    """Where ``backend`` runs here, in words: "Metal GPU" or "CPU"."""
    return "Metal GPU" if device_for(backend.devices) == "metal" else "CPU"
