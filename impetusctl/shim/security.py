"""Who may talk to the shim: loopback by default, an API key when exposed,
Host-header checks against DNS rebinding, CORS only when asked for."""

from __future__ import annotations

import hmac
import ipaddress
import socket

import msgspec
from starlette.types import ASGIApp, Receive, Scope, Send

from .errors import OpenAIError

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")
PROTECTED_PREFIXES = ("/v1", "/metrics")


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


class ApiKeyMiddleware:
    """With a key configured, every ``/v1`` route and ``/metrics`` need
    ``Authorization: Bearer KEY``; ``/health`` stays open for probes."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or not scope["path"].startswith(PROTECTED_PREFIXES):
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        if hmac.compare_digest(given, self.expected):
            await self.app(scope, receive, send)
            return
        why = "missing API key: send 'Authorization: Bearer KEY'" if not given else "incorrect API key"
        err = OpenAIError(401, why, code="invalid_api_key", type="invalid_request_error")
        body = msgspec.json.encode(err.body())
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"www-authenticate", b"Bearer")],
            }
        )
        await send({"type": "http.response.body", "body": body})
