"""Failure-loop prevention: restart backoff and a circuit breaker per model.

Every unplanned worker death (crash, signal, hang, death while loading) is
recorded against the model's name. The next start waits ``base * 2**(n-1)``
seconds (capped) after the last of the ``n`` failures still inside the window;
``limit`` failures inside ``window_s`` open the circuit: the model is *failed*
and requests are refused at once, until ``window_s`` has passed since it opened
or the user forces a load. Restarts are lazy (the next request starts the
worker), so an open circuit means no process is started at all.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from impetusd.protocol.api import ModelFailure


class CrashHistory:
    def __init__(
        self,
        limit: int,
        window_s: float,
        backoff_s: float,
        backoff_max_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit = max(1, limit)
        self.window_s = window_s
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.clock = clock
        self._times: deque[float] = deque()
        self.last_cause = ""
        self.last_at_wall = 0.0
        self.opened_at: float | None = None
        self.total = 0
        self.hangs = 0

    def record(self, cause: str, *, hung: bool = False) -> None:
        now = self.clock()
        self._prune(now)
        self._times.append(now)
        self.total += 1
        self.hangs += hung
        self.last_cause = cause
        self.last_at_wall = time.time()
        if self.opened_at is None and len(self._times) >= self.limit:
            self.opened_at = now

    def _prune(self, now: float) -> None:
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()

    def is_open(self) -> bool:
        """True while the circuit is open; closes by itself once the window has passed."""
        if self.opened_at is None:
            return False
        now = self.clock()
        if now - self.opened_at < self.window_s:
            return True
        self.opened_at = None
        self._prune(now)
        return False

    def recent(self) -> int:
        self._prune(self.clock())
        return len(self._times)

    def backoff_left(self) -> float:
        """Seconds to wait before the next start (0 when there is no recent failure)."""
        n = self.recent()
        if n == 0:
            return 0.0
        delay = min(self.backoff_s * 2 ** (n - 1), self.backoff_max_s)
        return max(0.0, self._times[-1] + delay - self.clock())

    def retry_after(self) -> float:
        if self.opened_at is None:
            return self.backoff_left()
        return max(0.0, self.opened_at + self.window_s - self.clock())

    def reset(self) -> None:
        """The user forced a load: forget the failures and close the circuit."""
        self._times.clear()
        self.opened_at = None

    def reason(self) -> str:
        return f"{self.recent()} failure(s) in {self.window_s:g} s; last: {self.last_cause}"

    def describe(self, name: str) -> ModelFailure:
        failed = self.is_open()
        return ModelFailure(
            name=name,
            state="failed" if failed else "recovering",
            reason=self.reason(),
            last_cause=self.last_cause,
            failures=self.recent(),
            total_failures=self.total,
            hangs=self.hangs,
            last_failure_at=self.last_at_wall,
            retry_after_s=round(self.retry_after(), 3),
        )
