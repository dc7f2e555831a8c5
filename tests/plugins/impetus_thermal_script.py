"""A scripted hardware monitor for the tests, loaded through IMPETUS_PLUGINS.

Its thermal pressure level is whatever the file named by ``IMPETUS_TEST_THERMAL``
holds (``nominal``, ``fair``, ``serious``, ``critical``; empty or missing:
unknown), so a test heats and cools the "machine" by writing a word.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from impetusd.plugin_api import HardwareMonitor, PluginRegistry, hookimpl


def level() -> str | None:
    path = os.environ.get("IMPETUS_TEST_THERMAL")
    try:
        return (Path(path).read_text().strip() or None) if path else None
    except FileNotFoundError:
        return None


def snapshot() -> dict[str, Any]:
    return {"thermal_state": level() or "unknown"}


@hookimpl
def impetus_register_hardware_monitors(registry: PluginRegistry[HardwareMonitor]) -> None:
    registry.add(HardwareMonitor(name="scripted", snapshot=snapshot, thermal=level))
