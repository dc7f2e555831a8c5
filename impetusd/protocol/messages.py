"""JSON-RPC 2.0 envelopes, decoded envelope-first with ``params`` kept raw."""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from impetusd.protocol.errors import ImpetusError, InvalidRequest, ParseError

RequestId = int | str | None

CANCEL = "$/cancel"  # notification ``{id}``: stop the request with that id
DEFAULT_MAX_BATCH_ITEMS = 1000

_TRAILING = re.compile(r"trailing characters \(byte (\d+)\)")
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")  # a UTF-16 surrogate escape
_WHITESPACE = b" \t\r\n"


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


class _Envelope(msgspec.Struct):
    """Only the ``id`` of a message; every other field is skipped unread."""

    id: Any = None


class Codec:
    """One encoder and one decoder per envelope type, reused for every message.

    ``max_batch_items``: a batch of more top-level items is refused whole with one
    ``InvalidRequest`` (``data.limit``), counted before any item is decoded.
    """

    def __init__(self, max_batch_items: int = DEFAULT_MAX_BATCH_ITEMS) -> None:
        self._request = msgspec.json.Decoder(Request)
        self._envelope = msgspec.json.Decoder(_Envelope)
        self._encoder = msgspec.json.Encoder()
        self.max_batch_items = max_batch_items

    def decode(self, line: bytes) -> list[Request | ImpetusError] | Request | ImpetusError:
        """Decode one line: a request, a batch (list), or the error to answer with.

        An error decoded from a request that carried an ``id`` records it in
        ``fields['_id']`` so the answer can be addressed.
        """
        stripped = line.strip()
        if stripped.startswith(b"["):
            items = self._split_batch(stripped)
            if isinstance(items, ImpetusError):
                return items
            return [self._one(item) for item in items]
        return self._one(stripped)

    def _split_batch(self, data: bytes) -> list[bytes] | ImpetusError:
        """The top-level items of a batch, counted before any is decoded.

        Each item is skipped by msgspec in C (``msgspec.Raw``: nothing inside it is
        allocated), so the work is one pass over the line plus a few microseconds
        per item, and it stops at ``max_batch_items + 1`` items. Decoding the whole
        array as ``list[msgspec.Raw]`` instead costs ~55 bytes per item before any
        count can be checked (440 MB for a 16 MiB line of ``1,``).
        """
        # Lone surrogate escapes stop msgspec even when skipping; find the item
        # boundaries in a copy where each is a harmless escape of the same length.
        scan = _SURROGATE.sub(rb"\\ufffd", data) if b"\\u" in data else data
        view = memoryview(scan)
        limit = self.max_batch_items
        items: list[bytes] = []
        pos = _skip_space(scan, 1)
        if scan[pos : pos + 1] == b"]":
            if _skip_space(scan, pos + 1) != len(scan):
                return ParseError("Parse error: trailing characters after the batch")
            return InvalidRequest("Invalid Request: empty batch")
        while True:
            if len(items) == limit:
                return InvalidRequest(f"Invalid Request: a batch may hold at most {limit} requests (max_batch_items)", limit=limit, setting="max_batch_items")
            try:
                msgspec.json.decode(view[pos:], type=msgspec.Raw)
                return ParseError("Parse error: the batch is not closed")  # the item ran to the end
            except msgspec.DecodeError as exc:
                found = _TRAILING.search(str(exc))
                if found is None:
                    return ParseError(f"Parse error in batch item {len(items) + 1}: {exc}")
                end = pos + int(found[1]) - 1  # msgspec counts the trailing character itself
            except UnicodeDecodeError as exc:
                return ParseError(f"Parse error in batch item {len(items) + 1}: {exc}")
            except RecursionError:
                return ParseError("Parse error: nested too deeply")
            items.append(data[pos:end].strip())
            if scan[end : end + 1] == b",":
                pos = _skip_space(scan, end + 1)
                continue
            if scan[end : end + 1] == b"]" and _skip_space(scan, end + 1) == len(scan):
                return items
            return ParseError(f"Parse error: expected ',' or ']' after batch item {len(items)} (byte {end})")

    def _one(self, data: bytes) -> Request | ImpetusError:
        try:
            return self._request.decode(data)
        except msgspec.ValidationError as exc:
            err = InvalidRequest(f"Invalid Request: {exc}")
            err.fields["_id"] = self._salvage_id(data)
            return err
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:  # msgspec raises the latter for bad UTF-8
            surrogate = _SURROGATE.search(data) if isinstance(exc, msgspec.DecodeError) else None
            if surrogate is not None:
                return self._surrogate_error(data, surrogate)
            return ParseError(f"Parse error: {exc}")
        except RecursionError:  # msgspec's depth guard; not a DecodeError
            return ParseError("Parse error: nested too deeply")

    def _surrogate_error(self, data: bytes, first: re.Match[bytes]) -> ImpetusError:
        """msgspec refuses a lone UTF-16 surrogate escape (``"\\ud800"``) with
        "Input data was truncated". If the line decodes once every surrogate escape
        is replaced, that was the fault: say so, and keep the request's id."""
        cleaned = _SURROGATE.sub(rb"\\ufffd", data)
        try:
            self._envelope.decode(cleaned)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            return ParseError(f"Parse error: {exc}")
        lone = _lone_surrogate(data) or first
        escape = lone[0].decode("ascii")
        err = InvalidRequest(
            f"Invalid Request: a string holds a lone UTF-16 surrogate ({escape} at byte {lone.start()}), which is not "
            "Unicode text; a surrogate escape must be a high one (\\ud800-\\udbff) followed by a low one (\\udc00-\\udfff)",
            position=lone.start(),
        )
        err.fields["_id"] = self._salvage_id(cleaned)
        return err

    def _salvage_id(self, data: bytes) -> RequestId:
        try:
            return _salvage_id(self._envelope.decode(data).id)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            return None

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


def _salvage_id(rid: Any) -> RequestId:
    if isinstance(rid, (int, str)) and not isinstance(rid, bool):
        return rid
    return None


def _skip_space(data: bytes, pos: int) -> int:
    while pos < len(data) and data[pos] in _WHITESPACE:
        pos += 1
    return pos


def _lone_surrogate(data: bytes) -> re.Match[bytes] | None:
    """The first surrogate escape that is not half of a high+low pair."""
    pos = 0
    while (m := _SURROGATE.search(data, pos)) is not None:
        high = m[0][2:3].lower() in b"89ab"
        if not high:
            return m
        follow = _SURROGATE.match(data, m.end())
        if follow is None or follow[0][2:3].lower() in b"89ab":
            return m
        pos = follow.end()
    return None
