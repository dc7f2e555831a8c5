"""The browser dashboard's routes: static files shipped in the package, and the few JSON
routes its page calls (a state snapshot, the daemon's events relayed as SSE,
load/unload/remove/pull).

Where it lives: ``/dashboard`` (open: a page with no data in it). ``GET /``
keeps answering Ollama's "Ollama is running" except to a browser (``Accept``
naming ``text/html``), which is redirected to ``/dashboard``. The data routes
are under ``/v1/dashboard/``, so the shim's API key, Host and cross-site checks
cover them as they cover every ``/v1`` route; every change is a JSON ``POST``.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from impetusd.protocol.api import DaemonInfo, Health, LoadedList, ModelList

from ...aclient import AsyncDaemon
from ..http import EventStream, Handler, json_response, read_body
from ..openai.routes import route
from .relay import relay
from .wire import ModelParams, State

FILES = {"": ("index.html", "text/html; charset=utf-8"), "app.js": ("app.js", "text/javascript; charset=utf-8"), "style.css": ("style.css", "text/css")}
TOPICS = ["model", "request", "hardware", "thermal", "memory"]
# The page is ours alone: nothing from elsewhere, no inline script, never framed.
CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


class BrowserRoot:
    """``GET /`` from a browser goes to the dashboard; anyone else (Ollama's
    clients, probes, curl) still gets Ollama's answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/" and scope["method"] == "GET" and b"text/html" in dict(scope["headers"]).get(b"accept", b""):
            await RedirectResponse("/dashboard", status_code=307)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _static(name: str, media: str) -> Handler:
    async def serve(request: Request) -> Response:
        body = resources.files("impetusctl.shim").joinpath("static", name).read_bytes()
        return Response(body, media_type=media, headers={"cache-control": "no-cache", "content-security-policy": CSP, "x-content-type-options": "nosniff"})

    return serve


def routes(daemon: AsyncDaemon) -> list[Route]:
    async def state(request: Request) -> Response:
        info = await daemon.call("daemon.info", type=DaemonInfo)
        return json_response(
            State(
                version=info.version,
                started_at=info.started_at,
                health=await daemon.call("daemon.health", type=Health),
                models=await daemon.call("models.list", type=ModelList),
                loaded=await daemon.call("models.loaded", type=LoadedList),
            )
        )

    async def events(request: Request) -> Response:
        return EventStream(relay(daemon.path, "events.subscribe", {"topics": TOPICS, "interval_s": 2.0}, "events.event"))

    def action(method: str, with_backend: bool = False) -> Handler:
        async def run(request: Request) -> Response:
            body = await read_body(request, ModelParams)
            params: dict[str, Any] = {"model": body.model}
            if with_backend and body.backend:
                params["backend"] = body.backend
            return json_response(await daemon.call(method, params))

        return run

    async def pull(request: Request) -> Response:
        body = await read_body(request, ModelParams)
        return EventStream(relay(daemon.path, "models.pull", {"model": body.model}, "models.progress"))

    return [
        *(Route(f"/dashboard/{key}" if key else "/dashboard", route(_static(*spec)), methods=["GET"]) for key, spec in FILES.items()),
        Route("/v1/dashboard/state", route(state), methods=["GET"]),
        Route("/v1/dashboard/events", route(events), methods=["GET"]),
        Route("/v1/dashboard/load", route(action("models.load", with_backend=True)), methods=["POST"]),
        Route("/v1/dashboard/unload", route(action("models.unload")), methods=["POST"]),
        Route("/v1/dashboard/remove", route(action("models.remove")), methods=["POST"]),
        Route("/v1/dashboard/pull", route(pull), methods=["POST"]),
    ]
