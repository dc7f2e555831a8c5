"""Every hook Impetus calls, grouped by lifecycle. All are prefixed ``impetus_``.

Registration hooks receive a typed registry and return nothing; call
``registry.add(item)`` once per item. Decision hooks are ``firstresult``.
Plugins import ``hookimpl`` and the types below from ``impetusd.plugin_api``;
docs/plugins.md describes each hook, and tests/test_hooks.py tests each.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from typing import Any as Daemon  # impetusd.daemon.Daemon, which sits above the plugin layer

    from impetusd.config import Config
    from impetusd.engine.backend import BackendSpec
    from impetusd.engine.messages import ModelSpec
    from impetusd.observe.events import Event
    from impetusd.plugin.registries import CacheTier, CliCommand, DoctorCheck, HardwareMonitor, MethodSpec, ModelFormat, PluginRegistry

hookspec = pluggy.HookspecMarker("impetus")
hookimpl = pluggy.HookimplMarker("impetus")

# ---------------------------------------------------------------------------
# Registration: called once when a plugin manager is built (daemon, each worker,
# impetusctl: its doctor and its plugins' commands).
# ---------------------------------------------------------------------------


@hookspec
def impetus_register_model_formats(registry: PluginRegistry[ModelFormat]) -> None:
    """Add model-format loaders that recognise a path and read its metadata."""


@hookspec
def impetus_register_backends(registry: PluginRegistry[BackendSpec]) -> None:
    """Add inference engines: the formats they run, their capabilities, how to start one."""


@hookspec
def impetus_register_cache_tiers(registry: PluginRegistry[CacheTier]) -> None:
    """Add prompt/KV cache tiers: ``CacheTier(name, factory, backends, order)``; the
    worker of a model on one of ``backends`` whose engine is a ``CacheTierEngine``
    calls ``factory(CacheTierContext)`` and hands the ``PromptCacheTier`` it returns
    to its engine (None: the tier declines)."""


@hookspec
def impetus_register_hardware_monitors(registry: PluginRegistry[HardwareMonitor]) -> None:
    """Add sources of hardware facts and samples (``HardwareMonitor``); a
    monitor's optional ``thermal`` level feeds thermal-aware scheduling."""


@hookspec
def impetus_register_methods(registry: PluginRegistry[MethodSpec]) -> None:
    """Add RPC methods; third-party methods use their own ``prefix.`` names."""


@hookspec
def impetus_register_commands(registry: PluginRegistry[CliCommand]) -> None:
    """Add ``impetusctl`` commands: ``CliCommand(name, make)``; ``make()`` returns the click
    command, built only when the CLI needs it (its name is asked for, or the help)."""


@hookspec
def impetus_register_doctor_checks(registry: PluginRegistry[DoctorCheck]) -> None:
    """Add ``impetusctl doctor`` checks: ``DoctorCheck(name, run)``; ``run(config)``
    returns a ``Diagnosis`` (pass, warn or fail, and the fix)."""


# ---------------------------------------------------------------------------
# Decisions: the first non-None answer wins.
# ---------------------------------------------------------------------------


@hookspec(firstresult=True)
def impetus_resolve_model(ref: str, config: Config) -> ModelSpec | None:
    """Turn a name, alias, path or repo id into a ModelSpec, or None to pass. Asked
    in the daemon for a ref neither loaded nor registered; an empty ``format`` is
    left to the format plugins to detect. Raise ModelNotFound to refuse."""


@hookspec(firstresult=True)
def impetus_select_backend(spec: ModelSpec, backends: list[BackendSpec]) -> str | None:
    """Choose the backend (by name) for a model among those that can run its format,
    when neither the request nor the config names one; a name not offered is ignored."""


# ---------------------------------------------------------------------------
# Lifecycle and observation (daemon only).
# ---------------------------------------------------------------------------


@hookspec
def impetus_startup(daemon: Daemon) -> None:
    """The daemon is listening. May return an awaitable; an exception stops the daemon."""


@hookspec
def impetus_shutdown(daemon: Daemon) -> None:
    """The daemon is stopping: requests have drained, workers are still running.
    May return an awaitable."""


@hookspec
def impetus_event(event: Event) -> None:
    """Observe a typed event (model loaded/unloaded, request finished, ...). Called
    on the daemon's event loop: keep it quick; an exception is logged and ignored."""
