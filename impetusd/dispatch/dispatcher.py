"""Method dispatch: decode params per method, run the handler, map errors.

Knows nothing of sockets: a request's connection is anything with a ``Peer``
(the protocol's bookkeeping and encoding) that can ``send`` bytes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import msgspec

from impetusd.dispatch.context import RequestContext
from impetusd.plugin.manager import await_maybe
from impetusd.protocol.errors import (
    ImpetusError,
    InternalError,
    InvalidParams,
    MethodNotFound,
    ShuttingDown,
)
from impetusd.protocol.messages import Message, Request
from impetusd.protocol.validation import field_of

if TYPE_CHECKING:
    from impetusd.dispatch.services import Services
    from impetusd.plugin.registries import MethodSpec
    from impetusd.protocol.peer import Peer

log = logging.getLogger(__name__)


class Dispatcher:
    """Maps a decoded Request to an encoded response (or None for notifications)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._decoders: dict[type, msgspec.json.Decoder[Any]] = {}

    def decoder(self, spec: MethodSpec) -> msgspec.json.Decoder[Any]:
        dec = self._decoders.get(spec.params)
        if dec is None:
            dec = self._decoders[spec.params] = msgspec.json.Decoder(spec.params)
        return dec

    def decode_params(self, spec: MethodSpec, raw: msgspec.Raw) -> Any:
        data = bytes(raw)
        if data in (b"", b"null"):
            data = b"{}"
        try:
            return self.decoder(spec).decode(data)
        except msgspec.ValidationError as exc:
            field = field_of(str(exc))
            fields = {"field": field} if field else {}
            raise InvalidParams(f"Invalid params for {spec.name}: {exc}", **fields) from None
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise InvalidParams(f"Invalid params for {spec.name}: {exc}") from None
        except RecursionError:
            raise InvalidParams(f"Invalid params for {spec.name}: nested too deeply") from None

    async def call(self, ctx: RequestContext, req: Request | Message) -> Any:
        spec = self.services.registries.methods.get(req.method or "")
        if spec is None:
            raise MethodNotFound(f"Method not found: {req.method}", method=req.method)
        params = self.decode_params(spec, req.params)
        return await await_maybe(spec.handler(self.services, params, ctx))

    async def handle(self, peer: Peer, req: Request | Message, ctx: RequestContext) -> bytes | None:
        """Run one request to its encoded answer. Never raises ImpetusError."""
        result: Any = None
        error: ImpetusError | None = None
        with ctx.scope:
            try:
                result = await self.call(ctx, req)
            except ImpetusError as exc:
                error = exc
            except Exception:  # foreign errors stop here; no traceback on the wire
                log.exception("method %s failed", req.method)
                error = InternalError(f"internal error in {req.method}; see the daemon log")
        if ctx.scope.cancelled_caught:
            error = ctx.abort_error or ShuttingDown("the daemon is shutting down")
        if req.is_notification:
            return None
        rid = req.reply_id
        if error is not None:
            return peer.error_response(rid, error)
        try:
            return peer.response(rid, result)
        except (TypeError, msgspec.EncodeError):
            log.exception("cannot encode the result of %s", req.method)
            return peer.error_response(rid, InternalError(f"internal error in {req.method}"))
