"""Facts about this machine that backend choice depends on, decided without importing
any ML library (the daemon never imports mlx or llama.cpp)."""

from __future__ import annotations

import platform
import sys


def has_metal() -> bool:
    """Apple Silicon: macOS on arm64, where Metal runs MLX and llama.cpp on the GPU."""
    return sys.platform == "darwin" and platform.machine() == "arm64"
