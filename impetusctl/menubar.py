"""The macOS menu-bar item: daemon state turned into menu entries (a plain
function, tested anywhere), and the rumps glue that shows them (darwin only).

The glue is behind ``sys.platform == "darwin"`` and an import check for rumps;
it has not been exercised on a Mac by the test suite (rumps needs AppKit).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import webbrowser
from pathlib import Path
from typing import Any, Literal

import msgspec

from impetusd.protocol.api import Health, LoadedList

from .client import Client, DaemonUnavailable

Action = Literal["dashboard", "unload", "quit"]
REFRESH_S = 5.0


class MenuEntry(msgspec.Struct, frozen=True):
    """One line of the menu: ``action`` (with ``model`` for ``unload``) runs on a click;
    an entry without one is shown greyed out. A ``None`` title is a separator."""

    title: str | None
    enabled: bool = False
    action: Action | None = None
    model: str | None = None


SEPARATOR = MenuEntry(title=None)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit in ("B", "KB") else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def menu_title(health: Health | None) -> str:
    """The text in the menu bar itself: the loaded-model count, a mark when not well."""
    if health is None:
        return "Impetus ✕"
    mark = "" if health.status == "ok" else " !"
    return f"Impetus {health.loaded_models}{mark}"


def menu_entries(health: Health | None, loaded: LoadedList | None) -> list[MenuEntry]:
    """What the menu lists for this state of the daemon (``None``: it does not answer)."""
    if health is None or loaded is None:
        return [MenuEntry("Daemon not running"), SEPARATOR, MenuEntry("Quit", True, "quit")]
    minutes = int(health.uptime_s // 60)
    entries = [MenuEntry(f"Daemon {health.status} · up {minutes // 60}h {minutes % 60}m · {health.in_flight} in flight")]
    entries += [MenuEntry(f"Failed: {f.name} ({f.state})") for f in health.failures]
    if health.thermal is not None and health.thermal.level not in ("nominal", "unknown"):
        entries.append(MenuEntry(f"Thermal: {health.thermal.level}" + (" (throttled)" if health.thermal.throttled else "")))
    entries.append(SEPARATOR)
    if not loaded.models:
        entries.append(MenuEntry("No model loaded"))
    for m in loaded.models:
        busy = f", {m.in_flight} in flight" if m.in_flight else ""
        entries.append(MenuEntry(f"{m.name} — {_size(m.memory_bytes)} on {m.backend}{busy}"))
        entries.append(MenuEntry(f"Unload {m.name}", True, "unload", m.name))
    if loaded.memory is not None:
        entries.append(MenuEntry(f"Memory: {_size(loaded.memory.used_bytes)} of {_size(loaded.memory.budget_bytes)}"))
    return [*entries, SEPARATOR, MenuEntry("Open dashboard", True, "dashboard"), MenuEntry("Quit", True, "quit")]


def read_state(socket: Path) -> tuple[Health | None, LoadedList | None]:
    try:
        with Client(socket, timeout=5) as client:
            return client.call("daemon.health", type=Health), client.call("models.loaded", type=LoadedList)
    except (DaemonUnavailable, OSError):
        return None, None


def available() -> str | None:
    """Why the menu bar cannot run here (``None``: it can)."""
    if sys.platform != "darwin":
        return f"the menu-bar item is macOS-only (this is {sys.platform}); use 'impetusctl dashboard' or 'impetusctl top'"
    if importlib.util.find_spec("rumps") is None:
        return "the menu-bar item needs rumps: pip install rumps"
    return None


def act(entry: MenuEntry, socket: Path, dashboard_url: str) -> None:
    """Do what a clicked entry says (``quit`` is the app's own)."""
    if entry.action == "dashboard":
        webbrowser.open(dashboard_url)
    elif entry.action == "unload" and entry.model:
        with Client(socket, timeout=30) as client:
            client.call("models.unload", {"model": entry.model})


def run(socket: Path, dashboard_url: str) -> None:  # pragma: no cover - needs macOS and rumps
    rumps: Any = importlib.import_module("rumps")  # macOS only, not a dependency (no stubs)
    app: Any = rumps.App("Impetus", title="Impetus", quit_button=None)

    def clicked(entry: MenuEntry) -> Any:
        def on_click(_: Any) -> None:
            if entry.action == "quit":
                rumps.quit_application()
                return
            try:
                act(entry, socket, dashboard_url)
            except Exception as exc:  # shown, not fatal
                rumps.notification("Impetus", f"{entry.title} failed", str(exc))
            refresh(None)

        return on_click

    def refresh(_: Any) -> None:
        health, loaded = read_state(socket)
        app.title = menu_title(health)
        app.menu.clear()
        for entry in menu_entries(health, loaded):
            if entry.title is None:
                app.menu.add(rumps.separator)
                continue
            item = rumps.MenuItem(entry.title, callback=clicked(entry) if entry.enabled else None)
            app.menu.add(item)

    rumps.Timer(refresh, REFRESH_S).start()
    refresh(None)
    app.run()
