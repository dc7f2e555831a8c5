"""The one JSON-RPC peer: two real peers over a real socket pair, and impetusctl's
clients (both built on it) against a real daemon."""

from __future__ import annotations

import itertools
import socket
import time
from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest
from anyio.abc import SocketStream

from helpers import DaemonProcess
from impetusctl.aclient import AsyncDaemon
from impetusctl.client import Client
from impetusd.protocol.api import Chunk
from impetusd.protocol.errors import ImpetusError, ModelNotFound
from impetusd.protocol.framing import LineReader
from impetusd.protocol.messages import Message
from impetusd.protocol.peer import Incoming, Peer


class Note(msgspec.Struct, frozen=True):
    id: int | str
    text: str


class Job:
    def __init__(self) -> None:
        self.cancelled = anyio.Event()

    def cancel(self) -> None:
        self.cancelled.set()


async def _pair() -> tuple[SocketStream, SocketStream]:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return await SocketStream.from_socket(a), await SocketStream.from_socket(b)


class Server:
    """A small server over a real stream: ``count`` streams ``note`` notifications
    naming the call, then answers; ``$/cancel`` stops it early."""

    def __init__(self, stream: SocketStream, tg: anyio.abc.TaskGroup) -> None:
        self.stream = stream
        self.tg = tg
        self.peer = Peer(self.dispatch, on_notification=self.dispatch)
        self.jobs: list[Job] = []

    def dispatch(self, item: Incoming) -> None:
        assert isinstance(item, Message) and not item.is_notification
        job = Job()
        key = self.peer.track(item.id, job)
        self.jobs.append(job)
        self.tg.start_soon(self.run, item, job, key)

    async def run(self, msg: Message, job: Job, key: object) -> None:
        params = msgspec.json.decode(msg.params)
        sent = 0
        for i in range(params["count"]):
            if job.cancelled.is_set():
                break
            await self.stream.send(self.peer.notification("note", Note(id=msg.id, text=f"t{i}")))  # type: ignore[arg-type]
            sent += 1
            await anyio.sleep(params.get("every", 0))
        self.peer.untrack(key)
        if params.get("fail"):
            await self.stream.send(self.peer.error_response(msg.id, ModelNotFound("no such model", model="x")))
        else:
            await self.stream.send(self.peer.response(msg.id, {"sent": sent, "cancelled": job.cancelled.is_set()}))

    async def serve(self) -> None:
        reader = LineReader(self.stream, 1 << 20)
        while (line := await reader.receive_line()) is not None:
            self.peer.receive(line)


async def _client_loop(peer: Peer, stream: SocketStream) -> None:
    reader = LineReader(stream, 1 << 20)
    while (line := await reader.receive_line()) is not None:
        routed = peer.receive(line)
        if routed is not None:
            await routed


def test_two_peers_call_route_notes_and_cancel_over_a_real_socket() -> None:
    async def main() -> dict[str, Any]:
        left, right = await _pair()
        seen: dict[Any, list[str]] = {}
        out: dict[str, Any] = {}
        async with anyio.create_task_group() as tg:
            server = Server(right, tg)
            tg.start_soon(server.serve)
            client = Peer(routes={"note": Note}, ids=iter(["a", 7, 8]).__next__)
            client.dispatcher = lambda item: None
            tg.start_soon(_client_loop, client, left)

            async def call(params: dict[str, Any], cancel_after: int | None = None) -> Any:
                done = anyio.Event()
                texts: list[str] = []

                async def on_note(note: Note) -> None:
                    texts.append(note.text)
                    if cancel_after is not None and len(texts) == cancel_after:
                        await left.send(client.cancellation(note.id))

                pending, data = client.request("work", params, on_note=on_note, wake=done.set)
                await left.send(data)
                await done.wait()
                client.forget(pending)
                seen[pending.id] = texts
                return pending.outcome()

            out["plain"] = await call({"count": 3})
            out["cancelled"] = await call({"count": 1000, "every": 0.005}, cancel_after=2)
            try:
                await call({"count": 1, "fail": True})
            except ImpetusError as exc:
                out["error"] = exc
            out["pending_left"] = dict(client.pending)
            out["incoming_left"] = dict(server.peer.incoming)
            tg.cancel_scope.cancel()
        out["seen"] = seen
        return out

    out = anyio.run(main)
    # The injected ids name the calls, and each call got exactly its own notes.
    assert msgspec.json.decode(out["plain"]) == {"sent": 3, "cancelled": False}
    assert out["seen"]["a"] == ["t0", "t1", "t2"]
    cancelled = msgspec.json.decode(out["cancelled"])
    assert cancelled["cancelled"] is True and 2 <= cancelled["sent"] < 1000
    assert out["seen"][7][:2] == ["t0", "t1"]
    assert isinstance(out["error"], ModelNotFound) and out["error"].fields["model"] == "x"
    assert out["seen"][8] == ["t0"]
    assert out["pending_left"] == {} and out["incoming_left"] == {}


