"""Which backend runs a model, and on which device of this machine.

The one place the choice is made: the residency manager loads models with it and
``impetusctl doctor`` reports it, so the two cannot disagree."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from impetusd.engine.backend import BackendSpec
from impetusd.engine.messages import ModelSpec
from impetusd.plugin.registries import Registries
from impetusd.protocol.errors import NoBackend
from impetusd.toolkit.machine import device_for


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
        hint = f": {fmt.backend_hint}" if fmt is not None and fmt.backend_hint else ""
        raise NoBackend(f"no installed backend can run {spec.format} models{hint}", format=spec.format)
    name = hook.impetus_select_backend(spec=spec, backends=capable)
    chosen = backends.get(name) if name else None
    return chosen if chosen in capable else capable[0]


def offloads(backend: BackendSpec, room: int) -> bool:
    """Whether ``backend`` would put layers of a model on a GPU with ``room`` bytes free: its own
    plan (``gpu_layers``) for a one-layer model of one byte (a build without CUDA: no)."""
    if backend.gpu_layers is None:
        return False
    probe = ModelSpec(name="probe", path="", format="", metadata={"block_count": 1, "size_bytes": 1})
    try:
        return backend.gpu_layers(probe, os.environ, None, room)[0] > 0
    except Exception:  # no binary, a bad setting: the backend's own check says why
        return False


def placement(backend: BackendSpec, gpus: Sequence[str] = (), gpu_bytes: int = 0) -> str:
    """Where ``backend`` runs here, in words: "Metal GPU", the ``gpus`` (NVIDIA, from the hardware
    monitors) when it offloads to them, or "CPU"."""
    if device_for(backend.devices) == "metal":
        return "Metal GPU"
    if gpus and offloads(backend, gpu_bytes):
        return "GPU (" + ", ".join(gpus) + ")"
    return "CPU"
