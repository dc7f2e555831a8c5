"""Where the daemon's memory cgroup lives (v2 unified or v1 ``memory`` controller).

``root`` is the filesystem root to read from, so the same code reads this
machine's ``/proc`` and ``/sys`` or a copy of another machine's in a test.
"""

from __future__ import annotations

from pathlib import Path

import msgspec


class MemoryCgroup(msgspec.Struct, frozen=True):
    version: int  # 1 or 2
    path: str  # as /proc/self/cgroup names it
    dirs: list[str]  # candidate directories, the process's own first, then its ancestors up to the mount


def memory_cgroup(root: Path = Path("/")) -> MemoryCgroup | None:
    """The daemon's memory cgroup from ``/proc/self/cgroup``, or None where there is none."""
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    v2: MemoryCgroup | None = None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if "memory" in controllers.split(","):  # v1 wins where the memory controller is mounted as v1
            return MemoryCgroup(1, path, _ancestors(root / "sys/fs/cgroup/memory", path))
        if controllers == "":
            v2 = MemoryCgroup(2, path, _ancestors(root / "sys/fs/cgroup", path))
    return v2


def _ancestors(mount: Path, path: str) -> list[str]:
    """``mount/path`` and each parent up to ``mount`` (inside a container the
    process's path is often not visible under the mount; the mount itself is)."""
    rel = Path(path.lstrip("/"))
    dirs = [mount / rel, *[mount / p for p in rel.parents]]
    return [str(d) for d in dirs]
