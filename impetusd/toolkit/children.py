"""Child processes a worker starts (llama-server, MLX ranks) end with it: on Linux the
kernel kills them when the worker dies (``PR_SET_PDEATHSIG``); elsewhere each backend
also watches a pipe from the worker."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with(parent: int) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets SIGKILL when ``parent`` dies."""

    def child() -> None:  # runs in the child between fork and exec
        if sys.platform == "linux":
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the parent died before the line above
                os._exit(1)

    return child


WORKER_BLAS_ENV = "IMPETUS_WORKER_BLAS"  # the library the daemon preloads into workers (impetusd/workers/blas.py)


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a program a worker starts that is not Python (llama-server,
    rpc-server): the worker's, less the BLAS library preloaded for the worker's own use.
    Preloaded into llama-server, OpenBLAS slowed its decoding by several per cent."""
    out = dict(os.environ if env is None else env)
    lib = out.pop(WORKER_BLAS_ENV, None)
    if lib:
        rest = [p for p in out.get("LD_PRELOAD", "").split() if p != lib]
        if rest:
            out["LD_PRELOAD"] = " ".join(rest)
        else:
            out.pop("LD_PRELOAD", None)
    return out
