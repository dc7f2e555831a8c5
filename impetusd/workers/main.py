"""Worker entry point (``python -m impetusd.workers``).

The main thread owns the engine (ML libraries often want one thread); a reader
thread feeds stdin to the worker's ``Peer``, which records cancellations at once;
``worker.tune`` and ``worker.shutdown`` act at once too, the rest queue for the
main thread's method table. End of stdin means the daemon is gone: the worker
exits immediately.
"""

from __future__ import annotations

import importlib
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO

import msgspec

from impetusd.engine.capabilities import BatchEngine, WakeableEngine
from impetusd.engine.messages import DetokenizeOutput, DetokenizeRequest, EmbedRequest, EngineResult, TokenizeOutput, TokenizeRequest
from impetusd.plugin.manager import build_registries, make_plugin_manager
from impetusd.protocol.api import TokenLogprob
from impetusd.protocol.errors import ImpetusError, InternalError, NoBackend, PluginError
from impetusd.protocol.messages import Message
from impetusd.protocol.peer import Incoming, Peer
from impetusd.workers.failures import backend_failure
from impetusd.workers.messages import (
    CHUNK,
    DETOKENIZE,
    EMBED,
    FATAL,
    GENERATE,
    HEARTBEAT,
    SHUTDOWN,
    START,
    TOKENIZE,
    TUNE,
    WARM_UP,
    EmbedDone,
    Fatal,
    GenerateDone,
    GenerateParams,
    StartParams,
    TextChunk,
    Tuning,
)
from impetusd.workers.tiers import attach_cache_tiers

log = logging.getLogger("impetusd.workers")


class Channel:
    """The worker's side of the pipe: its ``Peer`` and a locked, flushed stdout."""

    def __init__(self, out: BinaryIO, peer: Peer) -> None:
        self.peer = peer
        self._out = out
        self._lock = threading.Lock()
        self.last_write = time.monotonic()

    def write(self, data: bytes) -> None:
        with self._lock:
            self._out.write(data)
            self._out.flush()
            self.last_write = time.monotonic()

    def heartbeat(self, every: float = 1.0) -> None:
        """Tell the daemon we are alive (it kills workers that stay silent on a request)."""
        if time.monotonic() - self.last_write > every:
            self.notify(HEARTBEAT, None)

    def result(self, rid: Any, result: Any) -> None:
        self.write(self.peer.response(rid, result))

    def error(self, rid: Any, err: ImpetusError) -> None:
        self.write(self.peer.error_response(rid, err))

    def notify(self, method: str, params: Any) -> None:
        self.write(self.peer.notification(method, params))


def _private_stdout() -> BinaryIO:
    """Keep fd 1 for the protocol and point ``sys.stdout`` (and fd 1) at stderr,
    so stray prints from libraries cannot corrupt the pipe."""
    proto = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return proto


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("IMPETUS_LOG_LEVEL", "INFO").upper(),
        format=f"%(asctime)s worker[{os.getpid()}] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    received: list[Incoming] = []
    peer = Peer(received.append, on_notification=received.append)
    chan = Channel(_private_stdout(), peer)
    stdin = os.fdopen(os.dup(0), "rb", buffering=0)
    _preload(os.environ.pop("IMPETUS_WORKER_PRELOAD", ""))
    first = stdin.readline()
    if not first:
        return
    peer.receive(first)
    req = received[0] if received else None
    if not isinstance(req, Message) or req.method != START or req.is_notification:
        log.error("the daemon's first message was not %s: %s", START, req)
        return
    try:
        start = msgspec.json.decode(bytes(req.params), type=StartParams)
        engine = _start_engine(start)
        if start.tuning is not None:
            tune(engine, start.tuning)
        warmup_ms = warm_up(engine) if start.warm_up else None  # a failing warm-up is a failed load
    except ImpetusError as exc:
        chan.error(req.id, exc)
        return
    except Exception as exc:  # a backend failing to load is reported, not raised
        chan.error(req.id, backend_failure(exc, "load"))
        return
    info = engine.info()
    if warmup_ms is not None:  # reported apart from the engine's own load time
        info = msgspec.structs.replace(info, details={**info.details, "warmup_ms": warmup_ms})
    watch_engine(engine, chan)
    chan.result(req.id, info)
    Serve(chan, engine, stdin).run()


def watch_engine(engine: Any, chan: Channel) -> None:
    """Engines whose child process can die (``FatalEngine``) end the worker through this:
    the daemon hears why, then sees the worker exit and fails its requests."""
    from impetusd.engine.capabilities import FatalEngine

    if not isinstance(engine, FatalEngine):
        return

    def fatal(reason: str) -> None:
        log.error("the engine failed: %s", reason)
        try:
            chan.notify(FATAL, Fatal(reason=reason))
        finally:
            os._exit(70)

    engine.on_fatal = fatal


