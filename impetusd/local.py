"""What ``impetusctl`` may use of the daemon's package beside the wire (``impetusd.protocol``):
the face for running and diagnosing Impetus on this machine (docs/design.md, The wall).

The configuration and its paths, name parsing, the catalog and the Hub cache, and, for
``impetusctl doctor`` and the plugins' commands, the plugins as the daemon would load them,
its backend choice and its thermal reading. Nothing here talks to a daemon; the heavy
parts (the plugin manager, residency) are imported when a function that needs them runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from impetusd.config import Config, load_config, make_private_home
from impetusd.plugin.registries import Diagnosis
from impetusd.protocol.errors import ImpetusError
from impetusd.store.cache import hub_cache
from impetusd.store.catalog import CATALOG
from impetusd.store.names import parse as parse_name
from impetusd.toolkit.machine import has_metal
from impetusd.workers.blas import worker_env

if TYPE_CHECKING:
    from collections.abc import Callable

    import click

    from impetusd.plugin.registries import DoctorCheck, HardwareMonitor, Registries

__all__ = [
    "Config",
    "load_config",
    "make_private_home",
    "Diagnosis",
    "hub_cache",
    "CATALOG",
    "parse_name",
    "has_metal",
    "worker_env",
    "plugin_registries",
    "monitors",
    "thermal_level",
    "backend_placements",
    "doctor_checks",
    "plugin_commands",
]


def plugin_registries(config: Config) -> Registries:
    """The plugins ``config`` names, with the installed ones, registered as in the daemon."""
    from impetusd.plugin.manager import build_registries, make_plugin_manager

    return build_registries(make_plugin_manager(config.plugins, config.disabled_plugins))


def monitors(config: Config) -> list[HardwareMonitor]:
    return plugin_registries(config).monitors.values()


def thermal_level(config: Config) -> tuple[str, str | None]:
    """The worst thermal level the monitors report now, and which monitor: the daemon's reading."""
    from impetusd.residency.thermal import read_levels, worst

    return worst(read_levels([m for m in monitors(config) if m.thermal is not None]))


def backend_placements(config: Config, formats: tuple[str, ...]) -> list[tuple[str, str | None, str]]:
    """For each format: the backend the daemon would choose (None: none can run it) and where
    it runs here, in words (``impetusd.residency.choice``, with this config's ``backend`` settings)."""
    from impetusd.engine.messages import ModelSpec
    from impetusd.plugin.manager import build_registries, make_plugin_manager
    from impetusd.protocol.errors import NoBackend
    from impetusd.residency.choice import choose_backend, placement
    from impetusd.residency.resident import gpu_budget

    pm = make_plugin_manager(config.plugins, config.disabled_plugins)
    registries = build_registries(pm)
    gpu = gpu_budget(list(registries.monitors.values()))
    found: list[tuple[str, str | None, str]] = []
    for fmt in formats:
        try:
            chosen = choose_backend(registries, pm.hook, config.backend, ModelSpec(name=fmt, path="", format=fmt), None)
        except NoBackend:
            found.append((fmt, None, ""))
            continue
        found.append((fmt, chosen.name, placement(chosen, gpu.gpus if gpu else (), gpu.bytes if gpu else 0)))
    return found


def doctor_checks(config: Config) -> list[DoctorCheck]:
    """The plugins' ``impetusctl doctor`` checks (``impetus_register_doctor_checks``)."""
    return plugin_registries(config).doctor_checks.values()


def plugin_commands() -> dict[str, Callable[[], click.Command]]:
    """The plugins' ``impetusctl`` commands by name (``impetus_register_commands``), each
    built when called; the plugins are those of the configuration the environment names."""
    try:
        config = load_config()
    except ImpetusError:  # a broken config.toml: the built-in commands still say why
        return {}
    return {c.name: c.make for c in plugin_registries(config).commands.values()}
