"""How many threads llama.cpp uses for a request.

llama.cpp's threads meet at a spinning barrier at every step of the graph: when
another process takes a core from one of them, the others spin until it is back.
On a machine whose cores are busy with other work, all-cores is then several
times slower than fewer threads (measured on a shared 2-core machine at a load
average of ~5: 2 threads decoded 2-10 tok/s, 1 thread ~35 tok/s). So each request
gets the physical cores, less the cores other processes kept busy since the
previous request (at least one). ``IMPETUS_LLAMACPP_THREADS`` fixes the number.
"""

from __future__ import annotations

import os
import time

import psutil

from impetusd.plugin_api import InvalidParams

THREADS_ENV = "IMPETUS_LLAMACPP_THREADS"
MIN_WINDOW_S = 0.5  # shorter windows say too little; keep the last choice


def physical_cores() -> int:
    return psutil.cpu_count(logical=False) or psutil.cpu_count() or 1


def fixed_threads() -> int | None:
    wanted = os.environ.get(THREADS_ENV)
    if not wanted:
        return None
    if not wanted.isdigit() or int(wanted) < 1:
        raise InvalidParams(f"{THREADS_ENV} must be a positive whole number, not {wanted!r}", field=THREADS_ENV)
    return int(wanted)


def _busy(times: tuple[float, ...]) -> float:
    """CPU seconds spent on anything but idling (Linux counts guest time in user too)."""
    idle = sum(getattr(times, k, 0.0) for k in ("idle", "iowait", "guest", "guest_nice"))
    return sum(times) - idle


class ThreadPolicy:
    def __init__(self) -> None:
        self.fixed = fixed_threads()
        self.cores = physical_cores()
        self.me = psutil.Process()
        self.last = self.fixed or self.cores
        self._mark()

    def _mark(self) -> None:
        self.when = time.monotonic()
        self.system = _busy(psutil.cpu_times())
        own = self.me.cpu_times()
        self.own = own.user + own.system

    def pick(self) -> int:
        """Threads for the next request (the fixed number, if one is set)."""
        if self.fixed:
            return self.fixed
        elapsed = time.monotonic() - self.when
        if elapsed < MIN_WINDOW_S:
            return self.last
        system, own = self.system, self.own
        self._mark()
        others = max(0.0, (self.system - system) - (self.own - own)) / elapsed  # cores busy elsewhere
        self.last = max(1, min(self.cores, round(self.cores - others)))
        return self.last
