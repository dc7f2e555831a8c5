"""Parsers for what macOS's own tools print. Each takes the command's output
text (the tests feed recorded output from real M1–M4 machines); nothing here
knows any chip: every fact is read, and what the text does not say is None."""

from __future__ import annotations

import json
import re
from typing import Any

# OSThermalNotification.h: the value posted under com.apple.system.thermalpressurelevel
# (kOSThermalPressureLevelNominal, Moderate, Heavy, Trapping, Sleeping), by Apple's names ...
APPLE_PRESSURE_NAMES = {0: "nominal", 1: "moderate", 2: "heavy", 3: "trapping", 4: "sleeping"}
# ... and Impetus's levels, shared by every platform and the config's thermal_backoff_level
# (ProcessInfo.ThermalState's names): Apple's moderate is "fair", heavy is "serious",
# trapping and sleeping are both "critical" (docs/design.md, Thermal-aware scheduling).
PRESSURE_LEVELS = {0: "nominal", 1: "fair", 2: "serious", 3: "critical", 4: "critical"}


def sysctl(text: str) -> dict[str, str]:
    """``sysctl NAME...`` / ``sysctl -a`` output (``name: value`` lines)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and name.strip() and " " not in name.strip():
            values[name.strip()] = value.strip()
    return values


def _int(values: dict[str, str], name: str) -> int | None:
    value = values.get(name, "")
    return int(value) if value.isdigit() else None


def cpu(values: dict[str, str]) -> dict[str, Any]:
    """Chip name, memory and cores per performance level from sysctl values.

    ``hw.perflevel0`` is the highest-performing level; a level's ``name``
    (macOS 13+) says Performance/Efficiency, older systems only number them,
    so with two levels 0 is performance and 1 efficiency. Counts prefer
    ``physicalcpu_max`` (cores present) over ``physicalcpu`` (enabled now)."""
    levels = []
    count = _int(values, "hw.nperflevels")
    n = 0
    while (count is None or n < count) and any(k.startswith(f"hw.perflevel{n}.") for k in values):
        cores = _int(values, f"hw.perflevel{n}.physicalcpu_max") or _int(values, f"hw.perflevel{n}.physicalcpu")
        levels.append({"level": n, "name": values.get(f"hw.perflevel{n}.name"), "cores": cores})
        n += 1
    performance = efficiency = None
    for lv in levels:
        kind = str(lv["name"] or "").lower()
        if kind == "performance" or (not kind and len(levels) == 2 and lv["level"] == 0):
            performance = lv["cores"]
        elif kind == "efficiency" or (not kind and len(levels) == 2 and lv["level"] == 1):
            efficiency = lv["cores"]
    return {
        "chip": values.get("machdep.cpu.brand_string") or None,
        "memory_bytes": _int(values, "hw.memsize"),
        "cpu_cores": _int(values, "hw.physicalcpu_max") or _int(values, "hw.ncpu"),
        "performance_cores": performance,
        "efficiency_cores": efficiency,
        "perf_levels": levels,
    }


def displays(text: str) -> dict[str, Any]:
    """The built-in GPU's name and core count from ``system_profiler
    SPDisplaysDataType``, as ``-json`` (``sppci_model``, ``sppci_cores``) or as
    text (``Chipset Model:``, ``Total Number of Cores:``)."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        for gpu in data.get("SPDisplaysDataType") or []:
            if not isinstance(gpu, dict):
                continue
            cores = str(gpu.get("sppci_cores", ""))
            return {"gpu": gpu.get("sppci_model") or None, "gpu_cores": int(cores) if cores.isdigit() else None}
        return {"gpu": None, "gpu_cores": None}
    model = re.search(r"^\s*Chipset Model:\s*(.+?)\s*$", text, re.M)
    count = re.search(r"^\s*Total Number of Cores:\s*(\d+)\s*$", text, re.M)
    return {"gpu": model.group(1) if model else None, "gpu_cores": int(count.group(1)) if count else None}


def machine(sysctl_text: str, displays_text: str) -> dict[str, Any]:
    """CPU, memory and GPU facts from the two tools' output. Early macOS 11
    named no chip (``machdep.cpu.brand_string: Apple processor``); then the
    built-in GPU's entry, which system_profiler names after the chip, does."""
    facts = {**cpu(sysctl(sysctl_text)), **displays(displays_text), "chip_source": "sysctl"}
    if facts["chip"] in (None, "Apple processor"):
        facts["chip"], facts["chip_source"] = (facts["gpu"], "system_profiler") if facts["gpu"] else (None, None)
    return facts


def pressure_value(text: str) -> int | None:
    """``notifyutil -g com.apple.system.thermalpressurelevel`` (``NAME VALUE``): the value,
    if macOS defines it."""
    parts = text.split()
    if len(parts) == 2 and parts[0] == "com.apple.system.thermalpressurelevel" and parts[1].isdigit():
        value = int(parts[1])
        return value if value in APPLE_PRESSURE_NAMES else None
    return None


def pressure(text: str) -> str | None:
    """Impetus's level for ``notifyutil``'s output."""
    value = pressure_value(text)
    return None if value is None else PRESSURE_LEVELS[value]


def pressure_report(text: str) -> dict[str, Any] | None:
    """The level by both names, as snapshots show it: Impetus's, Apple's, and the value."""
    value = pressure_value(text)
    if value is None:
        return None
    return {"level": PRESSURE_LEVELS[value], "apple": APPLE_PRESSURE_NAMES[value], "value": value}


def speed_limit(text: str) -> int | None:
    """``CPU_Speed_Limit`` (percent) from ``pmset -g therm``. Apple Silicon
    Macs print only "No ... has been recorded" notes: None."""
    found = re.search(r"CPU_Speed_Limit\s*=\s*(\d+)", text)
    return int(found.group(1)) if found else None


def mlx_info(text: str) -> dict[str, Any] | None:
    """The JSON line ``MLX_PROBE`` prints; None if MLX did not answer."""
    try:
        data = json.loads(text.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return data if isinstance(data, dict) else None
