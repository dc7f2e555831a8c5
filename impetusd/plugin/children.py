"""Child processes a worker starts (llama-server, MLX ranks) end with it: on Linux the
kernel kills them when the worker dies (``PR_SET_PDEATHSIG``); elsewhere each backend
also watches a pipe from the worker."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def die_with(parent: int) -> Callable[[], None]:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets SIGKILL when ``parent`` dies."""

    def child() -> None:  # runs in the child between fork and exec
        if sys.platform == "linux":
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != parent:  # the parent died before the line above
                os._exit(1)

    return child
