"""Readers of /proc and /sys. Each takes ``root`` (the filesystem root), so the
tests run them on files recorded from other machines as well as on this one.
Every reader answers None (unknown) for what the machine does not expose."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from impetusd.plugin_api import memory_cgroup

# cgroup v1 writes "no limit" as the largest page-aligned counter (e.g.
# 9223372036854771712); anything this large is no limit at all.
V1_UNLIMITED = 1 << 62

# Trip point types (Documentation/driver-api/thermal) mapped to pressure levels:
# fans turned on → fair; passive cooling (throttling) → serious; hot/critical → critical.
TRIP_LEVELS = {"active": "fair", "passive": "serious", "hot": "critical", "critical": "critical"}
LEVELS = ("nominal", "fair", "serious", "critical")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _int(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def cpuinfo(root: Path = Path("/")) -> dict[str, str | None]:
    """The CPU's name and the board's from /proc/cpuinfo: ``model name`` (x86,
    32-bit ARM) or ``cpu model`` (MIPS); ``Model`` names the board on ARM
    boards. 64-bit ARM kernels print no CPU name: None (unknown)."""
    text = _read(root / "proc/cpuinfo")
    fields: dict[str, str] = {}
    for line in (text or "").splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            fields.setdefault(key.strip(), value.strip())
    return {"cpu_model": fields.get("model name") or fields.get("cpu model"), "board": fields.get("Model")}


def cgroup_memory(root: Path = Path("/")) -> dict[str, Any] | None:
    """The memory limit and usage of the daemon's cgroup. The effective limit is
    the smallest set on the cgroup or any ancestor visible under the mount."""
    cg = memory_cgroup(root)
    if cg is None:
        return None
    limit_file, usage_file = ("memory.max", "memory.current") if cg.version == 2 else ("memory.limit_in_bytes", "memory.usage_in_bytes")
    limits: list[int] = []
    usage: int | None = None
    seen = False
    for d in map(Path, cg.dirs):
        text = _read(d / limit_file)
        if text is None:
            continue
        seen = True
        if usage is None:
            usage = _int(d / usage_file)
        if text != "max" and text.isdigit() and int(text) < V1_UNLIMITED:
            limits.append(int(text))
    if not seen:
        return {"version": cg.version, "path": cg.path, "memory_limit_bytes": None, "limited": None, "memory_usage_bytes": None}
    return {
        "version": cg.version,
        "path": cg.path,
        "memory_limit_bytes": min(limits) if limits else None,
        "limited": bool(limits),
        "memory_usage_bytes": usage,
    }


def _trips(zone: Path) -> list[dict[str, Any]]:
    trips = []
    for type_file in sorted(zone.glob("trip_point_*_type")):
        n = type_file.name.split("_")[2]
        kind = _read(type_file)
        temp = _int(zone / f"trip_point_{n}_temp")
        if kind and temp is not None and temp > 0:
            trips.append({"type": kind, "temp_c": temp / 1000})
    return trips


def thermal_zones(root: Path = Path("/")) -> list[dict[str, Any]]:
    """Every /sys/class/thermal/thermal_zone*: its type, temperature (°C) and trip points."""
    zones = []
    for zone in sorted((root / "sys/class/thermal").glob("thermal_zone*"), key=lambda p: _natural(p.name)):
        milli = _int(zone / "temp")
        zones.append(
            {
                "zone": zone.name,
                "type": _read(zone / "type"),
                "temp_c": None if milli is None else milli / 1000,
                "trips": _trips(zone),
            }
        )
    return zones


def hwmon_sensors(root: Path = Path("/")) -> list[dict[str, Any]]:
    """Every temperature input under /sys/class/hwmon: chip name, label, °C, and
    the chip's own max/crit marks where it has them."""
    sensors = []
    for chip in sorted((root / "sys/class/hwmon").glob("hwmon*"), key=lambda p: _natural(p.name)):
        name = _read(chip / "name")
        for inp in sorted(chip.glob("temp*_input"), key=lambda p: _natural(p.name)):
            prefix = inp.name.removesuffix("_input")
            milli = _int(inp)
            if milli is None:
                continue
            marks = {k: _int(chip / f"{prefix}_{k}") for k in ("max", "crit")}
            sensors.append(
                {
                    "chip": name,
                    "sensor": prefix,
                    "label": _read(chip / f"{prefix}_label"),
                    "temp_c": milli / 1000,
                    **{f"{k}_c": v / 1000 for k, v in marks.items() if v is not None and v > 0},
                }
            )
    return sensors


def pressure_level(zones: list[dict[str, Any]], sensors: list[dict[str, Any]]) -> str | None:
    """The worst level the measured temperatures reach against the machine's own
    trip points and sensor limits; None (unknown) when nothing has any."""
    levels: list[str] = []
    for zone in zones:
        if zone["temp_c"] is None or not zone["trips"]:
            continue
        levels.append("nominal")
        levels += [TRIP_LEVELS[t["type"]] for t in zone["trips"] if t["type"] in TRIP_LEVELS and zone["temp_c"] >= t["temp_c"]]
    for s in sensors:
        if "max_c" not in s and "crit_c" not in s:
            continue
        levels.append("nominal")
        if "crit_c" in s and s["temp_c"] >= s["crit_c"]:
            levels.append("critical")
        elif "max_c" in s and s["temp_c"] >= s["max_c"]:
            levels.append("serious")
    return max(levels, key=LEVELS.index) if levels else None


def _natural(name: str) -> tuple[Any, ...]:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))