def test_wire_bytes_are_the_codecs() -> None:
    peer = Peer(ids=itertools.count(41).__next__)
    _, data = peer.request("chat", {"model": "m"})
    assert data == b'{"jsonrpc":"2.0","id":41,"method":"chat","params":{"model":"m"}}\n'
    assert peer.cancellation(41) == b'{"jsonrpc":"2.0","method":"$/cancel","params":{"id":41}}\n'
    assert peer.notification("chat.chunk", Note(id=41, text="x")) == b'{"jsonrpc":"2.0","method":"chat.chunk","params":{"id":41,"text":"x"}}\n'


def test_a_peer_that_makes_no_calls_answers_a_stray_response_as_an_invalid_request() -> None:
    got: list[Incoming] = []
    peer = Peer(got.append)
    peer.receive(b'{"jsonrpc":"2.0","id":5,"result":1}')
    [err] = got
    assert isinstance(err, ImpetusError) and err.code == -32600 and err.fields["_id"] == 5


def test_blocking_client_with_injected_ids_streams_and_cancels(shared_daemon: DaemonProcess, slow_echo_model: Path) -> None:
    words = " ".join(f"w{i}" for i in range(50))
    ids = iter(["first", "second", "third"]).__next__
    with Client(shared_daemon.socket, timeout=30, ids=ids) as client:
        assert client.call("daemon.health")["status"] == "ok"  # id "first"
        rid = client.send("chat", {"model": str(slow_echo_model), "messages": [{"role": "user", "content": words}], "stream": True})
        assert rid == "second"
        deltas: list[str] = []

        def on_note(method: str, params: msgspec.Raw) -> None:
            note = msgspec.json.decode(params)
            assert method == "chat.chunk" and note["id"] == "second"
            deltas.append(note["delta"])
            if len(deltas) == 2:
                client.cancel(rid)

        started = time.monotonic()
        result = msgspec.json.decode(client.wait(rid, on_note))
        assert time.monotonic() - started < 5
        assert result["finish_reason"] == "cancelled"
        assert 2 <= result["usage"]["completion_tokens"] < 50
        assert "".join(deltas).split() == words.split()[: len(deltas)]
        assert client.peer.pending == {}
        with pytest.raises(ModelNotFound):
            client.call("models.show", {"model": "no-such-model"})


def test_async_client_streams_chunks_then_the_result(shared_daemon: DaemonProcess, echo_model: Path) -> None:
    async def main() -> tuple[list[str], dict[str, Any], dict[str, Any]]:
        daemon = AsyncDaemon(str(shared_daemon.socket))
        exchange = await daemon.open("chat", {"model": str(echo_model), "messages": [{"role": "user", "content": "one two three"}], "stream": True})
        pieces: list[str] = []
        try:
            while isinstance(item := await exchange.next(), Chunk):
                pieces.append(item.delta)
        finally:
            await exchange.aclose()
        health = await daemon.call("daemon.health")
        return pieces, msgspec.json.decode(item), health

    pieces, result, health = anyio.run(main)
    assert pieces == ["one", " two", " three"]
    assert result["message"]["content"] == "one two three" and result["finish_reason"] == "stop"
    assert health["status"] == "ok"