def tune(engine: Any, tuning: Tuning) -> None:
    """Engines may offer ``tune(tuning)`` (``TunableEngine``); the others run as they are."""
    from impetusd.engine.capabilities import TunableEngine

    if isinstance(engine, TunableEngine):
        engine.tune(tuning)


def warm_up(engine: Any) -> float | None:
    """Engines may offer ``warm_up()`` (a token through the model so the first
    request does not pay for setup). The daemon postpones it while the machine is hot.
    Returns its time in ms, or None when the engine is no ``WarmUpEngine``."""
    from impetusd.engine.capabilities import WarmUpEngine

    if not isinstance(engine, WarmUpEngine):
        return None
    started = time.monotonic()
    engine.warm_up()
    return (time.monotonic() - started) * 1000


def _preload(modules: str) -> None:
    """A spare worker (impetusd/residency/spares.py) imports its backend before it is needed."""
    for name in filter(None, modules.split(",")):
        try:
            importlib.import_module(name)
        except Exception:  # the start reports the failure properly
            log.exception("preloading %s failed", name)


def _start_engine(start: StartParams) -> Any:
    pm = make_plugin_manager(start.plugins, start.disabled_plugins)
    registries = build_registries(pm)
    backend = registries.backends.get(start.backend)
    if backend is None:
        raise NoBackend(f"backend {start.backend!r} is not installed in the worker", backend=start.backend)
    try:
        engine = backend.start(start.spec)
    except ImpetusError:
        raise
    except ImportError as exc:
        raise PluginError(f"backend {start.backend!r} cannot import: {exc}", backend=start.backend) from exc
    if start.cache is not None:
        attach_cache_tiers(engine, start.backend, start.cache, registries.cache_tiers)
    return engine


class Job:
    """A request or notification from the daemon, queued for the engine's thread."""

    __slots__ = ("msg", "queued_at", "key", "cancelled")

    def __init__(self, msg: Message, queued_at: float) -> None:
        self.msg = msg
        self.queued_at = queued_at
        self.key: object = None  # in the peer's incoming requests (requests only)
        self.cancelled = False  # set by the reader thread on ``$/cancel``; read between tokens

    def cancel(self) -> None:
        self.cancelled = True

    @property
    def answers(self) -> bool:
        return not self.msg.is_notification


