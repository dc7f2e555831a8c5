"""Worker entry point (``python -m impetusd.workers``).

The main thread owns the engine (ML libraries often want one thread); a reader
thread takes requests from stdin, records cancellations at once, and queues the
rest. End of stdin means the daemon is gone: the worker exits immediately.
"""

from __future__ import annotations

import importlib
import logging
import os
import queue
import sys
import threading
import time
from typing import Any, BinaryIO

import msgspec

from impetusd.protocol.errors import ImpetusError, InternalError, NoBackend, PluginError
from impetusd.plugin.manager import build_registries, make_plugin_manager
from impetusd.protocol.messages import Codec, Request
from impetusd.plugin.engine import BatchEngine, EmbedRequest, EngineResult
from impetusd.workers.failures import backend_failure
from impetusd.workers.messages import CancelTarget, EmbedDone, GenerateDone, GenerateParams, StartParams, TextChunk, Tuning
from impetusd.workers.tiers import attach_cache_tiers

log = logging.getLogger("impetusd.workers")


class Channel:
    def __init__(self, out: BinaryIO) -> None:
        self.codec = Codec()
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
            self.notify("heartbeat", None)

    def result(self, rid: Any, result: Any) -> None:
        self.write(self.codec.encode_result(rid, result))

    def error(self, rid: Any, err: ImpetusError) -> None:
        self.write(self.codec.encode_error(rid, err))

    def notify(self, method: str, params: Any) -> None:
        self.write(self.codec.encode_notification(method, params))


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
    chan = Channel(_private_stdout())
    stdin = os.fdopen(os.dup(0), "rb", buffering=0)
    reader = msgspec.json.Decoder(Request)
    _preload(os.environ.pop("IMPETUS_WORKER_PRELOAD", ""))
    first = stdin.readline()
    if not first:
        return
    req = reader.decode(first)
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
    chan.result(req.id, info)
    Serve(chan, engine, stdin).run()


def tune(engine: Any, tuning: Tuning) -> None:
    """Engines may offer ``tune(tuning)`` (``TunableEngine``); the others run as they are."""
    from impetusd.plugin.engine import TunableEngine

    if isinstance(engine, TunableEngine):
        engine.tune(tuning)


def warm_up(engine: Any) -> float | None:
    """Engines may offer ``warm_up()`` (a token through the model so the first
    request does not pay for setup). The daemon postpones it while the machine is hot.
    Returns its time in ms, or None when the engine is no ``WarmUpEngine``."""
    from impetusd.plugin.engine import WarmUpEngine

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


