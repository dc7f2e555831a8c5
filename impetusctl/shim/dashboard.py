"""The browser dashboard: static files shipped in the package, and the few JSON
routes its page calls (a state snapshot, the daemon's events relayed as SSE,
load/unload/remove/pull).

Where it lives: ``/dashboard`` (open: a page with no data in it). ``GET /``
keeps answering Ollama's "Ollama is running" except to a browser (``Accept``
naming ``text/html``), which is redirected to ``/dashboard``. The data routes
are under ``/v1/dashboard/``, so the shim's API key, Host and cross-site checks
cover them as they cover every ``/v1`` route; every change is a JSON ``POST``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

import anyio
import msgspec
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from impetusd.protocol.api import DaemonInfo, Health, LoadedList, ModelList
from impetusd.protocol.framing import LineReader

from ..aclient import MAX_LINE, AsyncDaemon
from .app import EventStream, json_response, read_json, sse

FILES = {"": ("index.html", "text/html; charset=utf-8"), "app.js": ("app.js", "text/javascript; charset=utf-8"), "style.css": ("style.css", "text/css")}
TOPICS = ["model", "request", "hardware", "thermal", "memory"]
# The page is ours alone: nothing from elsewhere, no inline script, never framed.
CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


class ModelParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    model: str
    backend: str | None = None


class State(msgspec.Struct, frozen=True):
    """Everything the page draws, in one poll."""

    version: str
    started_at: float
    health: Health
    models: ModelList
    loaded: LoadedList


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


def _static(name: str, media: str) -> Any:
    async def serve(request: Request) -> Response:
        body = resources.files("impetusctl.shim").joinpath("static", name).read_bytes()
        return Response(body, media_type=media, headers={"cache-control": "no-cache", "content-security-policy": CSP, "x-content-type-options": "nosniff"})

    return serve


async def _relay(path: str, method: str, params: Any, note: str) -> AsyncIterator[bytes]:
    """One daemon request on its own connection; each ``note`` notification's
    params become an SSE event, then the result (or the error) a last one.
    Leaving (the browser went away) closes the connection, which ends the request."""
    try:
        stream = await anyio.connect_unix(path)
    except OSError:
        yield sse({"error": f"no daemon answers on {path}"})
        return
    try:
        await stream.send(msgspec.json.encode({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}) + b"\n")
        reader = LineReader(stream, MAX_LINE)
        while (line := await reader.receive_line()) is not None:
            msg = msgspec.json.decode(line)
            if msg.get("method") == note:
                yield sse(msg["params"])
            elif "result" in msg or "error" in msg:
                yield sse({"final": True, **msg})
                return
        yield sse({"error": "the daemon closed the connection"})
    finally:
        with anyio.CancelScope(shield=True):
            await stream.aclose()


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
        return EventStream(_relay(daemon.path, "events.subscribe", {"topics": TOPICS, "interval_s": 2.0}, "events.event"))

    def action(method: str, with_backend: bool = False) -> Any:
        async def run(request: Request) -> Response:
            body = await read_json(request, ModelParams)
            params: dict[str, Any] = {"model": body.model}
            if with_backend and body.backend:
                params["backend"] = body.backend
            return json_response(await daemon.call(method, params))

        return run

    async def pull(request: Request) -> Response:
        body = await read_json(request, ModelParams)
        return EventStream(_relay(daemon.path, "models.pull", {"model": body.model}, "models.progress"))

    return [
        *(Route(f"/dashboard/{key}" if key else "/dashboard", _static(*spec), methods=["GET"]) for key, spec in FILES.items()),
        Route("/v1/dashboard/state", state, methods=["GET"]),
        Route("/v1/dashboard/events", events, methods=["GET"]),
        Route("/v1/dashboard/load", action("models.load", with_backend=True), methods=["POST"]),
        Route("/v1/dashboard/unload", action("models.unload"), methods=["POST"]),
        Route("/v1/dashboard/remove", action("models.remove"), methods=["POST"]),
        Route("/v1/dashboard/pull", pull, methods=["POST"]),
    ]
