"""Was a worker killed by the OS for memory? Evidence without reading the kernel log.

A SIGKILL the daemon did not send is usually the out-of-memory killer. Two
signs are checked: the ``oom_kill`` counter of the daemon's memory cgroup rose
while the worker lived (cgroup v2 ``memory.events``, v1 ``memory.oom_control``;
the worker is in the daemon's cgroup), or the last sample before the death
found the machine nearly out of memory or the worker holding most of it.
"""

from __future__ import annotations

import signal
from pathlib import Path

import psutil

from impetusd.observe.cgroup import memory_cgroup
from impetusd.observe.rss import ProcessTree

LOW_AVAILABLE = 0.05  # fraction of RAM still available
BIG_WORKER = 0.5  # fraction of RAM held by the worker


def _cgroup_files() -> list[Path]:
    cg = memory_cgroup()
    if cg is None:
        return []
    name = "memory.events" if cg.version == 2 else "memory.oom_control"
    return [Path(d) / name for d in cg.dirs]


def oom_kill_count() -> int | None:
    for path in _cgroup_files():
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
    return None


class MemoryWatch:
    """Samples kept by the daemon for one worker."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.tree = ProcessTree(pid)
        self.kills_at_start = oom_kill_count()
        self.available_fraction: float | None = None
        self.worker_fraction: float | None = None

    def sample(self) -> None:
        try:
            vm = psutil.virtual_memory()
        except psutil.Error:
            return
        rss = self.tree.rss()
        if rss is None:
            return
        self.available_fraction = vm.available / vm.total
        self.worker_fraction = rss / vm.total

    def hint(self, exit_code: int | None) -> str | None:
        """A note for the exit cause when it looks like the OS killed the worker for memory."""
        if exit_code != -signal.SIGKILL:
            return None
        now = oom_kill_count()
        if self.kills_at_start is not None and now is not None and now > self.kills_at_start:
            return "killed by the OS for memory (the memory cgroup's OOM-kill count rose)"
        if self.available_fraction is not None and self.available_fraction < LOW_AVAILABLE:
            return f"possibly killed by the OS for memory ({self.available_fraction:.0%} of RAM was available)"
        if self.worker_fraction is not None and self.worker_fraction > BIG_WORKER:
            return f"possibly killed by the OS for memory (the worker held {self.worker_fraction:.0%} of RAM)"
        return None
