"""Daemon side of a worker process: spawn, talk, stream, stop, notice death."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import msgspec
from anyio.abc import Process, TaskGroup

from impetusd.plugin.engine import (
    DetokenizeOutput,
    DetokenizeRequest,
    EmbedRequest,
    EngineInfo,
    GenerateRequest,
    ModelSpec,
    RelayDecoder,
    TokenizeOutput,
    TokenizeRequest,
)
from impetusd.protocol.api import TokenLogprob
from impetusd.protocol.errors import ImpetusError, ModelLoadFailed, WorkerCrashed, WorkerHung
from impetusd.protocol.framing import LineReader
from impetusd.protocol.messages import Message, RequestId
from impetusd.protocol.peer import Incoming, Peer
from impetusd.workers.messages import (
    CHUNK,
    DETOKENIZE,
    EMBED,
    FATAL,
    GENERATE,
    RELAY_DONE,
    RELAY_ENV,
    RELAY_FD_ENV,
    SHUTDOWN,
    START,
    TOKENIZE,
    TUNE,
    WARM_UP,
    CacheSettings,
    EmbedDone,
    Fatal,
    GenerateDone,
    GenerateParams,
    RelayDone,
    StartParams,
    TextChunk,
    Tuning,
)
from impetusd.workers.oom import MemoryWatch

log = logging.getLogger(__name__)

WORKER_MAX_LINE = 64 * 1024 * 1024


OnText = Callable[[str, list[TokenLogprob] | None], Awaitable[None]]


def _texts(on_text: OnText) -> Callable[[TextChunk], Awaitable[None]]:
    """A generate call's handler for its routed ``chunk`` notifications."""

    def on_note(chunk: TextChunk) -> Awaitable[None]:
        return on_text(chunk.text, chunk.logprobs)

    return on_note


def describe_exit(code: int | None) -> str:
    if code is None:
        return "unknown"
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


@dataclass
class Spawned:
    """A worker process, and the daemon's end of the socket pair on which it hands over
    streams for the daemon to read (``relay``; docs/design.md, "Relay")."""

    process: Process
    relay: socket.socket | None  # None: the relay is off (``IMPETUS_RELAY`` is not "1")

    def close_relay(self) -> None:
        if self.relay is not None:
            self.relay.close()


