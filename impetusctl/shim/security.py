"""Who may talk to the shim: loopback by default, an API key when exposed,
Host-header checks against DNS rebinding, CORS only when asked for."""

from __future__ import annotations

import hmac
import ipaddress
import socket

import msgspec
from starlette.types import ASGIApp, Receive, Scope, Send

from .openai.wire import OpenAIError

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
PROTECTED_PREFIXES = ("/v1", "/metrics")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def allowed_hosts(bind_host: str, extra: tuple[str, ...]) -> list[str]:
    """Host-header names a browser page may legitimately use to reach us.

    A page on another origin that rebinds its DNS name to 127.0.0.1 still sends
    its own name in Host, so it is refused.
    """
    hosts = list(LOOPBACK_HOSTS)
    if not is_loopback(bind_host):
        wildcard = bind_host in ("0.0.0.0", "::", "")
        if not wildcard:
            hosts.append(f"[{bind_host}]" if ":" in bind_host else bind_host)
        hosts.append(socket.gethostname().lower())
    hosts.extend(h.lower() for h in extra)
    return hosts


async def _refuse(send: Send, err: OpenAIError, *extra: tuple[bytes, bytes]) -> None:
    body = msgspec.json.encode(err.body())
    await send(
        {
            "type": "http.response.start",
            "status": err.status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra],
        }
    )
    await send({"type": "http.response.body", "body": body})


class CrossSiteMiddleware:
    """Every state-changing request (any method but GET/HEAD/OPTIONS), on every
    route, must not come from another site and must carry a JSON body.

    A browser adds ``Origin`` to a cross-site POST, and a page can send a
    "simple" request (``text/plain``, a form, no preflight) to any address, so
    without this any web page could run generations here. Refused: an
    ``Origin`` that is neither an ``--allow-origin`` one nor the shim's own
    (403), and a ``Content-Type`` other than ``application/json`` (415).
    """

    def __init__(self, app: ASGIApp, allow_origins: list[str]) -> None:
        self.app = app
        self.allowed = {o.rstrip("/").lower() for o in allow_origins}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        origin = headers.get(b"origin")
        if origin is not None and not self._allowed(origin.decode("latin-1"), headers.get(b"host", b"").decode("latin-1")):
            why = f"cross-origin request from {origin.decode('latin-1')!r} refused: start the shim with --allow-origin to permit it"
            await _refuse(send, OpenAIError(403, why, code="cross_origin_request", type="invalid_request_error"))
            return
        media = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if media != b"application/json":
            shown = media.decode("latin-1") or "none"
            why = f"request bodies must be JSON: send 'Content-Type: application/json' (got {shown})"
            await _refuse(send, OpenAIError(415, why, code="unsupported_media_type", type="invalid_request_error"))
            return
        await self.app(scope, receive, send)

    def _allowed(self, origin: str, host: str) -> bool:
        origin = origin.rstrip("/").lower()
        if "*" in self.allowed or origin in self.allowed:
            return True
        # the shim's own origin (what the Host header names; TrustedHost vetted it)
        return bool(host) and origin in (f"http://{host.lower()}", f"https://{host.lower()}")


class ApiKeyMiddleware:
    """With a key configured, every ``/v1`` route and ``/metrics`` need
    ``Authorization: Bearer KEY`` (the scheme in any case, as RFC 9110 has it);
    ``/health`` stays open for probes."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.expected = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or not scope["path"].startswith(PROTECTED_PREFIXES):
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = given.strip().partition(b" ")
        if hmac.compare_digest(token.strip(), self.expected) and scheme.lower() == b"bearer":
            await self.app(scope, receive, send)
            return
        why = "missing API key: send 'Authorization: Bearer KEY'" if not given else "incorrect API key"
        await _refuse(send, OpenAIError(401, why, code="invalid_api_key", type="invalid_request_error"), (b"www-authenticate", b"Bearer"))
