"""Daemon side of a worker process: spawn, talk, stream, stop, notice death."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import msgspec
from anyio.abc import Process, TaskGroup

from impetusd.engine.messages import DetokenizeOutput, DetokenizeRequest, EmbedRequest, EngineInfo, GenerateRequest, ModelSpec, TokenizeOutput, TokenizeRequest
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


async def spawn_worker(env: dict[str, str] | None = None) -> Process:
    """A worker process waiting for its ``worker.start`` on stdin."""
    return await anyio.open_process(
        [sys.executable, "-m", "impetusd.workers"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=None,  # the worker logs to the daemon's stderr
        env={**os.environ, **(env or {})},
    )


class WorkerHandle:
    """One worker process hosting one backend and one model."""

    def __init__(self, spec: ModelSpec, backend: str, process: Process) -> None:
        self.spec = spec
        self.backend = backend
        self.process = process
        self.pid = process.pid
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
        process: Process | None = None,
        cache: CacheSettings | None = None,
    ) -> WorkerHandle:
        """Start a worker (or use ``process``, a spare one already waiting) and load ``spec``."""
        if process is None:
            process = await spawn_worker(env)
        handle = cls(spec, backend, process)
        handle.tuning = tuning or Tuning()
        handle.warm_up_pending = not warm_up
        tg.start_soon(handle._read_loop)
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
        async with anyio.create_task_group() as tg:

            async def forward_cancel() -> None:
                await cancel_requested.wait()
                try:
                    await self._send(self.peer.cancellation(rid))
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    pass

            tg.start_soon(forward_cancel)
            failure: ImpetusError | None = None
            try:
                raw = await self._call(GENERATE, GenerateParams(request=request), on_text, rid=rid)
            except ImpetusError as exc:  # raised outside the group, not wrapped in one
                failure = exc
            finally:
                tg.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return self._done_decoder.decode(bytes(raw))

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
