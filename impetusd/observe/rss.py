"""Resident memory of a worker: its own and its children's (a backend may serve the
model from a child process, as the llama.cpp backend does with llama-server)."""

from __future__ import annotations

import psutil


def tree_rss(pid: int) -> int | None:
    """Bytes resident in ``pid`` and its descendants; None when ``pid`` is gone."""
    try:
        proc = psutil.Process(pid)
        total = proc.memory_info().rss
        children = proc.children(recursive=True)
    except psutil.Error:
        return None
    for child in children:
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass  # exited meanwhile
    return total
