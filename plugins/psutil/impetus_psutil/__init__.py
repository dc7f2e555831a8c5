"""Hardware monitor: measured CPU, memory, swap and disk facts from psutil."""

from __future__ import annotations

import os
import platform
from typing import Any

import psutil

from impetusd.hookspecs import hookimpl
from impetusd.registries import HardwareMonitor, Registry


def snapshot() -> dict[str, Any]:
    vm = psutil.virtual_memory()
    sw = psutil.swap_memory()
    home = os.environ.get("IMPETUS_HOME") or os.path.expanduser("~")
    try:
        disk: dict[str, Any] = {"path": home, "free_bytes": psutil.disk_usage(home).free}
    except OSError:
        disk = {"path": home, "free_bytes": None}
    return {
        "platform": platform.system().lower(),
        "machine": platform.machine(),
        "cpu_logical": psutil.cpu_count(logical=True),
        "cpu_physical": psutil.cpu_count(logical=False),
        "cpu_percent": psutil.cpu_percent(interval=None),
        "cpu_percent_per_core": psutil.cpu_percent(interval=None, percpu=True),
        "memory_total_bytes": vm.total,
        "memory_available_bytes": vm.available,
        "swap_total_bytes": sw.total,
        "swap_used_bytes": sw.used,
        "disk": disk,
        "daemon_rss_bytes": psutil.Process().memory_info().rss,
    }


@hookimpl
def impetus_register_hardware_monitors(registry: Registry[HardwareMonitor]) -> None:
    registry.add(HardwareMonitor(name="psutil", snapshot=snapshot))