async def spawn_worker(env: dict[str, str] | None = None) -> Spawned:
    """A worker process waiting for its ``worker.start`` on stdin."""
    env = {**os.environ, **(env or {})}
    ours = theirs = None
    if os.environ.get(RELAY_ENV) == "1":
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        ours.setblocking(False)
        env[RELAY_FD_ENV] = str(theirs.fileno())
    try:
        process = await anyio.open_process(
            [sys.executable, "-m", "impetusd.workers"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # the worker logs to the daemon's stderr
            env=env,
            pass_fds=() if theirs is None else (theirs.fileno(),),
        )
    except BaseException:
        if ours is not None:
            ours.close()
        raise
    finally:
        if theirs is not None:
            theirs.close()  # the worker has its own copy now
    return Spawned(process, ours)


class _Relayed:
    """A generate call waiting for, then reading, the stream its worker hands over."""

    __slots__ = ("arrived", "sock", "stream", "cut")

    def __init__(self) -> None:
        self.arrived = anyio.Event()
        self.sock: socket.socket | None = None
        self.stream: asyncio.StreamWriter | None = None  # the transport reading ``sock``, which it owns
        self.cut = False  # the daemon ended the stream (cancel, or the call itself ended)


class WorkerHandle:
    """One worker process hosting one backend and one model."""

    def __init__(self, spec: ModelSpec, backend: str, spawned: Spawned, relay_decoder: Callable[[GenerateRequest], RelayDecoder] | None = None) -> None:
        self.spec = spec
        self.backend = backend
        self.process = process = spawned.process
        self.pid = process.pid
        self.spawned = spawned
        self.relay_sock = spawned.relay
        self.relay_decoder = relay_decoder if spawned.relay is not None else None
        self._relayed: dict[RequestId, _Relayed] = {}
        self._relay_scope = anyio.CancelScope()
        self.peer = Peer(self._on_message, on_notification=self._on_notification, routes={CHUNK: TextChunk})
        self._send_lock = anyio.Lock()
        self._done_decoder = msgspec.json.Decoder(GenerateDone)
        self.exited = anyio.Event()
        self.exit_reason: str | None = None
        self.info: EngineInfo | None = None
        self.on_exit: Callable[[WorkerHandle], None] | None = None
        self.memory = MemoryWatch(process.pid)  # for telling an OOM kill from a crash
        self.hung = False  # killed by the watchdog
        self.fatal: str | None = None  # the worker's own word on why it exits (worker.fatal)
        self.last_output = time.monotonic()  # any line from the worker, or the start of a busy spell
        self.tuning = Tuning()  # what the worker was last told (thermal backoff)
        self.warm_up_pending = False  # its warm-up was postponed while the machine was hot

    @classmethod
    async def start(
        cls,
        tg: TaskGroup,
        spec: ModelSpec,
        backend: str,
        *,
        plugins: list[str],
        disabled_plugins: list[str],
        timeout: float,
        hung_timeout: float | None = None,
        env: dict[str, str] | None = None,
        tuning: Tuning | None = None,
        warm_up: bool = True,
        process: Spawned | None = None,
        cache: CacheSettings | None = None,
        relay_decoder: Callable[[GenerateRequest], RelayDecoder] | None = None,
    ) -> WorkerHandle:
        """Start a worker (or use ``process``, a spare one already waiting) and load ``spec``.
        ``relay_decoder``: the backend's (``BackendSpec.relay_decoder``), for streams its
        engine hands over."""
        if process is None:
            process = await spawn_worker(env)
        handle = cls(spec, backend, process, relay_decoder)
        handle.tuning = tuning or Tuning()
        handle.warm_up_pending = not warm_up
        tg.start_soon(handle._read_loop)
        if handle.relay_sock is not None:
            tg.start_soon(handle._relay_loop)
        start = StartParams(spec=spec, backend=backend, plugins=plugins, disabled_plugins=disabled_plugins, tuning=tuning, warm_up=warm_up, cache=cache)
        try:
            with anyio.fail_after(timeout):
                raw = await handle._call(START, start)
        except TimeoutError:
            await handle.stop()
            raise ModelLoadFailed(f"{spec.name}: the worker did not load the model within {timeout:.0f} s", model=spec.name) from None
        except WorkerCrashed as exc:
            cause = exc.fields.get("cause")
            raise ModelLoadFailed(f"{spec.name}: the worker died while loading ({cause})", model=spec.name, cause=cause) from None
        except ImpetusError:
            await handle.stop()
            raise
        except anyio.get_cancelled_exc_class():
            # The load's caller went away (its client disconnected, or shutdown): a
            # worker left loading would live on untracked, and shutdown would wait for it.
            with anyio.CancelScope(shield=True):
                await handle.stop(grace=1.0)
            raise
        handle.info = msgspec.json.decode(bytes(raw), type=EngineInfo)
        if hung_timeout:
            tg.start_soon(handle._watchdog, hung_timeout)
        return handle

    @property
    def alive(self) -> bool:
        return not self.exited.is_set()

    async def _send(self, data: bytes) -> None:
        assert self.process.stdin is not None
        async with self._send_lock:
            await self.process.stdin.send(data)

    async def _call(self, method: str, params: Any, on_text: OnText | None = None, rid: RequestId | None = None) -> msgspec.Raw:
        if not self.peer.pending:
            self.last_output = time.monotonic()  # a busy spell starts now
        done = anyio.Event()
        on_note = None if on_text is None else _texts(on_text)
        pending, data = self.peer.request(method, params, on_note=on_note, wake=done.set, rid=rid)
        try:
            if not self.alive:
                raise WorkerCrashed(f"worker for {self.spec.name} is not running ({self.exit_reason})", model=self.spec.name, cause=self.exit_reason)
            try:
                await self._send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                await self.exited.wait()
            await done.wait()
        finally:
            self.peer.forget(pending)
        return pending.outcome()

    async def generate(
        self,
        request: GenerateRequest,
        on_text: OnText,
        cancel_requested: anyio.Event,
    ) -> GenerateDone:
        """Run one generation; setting ``cancel_requested`` makes the worker stop
        at the next token and answer with finish reason ``cancelled``."""
        rid = self.peer.next_id()
        relayed = None
        if self.relay_decoder is not None:
            relayed = self._relayed[rid] = _Relayed()
        try:
            async with anyio.create_task_group() as tg:

                async def forward_cancel() -> None:
                    await cancel_requested.wait()
                    if relayed is not None:
                        relayed.cut = True
                        if relayed.sock is not None:
                            _shut(relayed.sock)  # the relayed stream ends now; llama-server's slot too
                    try:
                        await self._send(self.peer.cancellation(rid))
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                        pass

                tg.start_soon(forward_cancel)
                if relayed is not None:
                    tg.start_soon(self._relay, rid, relayed, request, on_text)
                failure: ImpetusError | None = None
                try:
                    raw = await self._call(GENERATE, GenerateParams(request=request), on_text, rid=rid)
                except ImpetusError as exc:  # raised outside the group, not wrapped in one
                    failure = exc
                finally:
                    tg.cancel_scope.cancel()
        finally:
            if relayed is not None:
                del self._relayed[rid]
                if relayed.sock is not None and relayed.stream is None:  # never read: closed here
                    relayed.sock.close()
        if failure is not None:
            raise failure
        return self._done_decoder.decode(bytes(raw))

    # -- the relay (docs/design.md, "Relay") ----------------------------------------------

    async def _relay_loop(self) -> None:
        """Take the streams the worker hands over: each comes with its request's id."""
        try:
            with self._relay_scope:
                await self._take_relays()
        finally:
            self.spawned.close_relay()

    async def _take_relays(self) -> None:
        relay = self.relay_sock
        assert relay is not None
        while True:
            await anyio.wait_readable(relay)
            try:
                data, fds, _, _ = socket.recv_fds(relay, 1024, 4)
            except BlockingIOError:
                continue
            except OSError:
                return
            streams = [socket.socket(fileno=fd) for fd in fds]
            try:
                rid = msgspec.json.decode(data)
            except msgspec.DecodeError:
                rid = None
            waiter = self._relayed.get(rid) if isinstance(rid, (int, str)) else None
            if waiter is None or len(streams) != 1 or waiter.arrived.is_set():
                for sock in streams:  # its call is over (or the message is bad): end the stream
                    _shut(sock)
                    sock.close()
                if isinstance(rid, (int, str)):
                    await self.notify(RELAY_DONE, RelayDone(id=rid, summary=msgspec.Raw(b"null"), cancelled=True))
                continue
            waiter.sock = streams[0]
            waiter.arrived.set()

    async def _relay(self, rid: RequestId, relayed: _Relayed, request: GenerateRequest, on_text: OnText) -> None:
        """Read the handed-over response, give its text to ``on_text``, then tell the
        worker it is over (``relay.done`` with the decoder's summary). The socket is read
        through an asyncio stream (the daemon runs on anyio's asyncio backend), whose
        transport stays registered with the event loop for the whole response: anyio's
        own streams register and unregister it around every read, two ``epoll_ctl`` calls
        per token."""
        await relayed.arrived.wait()
        sock = relayed.sock
        assert sock is not None and self.relay_decoder is not None
        if relayed.cut:  # cancelled before the worker handed it over
            _shut(sock)
        decoder = self.relay_decoder(request)
        stream: asyncio.StreamWriter | None = None
        try:
            reader, stream = await asyncio.open_unix_connection(sock=sock)
            relayed.stream = stream
            while not decoder.finished:
                try:
                    data = await reader.read(65536)
                except OSError:
                    data = b""
                self.last_output = time.monotonic()
                for text, logprobs in decoder.feed(data):
                    await on_text(text, logprobs)
                if not data:
                    break
        except anyio.get_cancelled_exc_class():
            relayed.cut = True  # the call ended (the client left, or the worker died)
            raise
        finally:
            _shut(sock)
            with anyio.CancelScope(shield=True):
                if stream is not None:
                    stream.close()
                await self.notify(RELAY_DONE, RelayDone(id=rid, summary=msgspec.Raw(decoder.summary()), cancelled=relayed.cut))

    async def embed(self, request: EmbedRequest) -> EmbedDone:
        raw = await self._call(EMBED, request)
        return msgspec.json.decode(bytes(raw), type=EmbedDone)

    async def tokenize(self, request: TokenizeRequest) -> TokenizeOutput:
        return msgspec.json.decode(bytes(await self._call(TOKENIZE, request)), type=TokenizeOutput)

    async def detokenize(self, request: DetokenizeRequest) -> DetokenizeOutput:
        return msgspec.json.decode(bytes(await self._call(DETOKENIZE, request)), type=DetokenizeOutput)

    async def notify(self, method: str, params: Any) -> bool:
        """Send a notification; False if the worker is gone."""
        if not self.alive:
            return False
        try:
            await self._send(self.peer.notification(method, params))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            return False
        return True

    async def tune(self, tuning: Tuning) -> bool:
        """``worker.tune``: the worker's reader thread hands it to the engine at once."""
        self.tuning = tuning
        return await self.notify(TUNE, tuning)

    async def warm_up(self) -> bool:
        """Run the postponed warm-up (queued behind any request already waiting)."""
        self.warm_up_pending = False
        return await self.notify(WARM_UP, None)

    async def _read_loop(self) -> None:
        assert self.process.stdout is not None
        reader = LineReader(self.process.stdout, WORKER_MAX_LINE)
        try:
            while True:
                line = await reader.receive_line()
                if line is None:
                    break
                await self._on_line(line)
        except ImpetusError as exc:
            log.error("worker %s sent a bad line: %s", self.pid, exc)
            self.exit_reason = "killed: it sent a malformed line"
            self.process.kill()
        finally:
            with anyio.CancelScope(shield=True):
                code = await self.process.wait()
                if self.exit_reason is None:  # not stopped or killed by the daemon
                    hint = self.memory.hint(code)
                    self.exit_reason = describe_exit(code) + (f" ({hint})" if hint else "") + (f": {self.fatal}" if self.fatal else "")
                self.exited.set()
                self._relay_scope.cancel()
                self.peer.fail_all(self._death_error)
                if self.on_exit is not None:
                    self.on_exit(self)

    def _death_error(self) -> ImpetusError:
        if self.hung:
            return WorkerHung(
                f"the worker for {self.spec.name} was hung ({self.exit_reason}) and was killed",
                model=self.spec.name,
                cause=self.exit_reason,
                pid=self.pid,
            )
        return WorkerCrashed(
            f"the worker for {self.spec.name} stopped ({self.exit_reason})",
            model=self.spec.name,
            cause=self.exit_reason,
            pid=self.pid,
        )

    async def _watchdog(self, timeout: float) -> None:
        """Kill the worker when it has requests and has sent nothing for ``timeout`` s."""
        interval = min(1.0, timeout / 4)
        while self.alive:
            with anyio.move_on_after(interval):
                await self.exited.wait()
            if self.alive:
                self.memory.sample()
            if self.alive and self.peer.pending and time.monotonic() - self.last_output > timeout:
                log.error(
                    "worker %s for %s sent nothing for %.1f s with %d request(s) active: killing it", self.pid, self.spec.name, timeout, len(self.peer.pending)
                )
                self.hung = True
                self.exit_reason = f"hung: no output for {timeout:g} s"
                self.process.kill()
                return

    async def _on_line(self, line: bytes) -> None:
        self.last_output = time.monotonic()  # heartbeats count: they only reset this
        routed = self.peer.receive(line)  # answers settle calls; chunks go to their call's on_text
        if routed is not None:
            await routed

    def _on_message(self, item: Incoming) -> None:
        """The worker sends answers and notifications, never requests."""
        if isinstance(item, ImpetusError) and item.fields.get("_id") is not None:
            return  # the answer to a call nobody waits for any more
        log.warning("worker %s sent something the daemon does not take: %s", self.pid, item)

    def _on_notification(self, msg: Message) -> None:
        """``worker.fatal`` says why the worker is about to exit; ``heartbeat`` (and anything
        else unrouted) needs nothing beyond ``last_output``."""
        if msg.method == FATAL:
            try:
                self.fatal = msgspec.json.decode(bytes(msg.params), type=Fatal).reason
            except msgspec.DecodeError:
                log.warning("worker %s sent a malformed %s", self.pid, FATAL)

    async def stop(self, grace: float = 5.0) -> None:
        """Ask the worker to exit; kill it if it does not within ``grace``."""
        if self.alive:
            self.exit_reason = self.exit_reason or "stopped"
            try:
                await self._send(self.peer.notification(SHUTDOWN, None))
                assert self.process.stdin is not None
                await self.process.stdin.aclose()
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                pass
            with anyio.move_on_after(grace):
                await self.exited.wait()
            if self.alive:
                self.process.kill()
                await self.exited.wait()


def _shut(sock: socket.socket) -> None:
    """End a relayed connection (the peer sees it closed) without closing the descriptor."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