class Serve:
    def __init__(self, chan: Channel, engine: Any, stdin: BinaryIO) -> None:
        self.chan = chan
        self.peer = chan.peer
        self.engine = engine
        self.stdin = stdin
        self.jobs: queue.Queue[Job] = queue.Queue()
        self.wake = engine.wake if isinstance(engine, WakeableEngine) else None
        self.stopping = False
        self.gen_decoder = msgspec.json.Decoder(GenerateParams)
        self.embed_decoder = msgspec.json.Decoder(EmbedRequest)
        self.tokenize_decoder = msgspec.json.Decoder(TokenizeRequest)
        self.detokenize_decoder = msgspec.json.Decoder(DetokenizeRequest)
        self.tune_decoder = msgspec.json.Decoder(Tuning)
        # The reader thread does these at once (``$/cancel`` the peer does itself).
        self.immediate: dict[str, Callable[[Message], None]] = {TUNE: self._tune, SHUTDOWN: self._shutdown}
        # The engine's thread does these in order; a request's return value is its answer.
        self.methods: dict[str, Callable[[Job, float], Any]] = {
            GENERATE: self._generate,
            EMBED: self._embed,
            TOKENIZE: self._tokenize,
            DETOKENIZE: self._detokenize,
            WARM_UP: self._warm_up,
        }
        self.peer.dispatcher = self.peer.on_notification = self.receive

    def read_loop(self) -> None:
        for line in self.stdin:
            self.peer.receive(line)
            if self.stopping:
                break
        os._exit(0)  # daemon gone or asked us to stop: the OS reclaims everything

    def receive(self, item: Incoming) -> None:
        """The reader thread's dispatcher: act at once, or queue for the engine."""
        if not isinstance(item, Message):
            log.error("undecodable line from daemon: %s", item)
            return
        act = self.immediate.get(item.method) if item.method is not None else None
        if act is not None:
            act(item)
            return
        job = Job(item, time.monotonic())
        if job.answers:
            job.key = self.peer.track(item.id, job)
        self.jobs.put(job)
        if self.wake is not None:
            self.wake()  # a step() waiting for news returns: the request joins now

    def _shutdown(self, msg: Message) -> None:
        self.stopping = True

    def _tune(self, msg: Message) -> None:
        try:
            tune(self.engine, self.tune_decoder.decode(msg.params))
        except Exception:  # the reader thread must keep reading
            log.exception("worker.tune failed")

    def run(self) -> None:
        threading.Thread(target=self.read_loop, name="stdin", daemon=True).start()
        if isinstance(self.engine, BatchEngine):
            self.run_batched(self.engine)
        while True:
            self.handle(self.jobs.get())

    def run_batched(self, engine: BatchEngine) -> None:
        """Take every request that has arrived, then let the engine take one step;
        block only when it has nothing to do."""
        while True:
            try:
                job: Job | None = self.jobs.get(block=not engine.busy())
            except queue.Empty:
                job = None
            while job is not None:
                if job.msg.method == GENERATE:
                    self.submit(engine, job)
                else:
                    self.handle(job)
                try:
                    job = self.jobs.get_nowait()
                except queue.Empty:
                    job = None
            if engine.busy():
                engine.step()

    def submit(self, engine: BatchEngine, job: Job) -> None:
        rid = job.msg.id
        arrived_ms = (time.monotonic() - job.queued_at) * 1000
        try:
            params = self.gen_decoder.decode(job.msg.params)
        except msgspec.DecodeError as exc:
            self._over(job)
            self.chan.error(rid, InternalError(f"bad generate params: {exc}"))
            return
        on_text, should_stop = self._callbacks(job)

        def on_done(outcome: EngineResult | Exception) -> None:
            self._over(job)
            if isinstance(outcome, Exception):
                self.chan.error(rid, backend_failure(outcome, "generate"))
            else:  # the engine reports how long the request waited to join the batch
                self.chan.result(rid, GenerateDone(result=outcome, queued_ms=arrived_ms + (outcome.queued_ms or 0.0)))

        try:
            engine.submit(params.request, on_text, should_stop, on_done)
        except Exception as exc:  # refused before it started (bad params, context length)
            on_done(exc)

    def _callbacks(self, job: Job) -> tuple[Any, Any]:
        rid = job.msg.reply_id
        notify = self.chan.notify

        def on_text(text: str, logprobs: list[TokenLogprob] | None = None) -> None:
            if text or logprobs:
                notify(CHUNK, TextChunk(id=rid, text=text, logprobs=logprobs or None))

        def should_stop() -> bool:  # engines call this between tokens and prefill chunks
            self.chan.heartbeat()
            return job.cancelled

        return on_text, should_stop

    def handle(self, job: Job) -> None:
        msg = job.msg
        queued_ms = (time.monotonic() - job.queued_at) * 1000
        try:
            run = self.methods.get(msg.method) if msg.method is not None else None
            if run is None:
                raise InternalError(f"worker has no method {msg.method}")
            result = run(job, queued_ms)
            if job.answers:
                self.chan.result(msg.id, result)
        except msgspec.DecodeError as exc:
            self._failed(msg, InternalError(f"bad {msg.method} params: {exc}"))
        except Exception as exc:  # typed: ImpetusError as is, allocation failures as InsufficientMemory
            self._failed(msg, backend_failure(exc, msg.method or ""))
        finally:
            self._over(job)

    def _over(self, job: Job) -> None:
        if job.answers:
            self.peer.untrack(job.key)

    def _failed(self, msg: Message, error: ImpetusError) -> None:
        if msg.is_notification:
            log.error("%s failed: %s", msg.method, error)
        else:
            self.chan.error(msg.id, error)

    def _generate(self, job: Job, queued_ms: float) -> GenerateDone:
        params = self.gen_decoder.decode(job.msg.params)
        on_text, should_stop = self._callbacks(job)
        return GenerateDone(result=self.engine.generate(params.request, on_text, should_stop), queued_ms=queued_ms)

    def _embed(self, job: Job, queued_ms: float) -> EmbedDone:
        params = self.embed_decoder.decode(job.msg.params)
        return EmbedDone(output=self.engine.embed(params), queued_ms=queued_ms)

    def _tokenize(self, job: Job, queued_ms: float) -> TokenizeOutput:
        return self.engine.tokenize(self.tokenize_decoder.decode(job.msg.params))

    def _detokenize(self, job: Job, queued_ms: float) -> DetokenizeOutput:
        return self.engine.detokenize(self.detokenize_decoder.decode(job.msg.params))

    def _warm_up(self, job: Job, queued_ms: float) -> None:
        """The postponed warm-up (a notification), run between requests."""
        try:
            warm_up(self.engine)
        except Exception:
            log.exception("the postponed warm-up failed")
