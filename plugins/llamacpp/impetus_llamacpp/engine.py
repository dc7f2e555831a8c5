"""The llama.cpp engine inside a worker: a llama-server child process (server.py) serves
the GGUF model, and up to ``max_batch`` requests stream through its parallel slots at
once, each on its own thread and HTTP stream (``BatchEngine``). A stream's thread hands
its text to the worker itself (the worker's sink is thread-safe), so a token costs no
hand-over between threads, and closes its stream when the request is cancelled or its
client went away (llama-server then stops that slot). The worker's main thread runs
``step``: it starts requests on free slots, watches the ones still in prefill, and hands
each request's end to the worker."""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import queue
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec

from impetusd.plugin_api import (
    ContextLengthExceeded,
    EmbedOutput,
    EmbedRequest,
    EngineInfo,
    EngineResult,
    FinishReason,
    GenerateRequest,
    InvalidModelFile,
    LoadOptions,
    ModelSpec,
    PluginError,
    PromptCacheTier,
    TextSink,
    TokenLogprob,
    Tuning,
    UnsupportedFormat,
    UnsupportedParameter,
    reasoning_opened,
)

from . import binary, gpu, rpc, vocab
from .embed import Embedder
from .offload import PLANNED_ENV, kv_bytes, max_context, wanted_layers, weights_bytes
from .prompt import Prompter
from .sampling import options
from .server import LlamaServer
from .slot_files import SlotFileTier
from .slots import Slots
from .threads import ThreadPolicy
from .wire import SseDecoder, Summary, request_bytes

log = logging.getLogger(__name__)

# Prompt tokens per llama_decode call: a cancel stops a long prompt within one of these.
PREFILL_BATCH = 512
THREAD_SAMPLE_S = 0.5  # how long the load watches the machine to choose the thread count
CONNECT_TIMEOUT_S = 10.0
STEP_WAIT_S = 0.05  # step() waits this long for news from the streams
# llama-server's speculation types: a draft model (-md alone loads it but drafts nothing),
# and n-grams of the context ("ngram-mod" drafted on a repetitive prompt here; "ngram-simple" did not)
DRAFT_SPEC = "draft-simple"
NGRAM_SPEC = "ngram-mod"
RESTORE_GAIN = 64  # restore a slot file when it holds this many more prompt tokens than the slot
YIELD_NICE = 5  # server_nice()
RPC_EXIT_GRACE_S = 0.5  # a worker whose llama-server died with nodes waits this long for its NodeLost replies


def server_args(n_ctx: int, slots: int, threads: int, gpu_layers: int = 0, options: LoadOptions | None = None, poll: bool | None = None) -> list[str]:
    """llama-server's options for generation (bench/llama_server.py and bench/gpu.py start it the same way).
    ``poll``: whether its threads poll for work; None: only when they leave a core free."""
    extra = load_args(options or LoadOptions())
    # One KV cache of n_ctx tokens per slot (--no-kv-unified): with one buffer shared by the
    # slots, concurrent greedy requests gave other text than each alone (measured here).
    args = ["--ctx-size", str(n_ctx * slots), "--parallel", str(slots), "--no-kv-unified", "--no-context-shift", "--cache-ram", "0"]
    args += ["--batch-size", str(PREFILL_BATCH), "--threads", str(threads), "--threads-batch", str(threads)]
    if not (poll if poll is not None else not takes_every_core(threads)):
        # none spins waiting for work (llama.cpp polls by default), so a woken process (the
        # worker, the daemon, llama-server's own HTTP thread) gets a core at once instead of
        # after a spinning thread's time slice
        args += ["--poll", "0"]
    return args + ["--n-gpu-layers", str(gpu_layers), *extra]


def takes_every_core(threads: int) -> bool:
    return threads >= (os.cpu_count() or 1)


def server_nice(threads: int) -> int:
    """llama-server's niceness: when its threads take every core, it yields to the worker
    and the daemon that carry its requests and tokens (woken, they get a core at once)."""
    return YIELD_NICE if takes_every_core(threads) else 0


