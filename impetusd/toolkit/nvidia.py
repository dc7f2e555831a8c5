"""NVIDIA GPUs as ``nvidia-smi`` reports them: the one reader of it (docs/gpu.md).

The Linux hardware monitor reports these GPUs to the daemon (its ``gpus``), whose memory
budget counts their memory; the llama.cpp backend reads them at load to pick the layers it
offloads, and asks which of its processes hold how much. Each call runs ``nvidia-smi`` once.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess

import msgspec

_FIELDS = ("index", "name", "memory.total", "memory.free", "memory.used", "temperature.gpu", "utilization.gpu")
_QUERY = ["--query-gpu=" + ",".join(_FIELDS), "--format=csv,noheader,nounits"]
_APPS = ["--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]
_MIB = 1024 * 1024


class Gpu(msgspec.Struct, frozen=True):
    """One GPU: its memory (bytes), temperature and load when the driver says."""

    index: int
    name: str
    total_bytes: int
    free_bytes: int
    used_bytes: int | None = None
    temp_c: float | None = None
    utilization_percent: float | None = None


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:  # "[N/A]", "[Not Supported]"
        return None


def parse(text: str) -> list[Gpu]:
    """The GPUs in the CSV that ``nvidia-smi _QUERY`` prints (MiB, °C, %); a GPU whose memory
    the driver does not report is left out (nothing to count)."""
    gpus = []
    for row in csv.reader(io.StringIO(text), skipinitialspace=True):
        if len(row) != len(_FIELDS):
            continue
        index, name, total, free, used, temp, util = (c.strip() for c in row)
        mib = [_number(total), _number(free), _number(used)]
        if not index.isdigit() or mib[0] is None or mib[1] is None:
            continue
        gpus.append(
            Gpu(
                index=int(index),
                name=name,
                total_bytes=int(mib[0] * _MIB),
                free_bytes=int(mib[1] * _MIB),
                used_bytes=None if mib[2] is None else int(mib[2] * _MIB),
                temp_c=_number(temp),
                utilization_percent=_number(util),
            )
        )
    return gpus


def _smi(args: list[str], timeout: float) -> str | None:
    binary = shutil.which("nvidia-smi")
    if binary is None:
        return None
    try:
        done = subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def query(timeout: float = 10.0) -> list[Gpu] | None:
    """The GPUs; None without nvidia-smi or when it fails."""
    text = _smi(_QUERY, timeout)
    return None if text is None else parse(text)


def process_memory(pids: set[int], timeout: float = 10.0) -> int | None:
    """GPU memory the processes ``pids`` hold (all GPUs), None when nvidia-smi cannot say."""
    text = _smi(_APPS, timeout)
    if text is None:
        return None
    used = 0
    for row in csv.reader(io.StringIO(text), skipinitialspace=True):
        try:
            pid, mib = int(row[0]), float(row[1])
        except (ValueError, IndexError):
            continue
        if pid in pids:
            used += int(mib * _MIB)
    return used
