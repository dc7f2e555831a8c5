"""One JSON-RPC peer for both directions, without I/O (sans-IO).

``Peer`` keeps a connection's state: the ids of outgoing calls and their pending
answers, the incoming requests still running (so ``$/cancel`` can stop one),
and how each incoming message is routed. It turns messages into bytes and bytes
into routing; its owner reads and writes (an anyio stream, a pipe, a blocking
socket), so the same class serves the daemon's connections, its worker handles,
the worker process and both clients.

Routing of one received line:

- a response settles the pending call with that id;
- a notification whose method is in ``routes`` is decoded once into its Struct
  (which carries the id of the request it belongs to) and handed to that
  pending call's ``on_note``;
- ``$/cancel {id}`` cancels the incoming request with that id (sent as a
  request, with an id of its own, it also goes to ``dispatcher``, which answers it);
- other notifications go to ``on_notification``; requests, batches and lines
  that do not decode (as the error to answer with) go to ``dispatcher``.

Handlers may return an awaitable; ``receive`` returns it for an async owner to
await (a blocking owner passes plain functions).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import msgspec
from msgspec import UNSET, UnsetType

from impetusd.protocol.api import CancelParams
from impetusd.protocol.errors import ImpetusError, InvalidParams, InvalidRequest
from impetusd.protocol.messages import CANCEL, Codec, Message, Request, RequestId

Incoming = Message | Request | ImpetusError | list[Request | ImpetusError]
"""What a dispatcher receives: one request, a batch, or the error to answer with."""


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Pending:
    """One outgoing call waiting for its answer."""

    __slots__ = ("id", "on_note", "wake", "result", "error", "done")

    def __init__(self, rid: RequestId, on_note: Callable[[Any], Any] | None, wake: Callable[[], object] | None) -> None:
        self.id = rid
        self.on_note = on_note  # gets the routed notifications of this call
        self.wake = wake  # called once the call is settled (an Event's ``set``)
        self.result: msgspec.Raw | None = None
        self.error: ImpetusError | None = None
        self.done = False

    def settle(self, result: msgspec.Raw | None, error: ImpetusError | None) -> None:
        if self.done:
            return
        self.result, self.error, self.done = result, error, True
        if self.wake is not None:
            self.wake()

    def outcome(self) -> msgspec.Raw:
        """The raw result, or raise the typed error the other side answered with."""
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class Peer:
    """A JSON-RPC 2.0 endpoint's bookkeeping and encoding (python-lsp-jsonrpc's
    ``Endpoint(dispatcher, consumer, id_generator)``, minus the I/O)."""

    def __init__(
        self,
        dispatcher: Callable[[Incoming], Any] | None = None,
        *,
        on_notification: Callable[[Message], Any] | None = None,
        routes: Mapping[str, type[Any]] | None = None,
        codec: Codec | None = None,
        ids: Callable[[], RequestId] | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.on_notification = on_notification
        self.codec = codec or Codec()
        self.next_id: Callable[[], RequestId] = ids or itertools.count(1).__next__
        self.pending: dict[RequestId, Pending] = {}
        self.incoming: dict[object, Cancellable] = {}
        self._routes = {method: msgspec.json.Decoder(kind) for method, kind in (routes or {}).items()}
        self._message = msgspec.json.Decoder(Message)
        self._cancel = msgspec.json.Decoder(CancelParams)

    # --- outgoing -------------------------------------------------------------
    def request(
        self,
        method: str,
        params: Any,
        *,
        on_note: Callable[[Any], Any] | None = None,
        wake: Callable[[], object] | None = None,
        rid: RequestId | None = None,
    ) -> tuple[Pending, bytes]:
        """Register a call and return it with the bytes to send."""
        rid = self.next_id() if rid is None else rid
        pending = self.pending[rid] = Pending(rid, on_note, wake)
        return pending, self.codec.encode_request(rid, method, params)

    def forget(self, pending: Pending) -> None:
        """The caller stopped waiting (answered, cancelled or failed)."""
        if self.pending.get(pending.id) is pending:
            del self.pending[pending.id]

    def notification(self, method: str, params: Any) -> bytes:
        return self.codec.encode_notification(method, params)

    def cancellation(self, rid: RequestId) -> bytes:
        """``$/cancel {id}`` for an outgoing call."""
        return self.codec.encode_notification(CANCEL, {"id": rid})

    def fail_all(self, error: Callable[[], ImpetusError]) -> None:
        """The other side is gone: every pending call ends with an ``error()`` of its own."""
        for pending in list(self.pending.values()):
            pending.settle(None, error())

    # --- answers to incoming requests -----------------------------------------
    def response(self, rid: RequestId, result: Any) -> bytes:
        return self.codec.encode_result(rid, result)

    def error_response(self, rid: RequestId, error: ImpetusError) -> bytes:
        return self.codec.encode_error(rid, error)

    # --- incoming requests in flight --------------------------------------------
    def track(self, rid: RequestId | UnsetType, job: Cancellable) -> object:
        """Keep ``job`` until ``untrack``; returns its key. Notifications, null ids
        and duplicate ids get a key of their own (they cannot be cancelled by id;
        the daemon's connections refuse duplicates first, see ``in_flight``)."""
        key: object = object() if rid is UNSET or rid is None or rid in self.incoming else rid
        self.incoming[key] = job
        return key

    def in_flight(self, rid: RequestId | UnsetType) -> bool:
        """An incoming request with this id is still running."""
        return rid is not UNSET and rid is not None and rid in self.incoming

    def untrack(self, key: object) -> None:
        self.incoming.pop(key, None)

    def cancel_incoming(self, params: msgspec.Raw) -> bool | ImpetusError:
        """Act on ``$/cancel``: whether a request with that id was running, or the
        error for bad params (ignored when it came as a notification)."""
        try:
            target = self._cancel.decode(bytes(params)).id
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            return InvalidParams(f"$/cancel: {exc}", field="id")
        job = self.incoming.get(target) if target is not None else None
        if job is None:
            return False
        job.cancel()
        return True

    def cancel_all_incoming(self) -> None:
        for job in list(self.incoming.values()):
            job.cancel()

    # --- routing ----------------------------------------------------------------
    def receive(self, line: bytes) -> Any:
        """Route one line; returns what the handler returned (maybe an awaitable)."""
        try:
            msg = self._message.decode(line)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            return self._dispatch(self.codec.decode(line))  # a batch, or the error, worded by the codec
        method = msg.method
        if method is None:
            pending = self.pending.get(msg.reply_id) if msg.is_response else None
            if pending is None:  # not a request, nor the answer to one of ours
                return self._dispatch(self.codec.decode(line))
            error = ImpetusError.from_wire(msg.error) if msg.error is not None else None
            pending.settle(msg.raw_result if error is None else None, error)
            return None
        if method == CANCEL:
            if msg.id is UNSET:
                self.cancel_incoming(msg.params)
                return None
            return self._dispatch(msg)  # a request: the owner acts on it and answers
        if msg.id is not UNSET:
            return self._dispatch(msg)
        route = self._routes.get(method)
        if route is not None:
            return self._route(route, msg)
        if self.on_notification is not None:
            return self.on_notification(msg)
        return self._dispatch(msg)

    def _route(self, decoder: msgspec.json.Decoder[Any], msg: Message) -> Any:
        try:
            note = decoder.decode(msg.params)
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError) as exc:
            return self._dispatch(InvalidRequest(f"Invalid {msg.method} notification: {exc}"))
        pending = self.pending.get(note.id)
        if pending is not None and pending.on_note is not None:
            return pending.on_note(note)
        return None

    def _dispatch(self, item: Incoming) -> Any:
        if self.dispatcher is None:
            return None
        return self.dispatcher(item)
