"""``impetusctl dashboard`` and ``impetusctl menubar``, and the menu-bar entries
built from a real daemon's state (the echo test backend: fast)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from helpers import DaemonProcess, wait_until
from impetusctl.menubar import SEPARATOR, MenuEntry, act, menu_entries, menu_title, read_state


def ctl(daemon: DaemonProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "impetusctl", "--no-autostart", *args], env=daemon.env, capture_output=True, text=True, timeout=60)


def test_menu_entries_follow_the_daemon(daemon: DaemonProcess, echo_model: Path) -> None:
    path = Path(daemon.socket)
    health, loaded = read_state(path)
    assert health is not None and loaded is not None
    entries = menu_entries(health, loaded)
    assert entries[0].title is not None and entries[0].title.startswith("Daemon ok") and not entries[0].enabled
    assert MenuEntry("No model loaded") in entries
    assert entries[-2:] == [MenuEntry("Open dashboard", True, "dashboard"), MenuEntry("Quit", True, "quit")]
    assert menu_title(health) == "Impetus 0"

    with daemon.connect() as conn:
        conn.call("models.load", {"model": str(echo_model)})
    health, loaded = read_state(path)
    assert health is not None and loaded is not None
    name = loaded.models[0].name
    entries = menu_entries(health, loaded)
    unload = next(e for e in entries if e.action == "unload")
    assert unload == MenuEntry(f"Unload {name}", True, "unload", name)
    assert any(e.title and e.title.startswith(f"{name} — ") and "on echo" in e.title for e in entries)
    assert any(e.title and e.title.startswith("Memory: ") for e in entries)
    assert SEPARATOR in entries and menu_title(health) == "Impetus 1"

    act(unload, path, "http://127.0.0.1:1/dashboard")  # what a click on it does
    _, loaded = read_state(path)
    assert loaded is not None and loaded.models == []


def test_menu_when_the_daemon_is_gone(tmp_path: Path) -> None:
    health, loaded = read_state(tmp_path / "nothing.sock")
    assert (health, loaded) == (None, None)
    assert menu_entries(health, loaded) == [MenuEntry("Daemon not running"), SEPARATOR, MenuEntry("Quit", True, "quit")]
    assert menu_title(None) == "Impetus ✕"


def test_menubar_command_explains_it_is_macos_only(daemon: DaemonProcess) -> None:
    r = ctl(daemon, "menubar")
    assert r.returncode == 1 and "macOS-only" in r.stderr, r.stderr


def test_dashboard_command_starts_the_shim_and_reuses_it(daemon: DaemonProcess) -> None:
    with httpx.Client() as probe:
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            port = free.getsockname()[1]
        r = ctl(daemon, "--json", "dashboard", "--no-browser", "--port", str(port))
        assert r.returncode == 0, r.stderr
        first = json.loads(r.stdout)
        assert first["url"] == f"http://127.0.0.1:{port}/dashboard" and first["started_pid"]
        try:
            page = probe.get(first["url"])
            assert page.status_code == 200 and "<title>Impetus</title>" in page.text
            again = json.loads(ctl(daemon, "--json", "dashboard", "--no-browser", "--port", str(port)).stdout)
            assert again == {"url": first["url"], "started_pid": None}  # already there: nothing started
        finally:
            os.kill(first["started_pid"], signal.SIGTERM)
        assert wait_until(lambda: probe_fails(probe, first["url"]), timeout=15)


def probe_fails(client: httpx.Client, url: str) -> bool:
    try:
        client.get(url)
    except httpx.TransportError:
        return True
    return False
