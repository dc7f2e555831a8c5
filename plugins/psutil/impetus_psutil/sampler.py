"""CPU use measured over a window by a background thread.

``psutil.cpu_percent(interval=None)`` compares with the previous call, so the
first call says 0.0 and two callers disturb each other. Here a thread measures
back-to-back windows (``psutil.cpu_percent(interval=window, percpu=True)``,
which keeps no shared state) while anyone asks; it stops after ``idle_stop_s``
without a reader and starts again on the next one. The first reader waits for
the first, shorter, window.
"""

from __future__ import annotations

import threading
import time

import msgspec
import psutil


class CpuSample(msgspec.Struct, frozen=True):
    percent: float  # all cores: the mean of the per-core figures (each core had the same wall time)
    per_core: list[float]
    window_s: float
    at: float  # time.time() when the window ended


class CpuSampler:
    def __init__(self, window_s: float = 1.0, first_window_s: float = 0.25, idle_stop_s: float = 30.0) -> None:
        self.window_s = window_s
        self.first_window_s = first_window_s
        self.idle_stop_s = idle_stop_s
        self._lock = threading.Lock()
        self._have = threading.Condition(self._lock)
        self._latest: CpuSample | None = None
        self._last_read = 0.0
        self._thread: threading.Thread | None = None

    def latest(self, timeout: float = 5.0) -> CpuSample | None:
        """The last complete window, starting the sampler if it is not running
        (then waiting for its first window). None only if that does not come."""
        with self._have:
            self._last_read = time.monotonic()
            if self._thread is None or not self._thread.is_alive():
                self._latest = None  # stale after a pause
                self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)
                self._thread.start()
            self._have.wait_for(lambda: self._latest is not None, timeout)
            return self._latest

    def _run(self) -> None:
        window = self.first_window_s
        while True:
            per_core = psutil.cpu_percent(interval=window, percpu=True)
            sample = CpuSample(
                percent=round(sum(per_core) / len(per_core), 1) if per_core else 0.0,
                per_core=per_core,
                window_s=window,
                at=time.time(),
            )
            with self._have:
                self._latest = sample
                self._have.notify_all()
                if time.monotonic() - self._last_read > self.idle_stop_s:
                    self._thread = None
                    return
            window = self.window_s
