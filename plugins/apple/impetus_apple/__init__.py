"""Hardware monitor for Apple Silicon Macs: chip, performance and efficiency
cores, memory, GPU cores, thermal pressure and MLX's view of the device, read
from the system's own tools (sysctl, system_profiler, notifyutil, pmset) and,
for MLX, from a subprocess (the daemon never imports mlx). Registered
everywhere; elsewhere it reports itself unavailable."""

from __future__ import annotations

import platform
import shutil
import subprocess
import sys
import threading
from typing import Any

from impetusd.plugin_api import HardwareMonitor, PluginRegistry, hookimpl

from . import parse

MLX_PROBE = (
    "import json, mlx.core as mx\n"
    "info = mx.device_info() if hasattr(mx, 'device_info') else mx.metal.device_info()\n"
    "print(json.dumps({'default_device': str(mx.default_device()), 'metal': bool(mx.metal.is_available()),"
    " **{k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in info.items()}}))\n"
)


def available() -> bool:
    return sys.platform == "darwin" and platform.machine() == "arm64"


def run(args: list[str], timeout: float = 10.0) -> str | None:
    """A tool's standard output, or None when it is missing or fails."""
    if shutil.which(args[0]) is None and not args[0].startswith("/"):
        return None
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


class AppleMonitor:
    """Static facts are read once (system_profiler and the MLX probe take
    about a second); the thermal level is read on every call."""

    def __init__(self) -> None:
        self._facts: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def facts(self) -> dict[str, Any]:
        with self._lock:
            if self._facts is None:
                facts = parse.machine(
                    run(["sysctl", "hw", "machdep"]) or "",  # every hw.* and machdep.* value
                    run(["system_profiler", "SPDisplaysDataType", "-json"], timeout=30) or "",
                )
                mlx = parse.mlx_info(run([sys.executable, "-c", MLX_PROBE], timeout=120) or "")
                self._facts = {**facts, "mlx": mlx}
            return self._facts

    def thermal(self) -> str | None:
        if not available():
            return None
        return parse.pressure(run(["notifyutil", "-g", "com.apple.system.thermalpressurelevel"]) or "")

    def snapshot(self) -> dict[str, Any]:
        if not available():
            return {"available": False, "reason": f"not Apple Silicon ({sys.platform} {platform.machine()})"}
        reading = parse.pressure_report(run(["notifyutil", "-g", "com.apple.system.thermalpressurelevel"]) or "")
        return {
            "available": True,
            **self.facts(),
            "thermal_state": reading["level"] if reading else "unknown",
            "thermal_pressure": reading,  # Apple's own name beside Impetus's level: {"level", "apple", "value"}
            "cpu_speed_limit_percent": parse.speed_limit(run(["pmset", "-g", "therm"]) or ""),
        }


@hookimpl
def impetus_register_hardware_monitors(registry: PluginRegistry[HardwareMonitor]) -> None:
    monitor = AppleMonitor()
    registry.add(HardwareMonitor(name="apple", snapshot=monitor.snapshot, thermal=monitor.thermal))