class Serve:
    def __init__(self, chan: Channel, engine: Any, stdin: BinaryIO) -> None:
        self.chan = chan
        self.engine = engine
        self.stdin = stdin
        self.jobs: queue.Queue[tuple[Request, float]] = queue.Queue()
        self.cancelled: set[Any] = set()
        self.lock = threading.Lock()
        self.decoder = msgspec.json.Decoder(Request)
        self.gen_decoder = msgspec.json.Decoder(GenerateParams)
        self.cancel_decoder = msgspec.json.Decoder(CancelTarget)
        self.embed_decoder = msgspec.json.Decoder(EmbedRequest)
        self.tune_decoder = msgspec.json.Decoder(Tuning)

    def read_loop(self) -> None:
        for line in self.stdin:
            try:
                req = self.decoder.decode(line)
            except msgspec.DecodeError:
                log.error("undecodable line from daemon")
                continue
            if req.method == "$/cancel":
                with self.lock:
                    self.cancelled.add(self.cancel_decoder.decode(bytes(req.params)).id)
            elif req.method == "worker.shutdown":
                break
            elif req.method == "worker.tune":
                try:
                    tune(self.engine, self.tune_decoder.decode(bytes(req.params)))
                except Exception:  # the reader thread must keep reading
                    log.exception("worker.tune failed")
            else:
                self.jobs.put((req, time.monotonic()))
        os._exit(0)  # daemon gone or asked us to stop: the OS reclaims everything

    def run(self) -> None:
        threading.Thread(target=self.read_loop, name="stdin", daemon=True).start()
        if isinstance(self.engine, BatchEngine):
            self.run_batched(self.engine)
        while True:
            req, queued_at = self.jobs.get()
            self.handle(req, queued_at)

    def run_batched(self, engine: BatchEngine) -> None:
        """Take every request that has arrived, then let the engine take one step;
        block only when it has nothing to do."""
        while True:
            try:
                job = self.jobs.get(block=not engine.busy())
            except queue.Empty:
                job = None
            while job is not None:
                req, queued_at = job
                if req.method == "generate":
                    self.submit(engine, req, queued_at)
                else:
                    self.handle(req, queued_at)
                try:
                    job = self.jobs.get_nowait()
                except queue.Empty:
                    job = None
            if engine.busy():
                engine.step()

    def submit(self, engine: BatchEngine, req: Request, queued_at: float) -> None:
        rid = req.id
        arrived_ms = (time.monotonic() - queued_at) * 1000
        try:
            params = self.gen_decoder.decode(bytes(req.params))
        except msgspec.DecodeError as exc:
            self.chan.error(rid, InternalError(f"bad generate params: {exc}"))
            return
        on_text, should_stop = self._callbacks(rid)

        def on_done(outcome: EngineResult | Exception) -> None:
            with self.lock:
                self.cancelled.discard(rid)
            if isinstance(outcome, Exception):
                self.chan.error(rid, backend_failure(outcome, "generate"))
            else:  # the engine reports how long the request waited to join the batch
                self.chan.result(rid, GenerateDone(result=outcome, queued_ms=arrived_ms + (outcome.queued_ms or 0.0)))

        try:
            engine.submit(params.request, on_text, should_stop, on_done)
        except Exception as exc:  # refused before it started (bad params, context length)
            on_done(exc)

    def _callbacks(self, rid: Any) -> tuple[Any, Any]:
        def on_text(text: str) -> None:
            if text:
                self.chan.notify("chunk", TextChunk(id=rid, text=text))  # type: ignore[arg-type]

        def should_stop() -> bool:  # engines call this between tokens and prefill chunks
            self.chan.heartbeat()
            return rid in self.cancelled

        return on_text, should_stop

    def handle(self, req: Request, queued_at: float) -> None:
        rid = req.id
        queued_ms = (time.monotonic() - queued_at) * 1000
        if req.method == "generate":
            run = self._generate
        elif req.method == "embed":
            run = self._embed
        elif req.method == "worker.warm_up":  # a notification, run between requests
            try:
                warm_up(self.engine)
            except Exception:
                log.exception("the postponed warm-up failed")
            return
        else:
            self.chan.error(rid, InternalError(f"worker has no method {req.method}"))
            return
        try:
            self.chan.result(rid, run(req, queued_ms))
        except msgspec.DecodeError as exc:
            self.chan.error(rid, InternalError(f"bad {req.method} params: {exc}"))
        except Exception as exc:  # typed: ImpetusError as is, allocation failures as InsufficientMemory
            self.chan.error(rid, backend_failure(exc, req.method))
        finally:
            with self.lock:
                self.cancelled.discard(rid)

    def _generate(self, req: Request, queued_ms: float) -> GenerateDone:
        rid = req.id
        params = self.gen_decoder.decode(bytes(req.params))
        on_text, should_stop = self._callbacks(rid)
        return GenerateDone(result=self.engine.generate(params.request, on_text, should_stop), queued_ms=queued_ms)

    def _embed(self, req: Request, queued_ms: float) -> EmbedDone:
        params = self.embed_decoder.decode(bytes(req.params))
        return EmbedDone(output=self.engine.embed(params), queued_ms=queued_ms)
