"""Resident memory of a worker: its own and its children's (a backend may serve the
model from a child process, as the llama.cpp backend does with llama-server)."""

from __future__ import annotations

import time

import psutil

CHILDREN_REFRESH_S = 10.0  # how long a ProcessTree trusts its list of descendants


def tree_rss(pid: int) -> int | None:
    """Bytes resident in ``pid`` and its descendants; None when ``pid`` is gone."""
    try:
        proc = psutil.Process(pid)
        total = proc.memory_info().rss
        children = proc.children(recursive=True)
    except psutil.Error:
        return None
    return total + _rss_of(children)[0]


class ProcessTree:
    """``tree_rss`` for a caller that asks every second: listing descendants reads every
    process's ``/proc`` entry, so the list is kept for ``CHILDREN_REFRESH_S`` seconds, or
    until one of them is gone."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._proc: psutil.Process | None = None
        self._children: list[psutil.Process] = []
        self._listed_at = float("-inf")

    def rss(self) -> int | None:
        try:
            if self._proc is None:
                self._proc = psutil.Process(self.pid)
            total = self._proc.memory_info().rss
            if time.monotonic() - self._listed_at > CHILDREN_REFRESH_S:
                self._children = self._proc.children(recursive=True)
                self._listed_at = time.monotonic()
        except psutil.Error:
            return None
        children, gone = _rss_of(self._children)
        if gone:
            self._listed_at = float("-inf")  # list them again next time
        return total + children


def _rss_of(procs: list[psutil.Process]) -> tuple[int, bool]:
    """Their resident bytes, and whether any has exited."""
    total, gone = 0, False
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            gone = True  # exited meanwhile
    return total, gone
