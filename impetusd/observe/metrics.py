"""Counters and histograms the daemon keeps about its own work.

Plain numbers in memory, read through ``daemon.metrics`` and ``/metrics``; the HTTP shim turns
them into Prometheus text. Labels are bounded: a model label is always a name
the daemon resolved, never a string a client made up.
"""

from __future__ import annotations

import bisect
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from impetusd.protocol.api import Histogram, ModelStats, RecentRequest, RequestCount
from impetusd.protocol.errors import ImpetusError

UNRESOLVED = "(unresolved)"  # the model label of requests that failed before a model was found

TTFT_BOUNDS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DECODE_BOUNDS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0)


@dataclass
class _Histogram:
    bounds: tuple[float, ...]
    buckets: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.buckets = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.buckets[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value
        self.count += 1

    def snapshot(self) -> Histogram:
        cumulative, running = [], 0
        for n in self.buckets[:-1]:
            running += n
            cumulative.append(running)
        return Histogram(bounds=list(self.bounds), counts=cumulative, sum=self.total, count=self.count)


@dataclass
class _ModelCounters:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    worker_starts: int = 0
    worker_crashes: int = 0
    worker_restarts: int = 0
    restart_pending: bool = False
    ttft: _Histogram = field(default_factory=lambda: _Histogram(TTFT_BOUNDS))
    decode: _Histogram = field(default_factory=lambda: _Histogram(DECODE_BOUNDS))


class MetricsRecorder:
    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, str]] = Counter()
        self.models: dict[str, _ModelCounters] = {}
        self.recent: deque[RecentRequest] = deque(maxlen=20)

    def _model(self, name: str) -> _ModelCounters:
        return self.models.setdefault(name, _ModelCounters())

    def request(self, model: str | None, method: str, outcome: str) -> None:
        self.requests[(model or UNRESOLVED, method, outcome)] += 1

    def tokens(self, model: str, prompt: int, completion: int, cached: int) -> None:
        m = self._model(model)
        m.prompt_tokens += prompt
        m.completion_tokens += completion
        m.cached_tokens += cached

    def timings(self, model: str, ttft_ms: float | None, decode_tps: float | None) -> None:
        m = self._model(model)
        if ttft_ms is not None:
            m.ttft.observe(ttft_ms / 1000)
        if decode_tps is not None:
            m.decode.observe(decode_tps)

    def worker_started(self, model: str) -> None:
        m = self._model(model)
        m.worker_starts += 1
        if m.restart_pending:
            m.worker_restarts += 1
            m.restart_pending = False

    def worker_crashed(self, model: str) -> None:
        m = self._model(model)
        m.worker_crashes += 1
        m.restart_pending = True

    def finished(self, request: RecentRequest) -> None:
        self.recent.appendleft(request)

    def request_counts(self) -> list[RequestCount]:
        return [RequestCount(model=m, method=k, outcome=o, count=n) for (m, k, o), n in sorted(self.requests.items())]

    def model_stats(self) -> list[ModelStats]:
        return [
            ModelStats(
                model=name,
                prompt_tokens=m.prompt_tokens,
                completion_tokens=m.completion_tokens,
                cached_tokens=m.cached_tokens,
                worker_starts=m.worker_starts,
                worker_crashes=m.worker_crashes,
                worker_restarts=m.worker_restarts,
                ttft_seconds=m.ttft.snapshot(),
                decode_tokens_per_second=m.decode.snapshot(),
            )
            for name, m in sorted(self.models.items())
        ]


@dataclass
class Outcome:
    """Filled in as a request proceeds; recorded when it ends."""

    model: str | None = None
    value: str = "InternalError"


@contextmanager
def record_outcome(metrics: MetricsRecorder, method: str) -> Iterator[Outcome]:
    """Count one request by model, method and outcome: its finish reason, or the
    name of the typed error it ended with."""
    outcome = Outcome()
    try:
        yield outcome
    except ImpetusError as exc:
        outcome.value = exc.name
        raise
    except Exception:
        outcome.value = "InternalError"
        raise
    except BaseException:  # the request's task was cancelled (client gone, shutdown)
        outcome.value = "cancelled"
        raise
    finally:
        metrics.request(outcome.model, method, outcome.value)
