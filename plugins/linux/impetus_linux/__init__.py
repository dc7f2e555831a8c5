"""Hardware monitor for Linux: CPU model, the daemon's cgroup memory limit,
thermal zones and hwmon temperatures, NVIDIA GPUs. Registered everywhere; on
other systems it reports itself unavailable."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from impetusd.plugin_api import Gpu, HardwareMonitor, PluginRegistry, hookimpl

from . import nvidia, sysfs


def available() -> bool:
    return sys.platform.startswith("linux")


def snapshot(root: Path = Path("/")) -> dict[str, Any]:
    if not available():
        return {"available": False, "reason": f"not Linux ({sys.platform})"}
    zones = sysfs.thermal_zones(root)
    sensors = sysfs.hwmon_sensors(root)
    return {
        "available": True,
        **sysfs.cpuinfo(root),
        "cgroup": sysfs.cgroup_memory(root),
        "thermal_zones": zones,
        "sensors": sensors,
        "thermal_state": sysfs.pressure_level(zones, sensors) or "unknown",
        "nvidia_gpus": nvidia.query(),
    }


def gpus() -> list[Gpu] | None:
    return nvidia.gpus() if available() else None


def thermal(root: Path = Path("/")) -> str | None:
    if not available():
        return None
    return sysfs.pressure_level(sysfs.thermal_zones(root), sysfs.hwmon_sensors(root))


@hookimpl
def impetus_register_hardware_monitors(registry: PluginRegistry[HardwareMonitor]) -> None:
    registry.add(HardwareMonitor(name="linux", snapshot=snapshot, thermal=thermal, gpus=gpus))
