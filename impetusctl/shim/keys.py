"""The API key on the routes of the other APIs, through the shim's one key check.

``security.ApiKeyMiddleware`` guards ``/v1`` and ``/metrics``. This puts the
Ollama routes (``/`` and ``/api/*``) and ``/tokenize``/``/detokenize`` behind the same
check, and accepts Anthropic's ``x-api-key`` header as the key (clients of
``/v1/messages`` send that instead of ``Authorization: Bearer``).
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from .security import ApiKeyMiddleware

EXTRA_PREFIXES = ("/api/", "/tokenize", "/detokenize")
_ORIGINAL = "impetus.unguarded_scope"


class KeyedPaths:
    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.guard = ApiKeyMiddleware(self._through, api_key)

    async def _through(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope[_ORIGINAL], receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if b"authorization" not in headers and b"x-api-key" in headers:
            scope = dict(scope, headers=[*scope["headers"], (b"authorization", b"Bearer " + headers[b"x-api-key"])])
        if scope["path"] == "/" or scope["path"].startswith(EXTRA_PREFIXES):
            # The guard checks a path it protects; the app gets the request as it came.
            await self.guard(dict(scope, path="/v1" + scope["path"], **{_ORIGINAL: scope}), receive, send)
            return
        await self.app(scope, receive, send)
