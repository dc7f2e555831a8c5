"""Typed registries that registration hooks fill. The host resolves name clashes here."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

import msgspec

from impetusd.engine.backend import BackendSpec
from impetusd.engine.capabilities import PromptCacheTier
from impetusd.protocol.errors import PluginError
from impetusd.toolkit.nvidia import Gpu

if TYPE_CHECKING:
    import click

    from impetusd.config import Config


class ModelFormat(msgspec.Struct, frozen=True):
    """A model-format loader: recognise a path, and read its metadata cheaply."""

    name: str
    detect: Callable[[Path], bool]
    inspect: Callable[[Path], dict[str, Any]]
    description: str = ""
    # Opt-in only (``models.import {convert_pickle}``): write a copy of ``path`` in a
    # loadable format into the new, empty folder ``dest``. Blocking; run in a thread.
    convert: Callable[[Path, Path], None] | None = None
    # Said with NoBackend when no installed backend runs this format (why, and what would).
    backend_hint: str = ""


class HardwareMonitor(msgspec.Struct, frozen=True):
    """A source of hardware facts; ``snapshot`` is cheap and blocking-safe."""

    name: str
    snapshot: Callable[[], dict[str, Any]]
    # The current thermal pressure level ("nominal", "fair", "serious",
    # "critical") or None when unknown; cheap, polled by the thermal watch.
    thermal: Callable[[], str | None] | None = None
    # The GPUs with their own memory (``impetusd.toolkit.nvidia.Gpu``), or None when the
    # monitor cannot say; the memory budget's GPU side (docs/design.md, Residency). Blocking.
    gpus: Callable[[], list[Gpu] | None] | None = None


class CacheTierContext(msgspec.Struct, frozen=True, kw_only=True):
    """What a cache tier's factory gets inside the worker."""

    backend: str
    model_digest: str  # identifies the exact weights; caches of other weights never match
    directory: str | None = None  # where a persistent tier keeps its files (per model digest)
    memory_bytes: int = 0  # budget of an in-memory tier
    disk_bytes: int = 0  # budget of an on-disk tier
    variant: str = ""  # the engine's numeric setup (e.g. "f32"): caches of other variants never match


class CacheTier(msgspec.Struct, frozen=True):
    """A prompt-cache tier, registered by a plugin. ``factory`` runs inside the
    worker of a model whose backend is in ``backends``; tiers are asked in
    ``order`` (memory before disk)."""

    name: str
    factory: Callable[[CacheTierContext], PromptCacheTier]
    backends: frozenset[str] = frozenset()
    order: int = 0
    description: str = ""


class MethodSpec(msgspec.Struct, frozen=True):
    """An RPC method. ``handler(services, params, ctx)`` may be sync or async; ``services`` is
    the daemon's ``dispatch.services.Services`` (config, store, residency, events, ...)."""

    name: str
    params: type
    result: type
    handler: Callable[..., Any | Awaitable[Any]]
    doc: str = ""
    stream: bool = False  # sends notifications before its result


class Diagnosis(msgspec.Struct, frozen=True):
    """One line of ``impetusctl doctor``: a finding, and what to do when it is not a pass."""

    name: str
    status: Literal["pass", "warn", "fail"]
    detail: str
    fix: str | None = None


class DoctorCheck(msgspec.Struct, frozen=True):
    """A check ``impetusctl doctor`` runs (blocking; an exception is itself a failed check)."""

    name: str
    run: Callable[[Config], Diagnosis]


class CliState(Protocol):
    """What an ``impetusctl`` command finds as its click context's ``obj``."""

    config: Config
    json: bool  # --json: print machine-readable JSON

    def client(self) -> Any:
        """A connected ``impetusctl.client.Client`` (the daemon started on demand)."""
        ...


class CliCommand(msgspec.Struct, frozen=True):
    """An ``impetusctl`` command (or group) of a plugin: ``make`` builds it when the CLI first
    needs it (so its imports wait until then); its callbacks read a ``CliState`` from ``ctx.obj``."""

    name: str
    make: Callable[[], click.Command]
    description: str = ""


class Named(Protocol):
    """What every registered spec has: a unique name."""

    @property
    def name(self) -> str: ...


T = TypeVar("T", bound=Named)


class PluginRegistry(Generic[T]):
    """Name → item, refusing duplicates with a PluginError naming both sides."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, item: T) -> None:
        name: str = item.name  # every registered spec has a name
        if name in self._items:
            raise PluginError(f"{self.kind} {name!r} is registered twice", kind=self.kind, item=name)
        self._items[name] = item

    __call__ = add

    def get(self, name: str) -> T | None:
        return self._items.get(name)

    def names(self) -> list[str]:
        return sorted(self._items)

    def values(self) -> list[T]:
        return [self._items[n] for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __len__(self) -> int:
        return len(self._items)


class Registries(msgspec.Struct):
    formats: PluginRegistry[ModelFormat]
    backends: PluginRegistry[BackendSpec]
    cache_tiers: PluginRegistry[CacheTier]
    monitors: PluginRegistry[HardwareMonitor]
    methods: PluginRegistry[MethodSpec]
    commands: PluginRegistry[CliCommand]
    doctor_checks: PluginRegistry[DoctorCheck]

    @classmethod
    def empty(cls) -> Registries:
        return cls(
            formats=PluginRegistry("model format"),
            backends=PluginRegistry("backend"),
            cache_tiers=PluginRegistry("cache tier"),
            monitors=PluginRegistry("hardware monitor"),
            methods=PluginRegistry("method"),
            commands=PluginRegistry("command"),
            doctor_checks=PluginRegistry("doctor check"),
        )
