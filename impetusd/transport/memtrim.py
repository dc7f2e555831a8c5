"""Give freed heap memory back to the OS after a large buffer is released.

glibc raises its mmap threshold after a large block is freed, so later large
buffers (a client's 16 MiB line) come from the heap and stay in the daemon's
RSS after they are freed. ``malloc_trim(0)`` returns that memory; elsewhere
this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None


def release_freed_memory() -> None:
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
