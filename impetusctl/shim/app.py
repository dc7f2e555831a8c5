"""The Starlette application, composed: each API surface's routes on one daemon
client, and the middleware in front of them (Host names, the browser's root,
CORS when asked for, cross-site checks, the API key, request counting).

Each surface answers its own failures (``http.answering``); nothing else here."""

from __future__ import annotations

import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ..aclient import AsyncDaemon
from . import service
from .anthropic import routes as anthropic
from .dashboard import routes as dashboard
from .keys import KeyedPaths
from .metrics import CountRequests, HttpMetrics
from .ollama import routes as ollama
from .openai import routes as openai
from .responses import routes as responses
from .security import ApiKeyMiddleware, CrossSiteMiddleware


class Settings(msgspec.Struct, frozen=True):
    socket: str
    api_key: str | None = None
    allowed_hosts: list[str] = []
    allow_origins: list[str] = []


def create_app(settings: Settings) -> Starlette:
    daemon = AsyncDaemon(settings.socket)
    http = HttpMetrics()
    routes = [
        *openai.routes(daemon),
        *service.routes(daemon, http),
        *anthropic.routes(daemon),
        *responses.routes(daemon),
        *ollama.routes(daemon),
        *dashboard.routes(daemon),
    ]
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts or ["*"]), Middleware(dashboard.BrowserRoot)]
    if settings.allow_origins:
        middleware.append(
            Middleware(CORSMiddleware, allow_origins=settings.allow_origins, allow_methods=["GET", "POST"], allow_headers=["authorization", "content-type"])
        )
    middleware.append(Middleware(CrossSiteMiddleware, allow_origins=settings.allow_origins))
    if settings.api_key:
        middleware.append(Middleware(KeyedPaths, api_key=settings.api_key))
        middleware.append(Middleware(ApiKeyMiddleware, api_key=settings.api_key))
    middleware.append(Middleware(CountRequests, http=http))
    return Starlette(routes=routes, middleware=middleware)
