"""OpenAI's error object and the HTTP status for each typed daemon error."""

from __future__ import annotations

import re
from typing import Any

from impetusd.protocol.errors import ImpetusError

from ..client import DaemonUnavailable

# Daemon error name -> HTTP status. Anything unlisted is the server's fault (500).
_STATUS = {
    "ParseError": 400,
    "InvalidRequest": 400,
    "InvalidParams": 400,
    "UnsupportedParameter": 400,
    "ContextLengthExceeded": 400,
    "UnsupportedFormat": 400,
    "InvalidModelFile": 400,
    "NoBackend": 400,
    "MessageTooLarge": 413,
    "ModelNotFound": 404,
    "ModelNotLoaded": 404,
    "Overloaded": 429,
    "NotReady": 503,
    "ShuttingDown": 503,
    "InsufficientMemory": 503,
    "ModelFailed": 503,
}

_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable",
}


class OpenAIError(Exception):
    """An error answered in OpenAI's shape: ``{"error": {message, type, param, code}}``."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None, type: str | None = None) -> None:  # noqa: A002
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or _TYPE.get(status, "server_error")

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequest(OpenAIError):
    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(400, message, param=param, code=code or "invalid_request")


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def from_daemon(exc: ImpetusError, renamed: dict[str, str] | None = None) -> OpenAIError:
    """``renamed``: the daemon's field names as this API spells them (``format`` → ``response_format``)."""
    status = _STATUS.get(exc.name, 500)
    param = exc.fields.get("param") or exc.fields.get("field") or ("model" if status == 404 else None)
    if param and renamed:
        for ours, theirs in renamed.items():
            if param == ours or param.startswith((ours + ".", ours + "[")):
                param = theirs + param[len(ours) :]
    return OpenAIError(status, f"{exc.message} [{exc.name}]", param=param, code=_snake(exc.name))


def unavailable(exc: DaemonUnavailable) -> OpenAIError:
    return OpenAIError(503, f"the Impetus daemon is not reachable: {exc}", code="daemon_unavailable")
