"""NVIDIA GPUs through ``nvidia-smi`` when the binary is installed."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from typing import Any

FIELDS = ("name", "memory.total", "memory.used", "temperature.gpu", "utilization.gpu")
QUERY = ["--query-gpu=" + ",".join(FIELDS), "--format=csv,noheader,nounits"]


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:  # "[N/A]", "[Not Supported]"
        return None


def parse_query(text: str) -> list[dict[str, Any]]:
    """One dict per GPU from the CSV that ``nvidia-smi QUERY`` prints (MiB, °C, %)."""
    gpus = []
    for row in csv.reader(io.StringIO(text), skipinitialspace=True):
        if len(row) != len(FIELDS):
            continue
        name, total, used, temp, util = (c.strip() for c in row)
        mib = [_number(total), _number(used)]
        gpus.append(
            {
                "name": name,
                "memory_total_bytes": None if mib[0] is None else int(mib[0] * 1024 * 1024),
                "memory_used_bytes": None if mib[1] is None else int(mib[1] * 1024 * 1024),
                "temp_c": _number(temp),
                "utilization_percent": _number(util),
            }
        )
    return gpus


def query(timeout: float = 5.0) -> list[dict[str, Any]] | None:
    """The GPUs ``nvidia-smi`` reports; None when it is not installed, or fails."""
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None
    try:
        done = subprocess.run([binary, *QUERY], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_query(done.stdout) if done.returncode == 0 else None
