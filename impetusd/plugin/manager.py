"""The plugin-manager factory: built-ins, entry points, extra modules, checks."""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Iterable
from typing import Any

import pluggy

from impetusd.plugin import hookspecs
from impetusd.plugin.registries import Registries
from impetusd.protocol.errors import PluginError

log = logging.getLogger(__name__)

_ENTRY_POINT_GROUP = "impetus"

# The daemon's own plugins: essential ones cannot be disabled.
BUILTIN_MODULES = ("impetusd.plugin.builtins.resolve", "impetusd.plugin.builtins.choose_backend", "impetusd.dispatch.methods")


def make_plugin_manager(
    extra_modules: Iterable[str] = (),
    disabled: Iterable[str] = (),
    load_entry_points: bool = True,
) -> pluggy.PluginManager:
    """Build a fresh manager: built-ins, then ``impetus`` entry points, then
    ``extra_modules`` (dotted names; ``IMPETUS_PLUGINS``). Unknown ``impetus_*``
    hooks make the plugin fail loudly."""
    pm = pluggy.PluginManager("impetus")
    pm.add_hookspecs(hookspecs)
    for name in BUILTIN_MODULES:
        pm.register(importlib.import_module(name), name=name)
    for name in disabled:
        pm.set_blocked(name)
    if load_entry_points:
        pm.load_setuptools_entrypoints(_ENTRY_POINT_GROUP)
    for dotted in extra_modules:
        dotted = dotted.strip()
        if not dotted or pm.has_plugin(dotted) or pm.is_blocked(dotted):
            continue
        try:
            module = importlib.import_module(dotted)
        except ImportError as exc:
            raise PluginError(f"cannot import plugin {dotted!r}: {exc}", plugin=dotted) from exc
        pm.register(module, name=dotted)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"plugin implements an unknown hook: {exc}") from exc
    return pm


def build_registries(pm: pluggy.PluginManager) -> Registries:
    """Call every registration hook once, into fresh typed registries."""
    regs = Registries.empty()
    hook = pm.hook
    hook.impetus_register_model_formats(registry=regs.formats)
    hook.impetus_register_backends(registry=regs.backends)
    hook.impetus_register_cache_tiers(registry=regs.cache_tiers)
    hook.impetus_register_hardware_monitors(registry=regs.monitors)
    hook.impetus_register_methods(registry=regs.methods)
    hook.impetus_register_commands(registry=regs.commands)
    hook.impetus_register_doctor_checks(registry=regs.doctor_checks)
    return regs


def plugin_summary(pm: pluggy.PluginManager) -> list[tuple[str, list[str]]]:
    out = []
    for name, plugin in pm.list_name_plugin():
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        out.append((name or repr(plugin), hooks))
    return sorted(out)


async def await_maybe(value: Any) -> Any:
    """Hooks may return a value or an awaitable; the async host accepts both."""
    if inspect.isawaitable(value):
        return await value
    return value
