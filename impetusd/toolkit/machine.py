"""Facts about this machine that backend choice depends on, decided without importing
any ML library (the daemon never imports mlx or llama.cpp)."""

from __future__ import annotations

import platform
import sys


def has_metal() -> bool:
    """Apple Silicon: macOS on arm64, where MLX runs models on the GPU through Metal.

    The llama.cpp backend (llama-cpp-python, no layers offloaded) runs on the CPU
    even here; its ``devices`` say so, and ``device_for`` reports it (docs/macos.md)."""
    return sys.platform == "darwin" and platform.machine() == "arm64"


def device_for(devices: frozenset[str], metal: bool | None = None) -> str:
    """The device a backend that can use ``devices`` runs on here: "metal" on Apple
    Silicon for a backend that offloads to Metal, otherwise "cpu". CPU and GPU share
    one (unified) memory on Apple Silicon, so the memory estimate is the same either way."""
    metal = has_metal() if metal is None else metal
    return "metal" if metal and "metal" in devices else "cpu"
