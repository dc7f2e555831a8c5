"""JSON-RPC 2.0 envelopes, decoded envelope-first with ``params`` kept raw."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from impetusd.protocol.errors import ImpetusError, InvalidRequest, ParseError

RequestId = int | str | None

CANCEL = "$/cancel"  # notification ``{id}``: stop the request with that id


class Request(msgspec.Struct, frozen=True, omit_defaults=True):
    """A request (with ``id``) or a notification (without)."""

    jsonrpc: Literal["2.0"]
    method: str
    params: msgspec.Raw = msgspec.Raw(b"null")
    id: RequestId | UnsetType = UNSET

    @property
    def is_notification(self) -> bool:
        return self.id is UNSET

    @property
    def reply_id(self) -> RequestId:
        """The id to answer with (a notification has none: None)."""
        return request_id(self.id)


class Message(msgspec.Struct, frozen=True):
    """Any one message a peer receives: a request, a notification or a response.

    A request or notification has ``method``; a response has ``result`` or ``error``.
    """

    jsonrpc: Literal["2.0"]
    method: str | None = None
    params: msgspec.Raw = msgspec.Raw(b"null")
    id: RequestId | UnsetType = UNSET
    result: msgspec.Raw | UnsetType = UNSET
    error: dict[str, Any] | None = None

    @property
    def is_notification(self) -> bool:
        return self.id is UNSET

    @property
    def reply_id(self) -> RequestId:
        """The id to answer with, or of the call this response answers (None when absent)."""
        return request_id(self.id)

    @property
    def raw_result(self) -> msgspec.Raw | None:
        """A response's result, or None when it carries none (an error)."""
        return None if isinstance(self.result, UnsetType) else self.result

    @property
    def is_response(self) -> bool:
        return self.method is None and self.id is not UNSET and (self.result is not UNSET or self.error is not None)


class Codec:
    """One encoder and one decoder per envelope type, reused for every message."""

    def __init__(self) -> None:
        self._request = msgspec.json.Decoder(Request)
        self._batch = msgspec.json.Decoder(list[msgspec.Raw])
        self._any = msgspec.json.Decoder()
        self._encoder = msgspec.json.Encoder()

    def decode(self, line: bytes) -> list[Request | ImpetusError] | Request | ImpetusError:
        """Decode one line: a request, a batch (list), or the error to answer with.

        An error decoded from a request that carried an ``id`` records it in
        ``fields['_id']`` so the answer can be addressed.
        """
        stripped = line.strip()
        if stripped.startswith(b"["):
            try:
                items = self._batch.decode(stripped)
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                return ParseError(f"Parse error: {exc}")
            except RecursionError:
                return ParseError("Parse error: nested too deeply")
            if not items:
                return InvalidRequest("Invalid Request: empty batch")
            return [self._one(bytes(item)) for item in items]
        return self._one(stripped)

    def _one(self, data: bytes) -> Request | ImpetusError:
        try:
            return self._request.decode(data)
        except msgspec.ValidationError as exc:
            err = InvalidRequest(f"Invalid Request: {exc}")
            try:
                err.fields["_id"] = _salvage_id(self._any.decode(data))
            except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
                err.fields["_id"] = None
            return err
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # msgspec raises the latter for bad UTF-8
            return ParseError(f"Parse error: {exc}")
        except RecursionError:  # msgspec's depth guard; not a DecodeError
            return ParseError("Parse error: nested too deeply")

    def encode_result(self, req_id: RequestId, result: Any) -> bytes:
        return self._encoder.encode({"jsonrpc": "2.0", "id": req_id, "result": result}) + b"\n"

    def encode_error(self, req_id: RequestId, err: ImpetusError) -> bytes:
        wire = err.to_wire()
        wire["data"].pop("_id", None)
        return self._encoder.encode({"jsonrpc": "2.0", "id": req_id, "error": wire}) + b"\n"

    def encode_notification(self, method: str, params: Any) -> bytes:
        return self._encoder.encode({"jsonrpc": "2.0", "method": method, "params": params}) + b"\n"

    def encode_request(self, req_id: RequestId, method: str, params: Any) -> bytes:
        return self._encoder.encode({"jsonrpc": "2.0", "id": req_id, "method": method, "params": params}) + b"\n"

    def encode_batch(self, parts: list[bytes]) -> bytes:
        return b"[" + b",".join(p.rstrip(b"\n") for p in parts) + b"]\n"


def request_id(rid: RequestId | UnsetType) -> RequestId:
    """A decoded ``id`` as one to encode: an absent one (UNSET) is None."""
    return None if isinstance(rid, UnsetType) else rid


def _salvage_id(obj: Any) -> RequestId:
    if isinstance(obj, dict):
        rid = obj.get("id")
        if isinstance(rid, (int, str)) and not isinstance(rid, bool):
            return rid
    return None
