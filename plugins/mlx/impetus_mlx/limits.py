"""Bounds the package's registration (the daemon's memory estimate) and its worker
both read, in a module that imports nothing (``cpu`` reads them without importing
the package back)."""

FLOAT32_MAX_BYTES = 2 * 1024**3  # largest model widened to float32 on a CPU with OpenBLAS (cpu.py)