def gpu_layers(found: binary.Binary, spec: ModelSpec, tokens: int) -> tuple[int, list[gpu.Gpu]]:
    """How many layers go to the GPU (llama.cpp counts the output layer as one more), and the GPUs:
    none for a build without CUDA; else what the daemon planned (``IMPETUS_GPU_LAYERS``), else
    ``IMPETUS_LLAMACPP_GPU_LAYERS``, or what fits in the free memory (gpu.py)."""
    if found.variant != "cuda":
        return 0, []
    gpus = gpu.query()
    layers = int(spec.metadata.get("block_count") or 0)
    planned = os.environ.get(PLANNED_ENV, "").strip()
    wanted = int(planned) if planned.isdigit() else wanted_layers(os.environ, layers)
    if wanted is not None:
        return wanted, gpus
    if not gpus:
        return 0, gpus
    return gpu.layers_that_fit(layers, weights_bytes(spec), kv_bytes(spec.metadata, tokens), sum(g.free_bytes for g in gpus)), gpus


def load_args(options: LoadOptions) -> list[str]:
    """The load's KV-cache type, flash attention and speculative decoding."""
    args = ["--cache-type-k", options.kv_type, "--cache-type-v", options.kv_type, "--flash-attn", options.flash_attn]
    if options.draft is not None:
        args += ["--model-draft", options.draft.path, "--spec-type", DRAFT_SPEC]
    elif options.ngram:
        args += ["--spec-type", NGRAM_SPEC]
    return args


def cache_variant(options: LoadOptions | None) -> str:
    """Slot files of other KV layouts do not restore: each has its own disk-tier directory."""
    if options is None or (options.kv_type, options.flash_attn) == ("f16", "auto"):
        return ""
    return f"{options.kv_type}-fa-{options.flash_attn}"


def _pick_threads() -> int:
    """llama-server's thread count: IMPETUS_LLAMACPP_THREADS's, or chosen from what
    keeps the cores busy over a short look."""
    policy = ThreadPolicy()  # a bad IMPETUS_LLAMACPP_THREADS is refused here
    if not policy.fixed:
        time.sleep(THREAD_SAMPLE_S)  # watch what else keeps the cores busy
    return policy.pick()


def _context_lengths(spec: ModelSpec) -> tuple[int, int]:
    """The model's trained context (0 when its file does not say) and the context
    llama-server gets: that, up to max_context()."""
    trained = int(spec.metadata.get("context_length") or 0)
    limit = max_context()
    return trained, (min(trained, limit) if trained else limit)


def _open(server: LlamaServer, found: binary.Binary, spec: ModelSpec) -> tuple[Prompter, dict[str, Any]]:
    """Wait until ``server`` has loaded the model; the prompter built from what it
    says, and its model's ``meta``. The server is closed when this fails."""
    try:
        try:
            server.wait_ready()
        except InvalidModelFile as exc:
            raise rpc.refusal(exc, found.path) from None
        props = server.get("/props")
        meta = server.get("/v1/models")["data"][0]["meta"]
        template = props.get("chat_template") if spec.metadata.get("chat_template", True) else None
        prompter = Prompter(server, template or None, props.get("bos_token") or "", props.get("eos_token") or "", vocab.open_beside(found.path, spec.path))
    except BaseException:
        server.close()
        raise
    return prompter, meta


class Stream:
    """One request's HTTP stream to llama-server, read on its own thread."""

    def __init__(
        self,
        req: GenerateRequest,
        ids: list[int],
        body: dict[str, Any],
        on_text: TextSink,
        should_stop: Callable[[], bool],
        on_done: Callable[[EngineResult | Exception], None],
    ) -> None:
        self.req = req
        self.ids = ids
        self.body = body
        self.on_text = on_text
        self.should_stop = should_stop
        self.on_done = on_done
        self.submitted = time.monotonic()
        self.joined = 0.0
        self.cancelled = False
        self.sock: socket.socket | None = None
        self.lock = threading.Lock()
        self.text: list[str] = []
        self.tokens = 0
        self.first = 0.0
        self.batch_size = 1
        self.slot = -1  # llama-server's slot (id_slot), chosen when the request starts
        self.reused = 0  # leading tokens the slot held already
        self.restore = False  # whether the disk tier holds more of the prompt than the slot
        self.held: list[int] = []  # what the slot holds once the request is over
        self.logprobs: list[TokenLogprob] = []

    def cancel(self) -> None:
        """Close the connection: this thread's read ends, llama-server stops the slot."""
        with self.lock:
            self.cancelled = True
            if self.sock is not None:
                try:
                    self.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@dataclass(frozen=True, slots=True)
class Wake:
    """A request arrived: ``step`` stops waiting."""


