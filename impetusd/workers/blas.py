"""Which BLAS library the daemon preloads into worker processes.

MLX's Linux CPU wheel links a reference BLAS. With OpenBLAS preloaded
(``LD_PRELOAD``), float32 matrix products go through OpenBLAS, which made
prefill ~7-10x and batched decode ~3x faster on these machines; backends decide
themselves whether to use float32 weights (the MLX plugin does when it sees
OpenBLAS in its process and the weights are small enough).
"""

from __future__ import annotations

import ctypes.util
import logging
import os
import sys
from pathlib import Path

from impetusd.toolkit.children import WORKER_BLAS_ENV

log = logging.getLogger(__name__)

OPENBLAS_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib")


def find_openblas() -> str | None:
    """The system's OpenBLAS shared library (Debian: ``libopenblas0-pthread``), or None."""
    name = ctypes.util.find_library("openblas")
    if name:
        return name
    for d in OPENBLAS_DIRS:
        path = Path(d) / "libopenblas.so.0"
        if path.exists():
            return str(path)
    return None


def worker_env(setting: str, env: dict[str, str] | None = None) -> dict[str, str]:
    """Environment additions for a worker: ``LD_PRELOAD`` per the ``worker_blas``
    setting (``auto``: OpenBLAS on Linux when installed; ``off``; or a path).
    Nothing when the library is absent: the worker runs as before."""
    if setting == "off" or not sys.platform.startswith("linux"):
        return {}
    lib = find_openblas() if setting == "auto" else setting
    if not lib:
        return {}
    if setting != "auto" and not Path(lib).exists():
        log.warning("worker_blas %s does not exist; workers start without it", lib)
        return {}
    current = (env if env is not None else os.environ).get("LD_PRELOAD", "")
    return {"LD_PRELOAD": f"{lib} {current}".strip(), WORKER_BLAS_ENV: lib}
