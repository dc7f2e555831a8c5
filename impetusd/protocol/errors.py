"""Every error that can cross the wire, one class each.

A wire error is ``{"code": int, "message": str, "data": {"name": ..., **fields}}``.
Clients branch on ``data.name``. Codes follow ARCHITECTURE.md: JSON-RPC's own
range, −32800 for cancellation, −32000…−32099 for daemon state, and positive
codes grouped by interface (1xxx models, 2xxx generation, 5xxx plugins).
"""

from __future__ import annotations

from typing import Any, ClassVar


class ImpetusError(Exception):
    """Base of all wire errors. Subclasses set ``code``; ``fields`` become ``data``."""

    code: int = -32603  # each class's own; an instance decoded from an unknown name keeps the wire's
    registry: ClassVar[dict[str, type[ImpetusError]]] = {}

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        ImpetusError.registry[cls.__name__] = cls

    @property
    def name(self) -> str:
        return type(self).__name__

    def to_wire(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "data": {"name": self.name, **self.fields}}

    @staticmethod
    def from_wire(err: dict[str, Any]) -> ImpetusError:
        data = dict(err.get("data") or {})
        cls = ImpetusError.registry.get(str(data.pop("name", "")), ImpetusError)
        exc = cls(str(err.get("message", "")), **data)
        if cls is ImpetusError:
            exc.code = int(err.get("code", -32603))
        return exc


# --- JSON-RPC 2.0 ----------------------------------------------------------
class ParseError(ImpetusError):
    code = -32700


class InvalidRequest(ImpetusError):
    code = -32600


class MethodNotFound(ImpetusError):
    code = -32601


class InvalidParams(ImpetusError):
    code = -32602


class InternalError(ImpetusError):
    code = -32603


class RequestCancelled(ImpetusError):
    code = -32800


# --- daemon state (-32000..-32099) -------------------------------------------
class NotReady(ImpetusError):
    code = -32001


class ShuttingDown(ImpetusError):
    code = -32002


class Overloaded(ImpetusError):
    code = -32003


class MessageTooLarge(ImpetusError):
    code = -32004


# --- models (1xxx) -------------------------------------------------------------
class ModelNotFound(ImpetusError):
    code = 1001


class UnsupportedFormat(ImpetusError):
    code = 1002


class InvalidModelFile(ImpetusError):
    code = 1003


class ModelNotLoaded(ImpetusError):
    code = 1004


class NoBackend(ImpetusError):
    code = 1005


class ModelLoadFailed(ImpetusError):
    code = 1006


class PickleRefused(ImpetusError):
    """A PyTorch pickle checkpoint: loading one runs code, so it is never loaded."""

    code = 1007


class ModelFailed(ImpetusError):
    """The model's worker crashed too often: its circuit is open (``data.reason``,
    ``data.retry_after_s``) until the crash window passes or ``models.load`` forces it."""

    code = 1008


class ConversionFailed(ImpetusError):
    """An opt-in conversion (a pickle checkpoint to safetensors) could not run or
    failed (``data.path``, ``data.reason``: ``missing-dependency``, ``refused``,
    ``failed``)."""

    code = 1009


# --- generation (2xxx) ------------------------------------------------------------
class UnsupportedParameter(ImpetusError):
    code = 2001


class WorkerCrashed(ImpetusError):
    code = 2002


class GenerationFailed(ImpetusError):
    code = 2003


class ContextLengthExceeded(ImpetusError):
    code = 2004


class WorkerHung(ImpetusError):
    """The worker produced nothing for ``hung_timeout_s`` on an active request; it was killed."""

    code = 2005


class InsufficientMemory(ImpetusError):
    """Not enough memory. Before a load: the model's estimate does not fit the
    memory budget even with every idle model unloaded (``data.needed_bytes``,
    ``available_bytes``, ``budget_bytes``, ``busy``: loaded models with requests
    in flight), or never can (``never_fits``). During a request: the backend
    could not allocate, also after idle models were unloaded and it retried."""

    code = 2006


class NodeLost(ImpetusError):
    """A compute node the model was split across (llama.cpp RPC) died or stopped
    answering during the request: ``data.node`` (its name, or the names of every
    node in use when which one stalled cannot be told), ``data.what`` (what was seen).
    The model's worker is ended; the next request loads it again without the node
    when memory allows (docs/design.md, Toward many hosts)."""

    code = 2007


# --- model store (3xxx) -----------------------------------------------------------
class RepoNotFound(ImpetusError):
    code = 3001


class RevisionNotFound(ImpetusError):
    code = 3002


class GatedRepo(ImpetusError):
    code = 3003


class Unauthorized(ImpetusError):
    code = 3004


class DiskFull(ImpetusError):
    code = 3005


class ChecksumMismatch(ImpetusError):
    code = 3006


class DownloadFailed(ImpetusError):
    code = 3007


class ModelExists(ImpetusError):
    code = 3008


class ModelInUse(ImpetusError):
    code = 3009


class NoMatchingFiles(ImpetusError):
    code = 3010


# --- plugins (5xxx) ---------------------------------------------------------------
class PluginError(ImpetusError):
    code = 5001