@dataclass(frozen=True, slots=True)
class SlotFree:
    """The stream's request is over and its slot may take the next one."""

    stream: Stream


@dataclass(frozen=True, slots=True)
class Finished:
    """The stream's outcome, for the worker's ``on_done``."""

    stream: Stream
    outcome: EngineResult | Exception


Event = Wake | SlotFree | Finished


class LlamaServerEngine:
    def __init__(self, server: LlamaServer, found: binary.Binary, details: dict[str, Any], n_ctx: int, n_vocab: int, prompter: Prompter) -> None:
        self.server = server
        self.binary = found
        self.details = details
        self.n_ctx = n_ctx
        self.n_vocab = n_vocab
        self.prompter = prompter
        self.opened = reasoning_opened(lambda m, extra: prompter.render(m, **extra), prompter.source) if prompter.template is not None else []
        self.load_ms = 0.0
        self.default_max_batch = self.max_batch = int(details["slots"])
        self.waiting: collections.deque[Stream] = collections.deque()
        self.running: list[Stream] = []
        self.events: queue.Queue[Event] = queue.Queue()  # from the streams' threads and wake()
        self.slots = Slots(self.default_max_batch)
        self.disk: SlotFileTier | None = None
        self.disk_lock = threading.Lock()  # the tier is used from the streams' threads
        self.cache_variant = ""
        self.embedder: Embedder | None = None
        self.threads = 1
        self.on_fatal: Callable[[str], None] = _exit_worker
        self.nodes: list[str] = []  # compute nodes llama-server offloads to (rpc.py)

    @classmethod
    def load(cls, spec: ModelSpec, slots: int) -> LlamaServerEngine:
        """llama-server on ``spec``'s file with ``slots`` parallel slots (the backend's ``max_batch``)."""
        if spec.format != "gguf":
            raise UnsupportedFormat(f"the llama.cpp backend runs GGUF models, not {spec.format!r}", format=spec.format)
        started = time.monotonic()
        found = binary.find()
        threads = _pick_threads()
        trained, n_ctx = _context_lengths(spec)
        offload, gpus = gpu_layers(found, spec, n_ctx * slots)
        server = LlamaServer(
            found, spec.path, server_args(n_ctx, slots, threads, offload, spec.options) + rpc.server_args(), role="generate", nice=server_nice(threads)
        )
        prompter, meta = _open(server, found, spec)
        details = {
            "architecture": spec.metadata.get("architecture"),
            "context_length": n_ctx,
            "trained_context_length": trained or None,
            "vocab_size": meta["n_vocab"],
            "threads": threads,
            "slots": slots,
            "max_batch": slots,
            "llama_server": found.path,
            "llama_server_version": found.version,
            "llama_server_pid": server.process.pid,
            # Metal offload on macOS is unverified (docs/macos.md); CUDA was measured (docs/gpu.md).
            "device": "cuda" if offload and gpus else "cpu",
            "build": found.variant,
            "grammar_engine": f"llguidance {found.llguidance}" if found.llguidance else "llama.cpp GBNF",
            "tokenizer": "in-process (libimpetus-vocab)" if prompter.vocab is not None else "llama-server /tokenize",
            "gpu_layers": offload,
            "layers": int(spec.metadata.get("block_count") or 0),
            "gpus": [g.name for g in gpus],
            "kv_type": (spec.options or LoadOptions()).kv_type,
            "flash_attn": (spec.options or LoadOptions()).flash_attn,
            "draft": spec.options.draft.name if spec.options and spec.options.draft else None,
            "speculative": "draft" if spec.options and spec.options.draft else ("ngram" if spec.options and spec.options.ngram else None),
        }
        if rpc.nodes():
            details["rpc_nodes"] = rpc.nodes()
            details["rpc_layers"] = os.environ.get(rpc.LAYERS_ENV) or "999"
        engine = cls(server, found, details, n_ctx, int(meta["n_vocab"]), prompter)
        engine.threads = threads
        engine.cache_variant = cache_variant(spec.options)
        engine.nodes = rpc.nodes()
        server.watch(engine._server_died)
        engine.load_ms = (time.monotonic() - started) * 1000
        return engine

    def _server_died(self, reason: str) -> None:
        if self.nodes:  # let the streams' NodeLost reach the daemon before the worker ends
            lost = rpc.gone(self.nodes)
            reason += f"; compute nodes lost: {', '.join(f'{a} ({why})' for a, why in lost.items()) or 'none refuses a connection'}"
            time.sleep(RPC_EXIT_GRACE_S)
        self.on_fatal(reason)

    def warm_up(self) -> None:
        """One token through the model (llama-server warmed its buffers at start; this
        takes the first request's path: tokenizer, a slot, the sampler)."""
        ids = self.prompter.tokenize("Hi", special=False)[:1] or [0]
        self.server.post("/completion", {"prompt": ids, "n_predict": 1, "cache_prompt": False, "temperature": 0.0})

    def info(self) -> EngineInfo:
        details = {**self.details, "llama_server_rss_bytes": self.server.rss()}
        if self.details.get("device") == "cuda":
            pids = {self.server.process.pid} | ({self.embedder.server.process.pid} if self.embedder is not None else set())
            details["gpu_memory_bytes"] = gpu.process_memory(pids)
        if self.disk is not None:
            with self.disk_lock:
                details["prompt_cache_disk"] = self.disk.stats()
        return EngineInfo(backend="llamacpp", load_ms=self.load_ms, context_length=self.n_ctx, details=details, reasoning_opened=self.opened)

    def close(self) -> None:
        self.server.close()
        self.prompter.close()
        if self.embedder is not None:
            self.embedder.close()

    # -- generation (BatchEngine) ------------------------------------------------------

    def tune(self, tuning: Tuning) -> None:
        """Thermal backoff: fewer requests at once (up to the slots llama-server has)."""
        wanted = tuning.max_batch if tuning.max_batch is not None else self.default_max_batch
        self.max_batch = max(1, min(wanted, self.default_max_batch))

    def submit(
        self,
        req: GenerateRequest,
        on_text: TextSink,
        should_stop: Callable[[], bool],
        on_done: Callable[[EngineResult | Exception], None],
    ) -> None:
        ids = self.prompter.ids(req)
        if len(ids) >= self.n_ctx:
            raise ContextLengthExceeded(
                f"the prompt has {len(ids)} tokens; the model's context is {self.n_ctx}", prompt_tokens=len(ids), context_length=self.n_ctx
            )
        body = {
            "prompt": ids,
            "n_predict": min(req.sampling.max_tokens, self.n_ctx - len(ids)),
            "stream": True,
            "cache_prompt": True,
            "return_tokens": True,
            **options(req, self.n_vocab, self.n_ctx, self.binary.llguidance is not None),
        }
        self.waiting.append(Stream(req, ids, body, on_text, should_stop, on_done))

    def generate(self, req: GenerateRequest, on_text: TextSink, should_stop: Callable[[], bool]) -> EngineResult:
        """One request on its own (``Engine``): submitted, then stepped to its end."""
        outcome: list[EngineResult | Exception] = []
        self.submit(req, on_text, should_stop, outcome.append)
        while not outcome:
            self.step()
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    def busy(self) -> bool:
        return bool(self.waiting or self.running)

    def wake(self) -> None:
        """A request arrived (the worker's reader thread): end step()'s wait for news."""
        self.events.put(Wake())

    def step(self) -> None:
        while self.waiting and len(self.running) < self.max_batch:
            chosen = self.slots.choose(self.waiting[0].ids)
            if chosen is None:
                break  # a finished request's slot is still being saved
            stream = self.waiting.popleft()
            stream.slot, stream.reused = chosen
            if self.disk is not None:
                with self.disk_lock:
                    stream.restore = self.disk.match(stream.ids) >= stream.reused + RESTORE_GAIN
            stream.body["id_slot"] = stream.slot
            stream.joined = time.monotonic()
            if not stream.restore:  # sent from here: llama-server starts before the stream's thread does
                try:
                    stream.sock = self._send(stream)
                except OSError:
                    pass  # the stream's thread tries again, and reports what fails
            self.running.append(stream)
            threading.Thread(target=self._read, args=(stream,), name="llama-server-stream", daemon=True).start()
        for stream in self.running:
            stream.batch_size = max(stream.batch_size, len(self.running))
            if not stream.cancelled and stream.should_stop():  # also the worker's heartbeat
                stream.cancel()
        try:
            news = [self.events.get(timeout=STEP_WAIT_S)]
        except queue.Empty:
            return
        while True:
            try:
                news.append(self.events.get_nowait())
            except queue.Empty:
                break
        for event in news:
            if isinstance(event, SlotFree):
                self.slots.release(event.stream.slot, event.stream.held)
            elif isinstance(event, Finished):
                stream, outcome = event.stream, event.outcome
                self.running.remove(stream)
                if isinstance(outcome, EngineResult):
                    outcome = msgspec.structs.replace(
                        outcome, batch_size=stream.batch_size, batch_limit=self.max_batch, queued_ms=(stream.joined - stream.submitted) * 1000
                    )
                stream.on_done(outcome)

    def _read(self, stream: Stream) -> None:
        """The stream's thread: its end goes to ``events`` for the main thread, then the
        slot is handed back."""
        self._stream(stream)
        self.events.put(SlotFree(stream))

    # -- the disk tier (slot_files.py) ---------------------------------------------------

    def use_cache_tiers(self, tiers: list[tuple[str, PromptCacheTier]]) -> None:
        for _, tier in tiers:
            if isinstance(tier, SlotFileTier):
                self.disk = tier

    def _restore(self, stream: Stream) -> None:
        """Into the stream's slot, the slot file that holds the most of its prompt."""
        assert self.disk is not None
        with self.disk_lock:
            found = self.disk.fetch(stream.ids)
            if found is None:
                return
            path, _ = found
            staged = os.path.join(self.server.slot_dir, f"restore-{stream.slot}{path.suffix}")
            try:
                os.link(path, staged)
            except OSError:
                shutil.copyfile(path, staged)
        try:
            self.server.post(f"/slots/{stream.slot}?action=restore", {"filename": os.path.basename(staged)})
        except PluginError as exc:
            with self.disk_lock:
                self.disk.discard(path, f"llama-server did not restore it: {exc}")
        finally:
            os.unlink(staged)

    def _save(self, stream: Stream) -> None:
        """A hot prefix: the slot's KV cache to the disk tier."""
        assert self.disk is not None
        with self.disk_lock:
            if not self.disk.wants(stream.held, stream.reused):
                return
        name = f"save-{stream.slot}.slot"
        staged = os.path.join(self.server.slot_dir, name)
        try:
            self.server.post(f"/slots/{stream.slot}?action=save", {"filename": name})
            with self.disk_lock:
                self.disk.store(stream.held, Path(staged))
        except (PluginError, OSError, httpx.HTTPError) as exc:
            log.warning("llama-server: saving slot %d failed: %s", stream.slot, exc)
        finally:
            if os.path.exists(staged):
                os.unlink(staged)

    def _stream(self, stream: Stream) -> None:
        if stream.restore:
            self._restore(stream)
        try:
            out = self._exchange(stream)
        except OSError as exc:  # no connection, a broken one, or a node that stalled (timeout)
            if not stream.cancelled:
                self._broken(stream, exc)
                return
            out = Summary()
        except Exception as exc:
            self.events.put(Finished(stream, exc))
            return
        failure = self._refusal(stream, out)
        if failure is not None:
            self.events.put(Finished(stream, failure))
            return
        if out.final is None and not stream.cancelled:  # the response ended before its end
            self._broken(stream, OSError("the response ended early"))
            return
        stream.text, stream.tokens, stream.first, stream.logprobs = [out.text], out.tokens, out.first, out.logprobs
        result = self._result(stream, out.final)
        if stream.tokens:  # the whole prompt went through the slot
            stream.held = stream.ids
            stream.reused = result.cached_tokens
        if self.disk is not None and stream.held and not stream.cancelled:
            # Before the result: a worker asked to stop exits at once, and this happens once
            # per hot prefix (its first reuse); the first token was not held back.
            self._save(stream)
        self.events.put(Finished(stream, result))

    def _exchange(self, stream: Stream) -> Summary:
        """Send the request on a connection of its own (unless step() did), then read the
        response (with nodes, a stalled node is a read timeout)."""
        sock = stream.sock or self._send(stream)
        with stream.lock:
            stream.sock = sock
            if stream.cancelled:  # before it was sent, or before this thread began
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        try:
            return self._receive(stream, sock)
        finally:
            with stream.lock:
                stream.sock = None
            sock.close()

    def _send(self, stream: Stream) -> socket.socket:
        """A connection of the request's own, with the request written on it."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(CONNECT_TIMEOUT_S)
            sock.connect(self.server.socket)
            sock.sendall(request_bytes(stream.body))
        except BaseException:
            sock.close()
            raise
        return sock

    def _receive(self, stream: Stream, sock: socket.socket) -> Summary:
        decoder = SseDecoder(stream.req)
        sock.settimeout(rpc.stall_s() if self.nodes else None)
        while not decoder.finished:
            data = sock.recv(65536)
            for text, logprobs in decoder.feed(data):
                stream.on_text(text, logprobs)
            if not data:
                break
            if stream.should_stop():  # between tokens: also the worker's heartbeat
                stream.cancel()
                break
        return decoder.result()

    def _refusal(self, stream: Stream, out: Summary) -> Exception | None:
        if out.status not in (0, 200):
            if out.status == 400 and stream.req.format is not None and ("json_schema" in out.body or "grammar" in out.body):
                return _unenforceable(out.body)
            return PluginError(f"llama-server refused the request ({out.status}): {out.body[:500]}", backend="llamacpp")
        if out.error is not None:
            return PluginError(f"llama-server: {out.error}", backend="llamacpp")
        return None

    def _broken(self, stream: Stream, exc: Exception) -> None:
        if self.nodes:
            self.events.put(Finished(stream, self._node_lost(exc)))
        elif not self.server.stopped(wait=1.0):
            self.events.put(Finished(stream, PluginError(f"the stream from llama-server broke: {exc}", backend="llamacpp")))
        # else: the server's watcher ends the worker; the daemon fails the requests (WorkerCrashed)

    def _node_lost(self, exc: Exception) -> Exception:
        """A stream with compute nodes broke or stalled: ``NodeLost``, and llama-server is
        ended when it still runs (a stalled node would hold it forever)."""
        if self.server.stopped(wait=0.2):
            said = [line for line in self.server.tail if "rpc" in line.lower() or "recv failed" in line.lower()][-2:]
            what = f"llama-server ended ({self.server.exit_status()}): {' | '.join(said) or self.server.stderr_tail(2)}"
        else:
            what = f"no data from llama-server in {rpc.stall_s():g} s ({type(exc).__name__})"
            self.server.process.kill()
        return rpc.node_lost(self.nodes, what)

    def _result(self, stream: Stream, final: dict[str, Any] | None) -> EngineResult:
        finish: FinishReason = "cancelled"
        timings: dict[str, Any] = {}
        stop_sequence = None
        if final is not None and not (stream.cancelled and final.get("stop_type") == "none"):
            finish = "length" if final.get("stop_type") == "limit" else "stop"
            if final.get("stop_type") == "word":  # one of the request's stop strings ended it
                stop_sequence = final.get("stopping_word") or None
            timings = final.get("timings") or {}
            stream.tokens = int(final.get("tokens_predicted", stream.tokens))
        prefill = timings.get("prompt_per_second")
        decode = timings.get("predicted_per_second")
        return EngineResult(
            text="".join(stream.text),
            finish_reason=finish,
            prompt_tokens=len(stream.ids),
            completion_tokens=stream.tokens,
            cached_tokens=int(timings.get("cache_n") or 0),
            ttft_ms=(stream.first - stream.joined) * 1000 if stream.tokens and stream.first else None,
            prefill_tps=float(prefill) if prefill and prefill > 0 else None,
            decode_tps=float(decode) if decode and decode > 0 and stream.tokens > 1 else None,
            draft_tokens=int(timings["draft_n"]) if "draft_n" in timings else None,
            draft_accepted=int(timings["draft_n_accepted"]) if "draft_n_accepted" in timings else None,
            logprobs=stream.logprobs if stream.req.top_logprobs is not None else None,
            stop_sequence=stop_sequence,
        )

    # -- embeddings -------------------------------------------------------------------

    def embed(self, req: EmbedRequest) -> EmbedOutput:
        if self.embedder is None:
            self.embedder = Embedder(self.binary, self.server.model, self.threads)
            self.embedder.server.watch(lambda reason: self.on_fatal(reason))
        return self.embedder.embed(req)


def _unenforceable(body: str) -> UnsupportedParameter:
    """llama-server could not turn the format into its grammar (a schema feature its
    converter lacks, e.g. ``items: false``): refused by name, never relaxed."""
    try:
        why = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        why = body[:500]
    return UnsupportedParameter(f"the llama.cpp backend cannot enforce this format: {why}", param="format", backend="llamacpp")


def _exit_worker(reason: str) -> None:
    """llama-server died under the worker: say why on stderr and end the worker, so the
    daemon's supervision fails its requests (``WorkerCrashed``) and may restart it."""
    log.error("%s", reason)
    sys.stderr.flush()
    os._exit(70)
