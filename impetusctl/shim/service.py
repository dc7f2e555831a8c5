"""The shim's own routes, in no other API's shape: ``/health``, ``/metrics``, and
``/tokenize``/``/detokenize`` (the daemon's methods of the same names, their
params and results as they are). Errors in OpenAI's shape."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from impetusd.protocol.api import DetokenizeParams, DetokenizeResult, Health, Metrics, TokenizeParams, TokenizeResult
from impetusd.protocol.errors import ImpetusError

from ..aclient import AsyncDaemon
from ..client import DaemonUnavailable
from .http import json_response, read_body, until_disconnect
from .metrics import HttpMetrics, render
from .openai.routes import route


def routes(daemon: AsyncDaemon, http: HttpMetrics) -> list[Route]:
    async def health(request: Request) -> Response:
        try:
            health = await daemon.call("daemon.health", type=Health)
        except (DaemonUnavailable, ImpetusError) as exc:
            return json_response({"status": "unavailable", "error": str(exc)}, 503)
        # "degraded" (a model failed, others serve) is still up; only a stopping daemon is not.
        return json_response({"status": health.status, "daemon": health}, 503 if health.status == "shutting_down" else 200)

    async def metrics(request: Request) -> Response:
        try:
            snapshot: Metrics | None = await daemon.call("daemon.metrics", type=Metrics)
        except (DaemonUnavailable, ImpetusError):
            snapshot = None
        return Response(render(snapshot, http), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def tokenize(request: Request) -> Response:
        params = await read_body(request, TokenizeParams)
        return json_response(await until_disconnect(request, lambda: daemon.call("tokenize", params, type=TokenizeResult)))

    async def detokenize(request: Request) -> Response:
        params = await read_body(request, DetokenizeParams)
        return json_response(await until_disconnect(request, lambda: daemon.call("detokenize", params, type=DetokenizeResult)))

    return [
        Route("/health", route(health), methods=["GET"]),
        Route("/metrics", route(metrics), methods=["GET"]),
        Route("/tokenize", route(tokenize), methods=["POST"]),
        Route("/detokenize", route(detokenize), methods=["POST"]),
    ]
