"""``/metrics``: the daemon's counters (``daemon.metrics``) and the shim's own
HTTP counters in Prometheus text format, rendered by prometheus_client; and the
middleware that counts the requests answered."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Receive, Scope, Send

from impetusd.protocol.api import Histogram, Metrics

# The route templates requests are counted by; anything else is "other".
ROUTES = (
    "/v1/models",
    "/v1/models/{model}",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/responses",
    "/tokenize",
    "/detokenize",
    "/health",
    "/metrics",
    "/",
    "/dashboard",
    *(f"/api/{name}" for name in ("version", "tags", "ps", "show", "pull", "delete", "copy", "chat", "generate", "embed", "embeddings")),
)


class HttpMetrics:
    """Requests the shim answered, by route template and status."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "impetus_http_requests",
            "HTTP requests answered by the OpenAI-compatible shim.",
            ["route", "method", "status"],
            registry=self.registry,
        )


class CountRequests:
    """Counts answered requests by route template and status (bounded labels)."""

    def __init__(self, app: ASGIApp, http: HttpMetrics) -> None:
        self.app = app
        self.http = http

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        route = path if path in ROUTES else ("/v1/models/{model}" if path.startswith("/v1/models/") else "other")
        status = [0]

        async def record(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            self.http.requests.labels(route, scope["method"], str(status[0] or 499)).inc()


def _buckets(h: Histogram) -> list[tuple[str, float]]:
    return [*((repr(b), float(c)) for b, c in zip(h.bounds, h.counts, strict=True)), ("+Inf", float(h.count))]


class DaemonCollector(Collector):
    """One scrape's snapshot of the daemon (``None`` when it did not answer)."""

    def __init__(self, snapshot: Metrics | None) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("impetus_up", "1 if the daemon answered this scrape.")
        up.add_metric([], 1.0 if self.snapshot else 0.0)
        yield up
        m = self.snapshot
        if m is None:
            return
        for name, doc, value in (
            ("impetus_uptime_seconds", "Seconds since the daemon started.", m.uptime_s),
            ("impetus_connections", "Open client connections.", m.connections),
            ("impetus_in_flight_requests", "Generation and embedding requests running now.", m.in_flight),
        ):
            gauge = GaugeMetricFamily(name, doc)
            gauge.add_metric([], float(value))
            yield gauge

        requests = CounterMetricFamily(
            "impetus_requests", "Requests by model, method and outcome (finish reason or error name).", labels=["model", "method", "outcome"]
        )
        for r in m.requests:
            requests.add_metric([r.model, r.method, r.outcome], float(r.count))
        yield requests

        counters = {
            "impetus_prompt_tokens": ("Prompt tokens processed.", lambda s: s.prompt_tokens),
            "impetus_completion_tokens": ("Tokens generated.", lambda s: s.completion_tokens),
            "impetus_cached_prompt_tokens": ("Prompt tokens served from a prompt cache.", lambda s: s.cached_tokens),
            "impetus_worker_starts": ("Worker processes started.", lambda s: s.worker_starts),
            "impetus_worker_crashes": ("Workers that died without being asked to.", lambda s: s.worker_crashes),
            "impetus_worker_restarts": ("Workers started again after a crash.", lambda s: s.worker_restarts),
        }
        for name, (doc, get) in counters.items():
            family = CounterMetricFamily(name, doc, labels=["model"])
            for s in m.models:
                family.add_metric([s.model], float(get(s)))
            yield family

        ttft = HistogramMetricFamily("impetus_time_to_first_token_seconds", "Time from request to first token.", labels=["model"])
        decode = HistogramMetricFamily("impetus_decode_tokens_per_second", "Decode rate per request.", labels=["model"])
        for s in m.models:
            ttft.add_metric([s.model], _buckets(s.ttft_seconds), s.ttft_seconds.sum)
            decode.add_metric([s.model], _buckets(s.decode_tokens_per_second), s.decode_tokens_per_second.sum)
        yield ttft
        yield decode

        loaded = GaugeMetricFamily("impetus_model_loaded", "1 for each model loaded now.", labels=["model", "backend"])
        memory = GaugeMetricFamily("impetus_model_memory_bytes", "Resident memory of each loaded model's worker.", labels=["model", "backend"])
        for lm in m.loaded:
            loaded.add_metric([lm.name, lm.backend], 1.0)
            if lm.rss_bytes is not None:
                memory.add_metric([lm.name, lm.backend], float(lm.rss_bytes))
        yield loaded
        yield memory


class _Proxy(Collector):
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()


def render(snapshot: Metrics | None, http: HttpMetrics) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(snapshot))
    registry.register(_Proxy(http.registry))
    return generate_latest(registry)
