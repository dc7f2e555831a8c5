"""Hardware monitor: CPU (sampled over a window), memory, swap, disk free for
IMPETUS_HOME, and the memory of the daemon and each worker, from psutil."""

from __future__ import annotations

import os
import platform
from typing import Any

import psutil

from impetusd.plugin_api import HardwareMonitor, PluginRegistry, hookimpl

from .sampler import CpuSampler


def snapshot(sampler: CpuSampler) -> dict[str, Any]:
    vm = psutil.virtual_memory()
    sw = psutil.swap_memory()
    home = os.environ.get("IMPETUS_HOME") or os.path.expanduser("~/.impetus")
    probe = home
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)  # free space where IMPETUS_HOME will be
    try:
        disk: dict[str, Any] = {"path": home, "free_bytes": psutil.disk_usage(probe).free}
    except OSError:
        disk = {"path": home, "free_bytes": None}
    me = psutil.Process()
    workers: dict[str, int | None] = {}
    for child in me.children():
        try:
            workers[str(child.pid)] = child.memory_info().rss
        except psutil.Error:
            workers[str(child.pid)] = None
    cpu = sampler.latest()
    return {
        "platform": platform.system().lower(),
        "machine": platform.machine(),
        "cpu_logical": psutil.cpu_count(logical=True),
        "cpu_physical": psutil.cpu_count(logical=False),
        "cpu_percent": None if cpu is None else cpu.percent,
        "cpu_percent_per_core": None if cpu is None else cpu.per_core,
        "cpu_window_s": None if cpu is None else cpu.window_s,
        "cpu_sampled_at": None if cpu is None else cpu.at,
        "memory_total_bytes": vm.total,
        "memory_available_bytes": vm.available,
        "memory_percent": vm.percent,
        "swap_total_bytes": sw.total,
        "swap_used_bytes": sw.used,
        "disk": disk,
        "daemon_rss_bytes": me.memory_info().rss,
        "children_rss_bytes": workers,  # pid -> RSS of each worker process
    }


@hookimpl
def impetus_register_hardware_monitors(registry: PluginRegistry[HardwareMonitor]) -> None:
    sampler = CpuSampler()  # one per registry (daemon), started on the first snapshot
    registry.add(HardwareMonitor(name="psutil", snapshot=lambda: snapshot(sampler)))
