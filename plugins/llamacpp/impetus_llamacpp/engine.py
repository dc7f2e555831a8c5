"""The llama.cpp engine inside a worker: a GGUF model through llama-cpp-python,
driven token by token (``Llama.eval`` + a llama.cpp sampler chain), so streaming,
cancellation, stop sequences and prompt-prefix reuse are all in Impetus's hands."""

from __future__ import annotations

import codecs
import ctypes
import logging
import time
from collections.abc import Callable
from typing import Any

import llama_cpp
from llama_cpp import Llama

from impetusd.plugin_api import (
    ContextLengthExceeded,
    EmbedOutput,
    EmbedRequest,
    EngineInfo,
    EngineResult,
    FinishReason,
    GenerateRequest,
    InvalidModelFile,
    ModelSpec,
    StopScanner,
    UnsupportedFormat,
)

from .embed import Embedder
from .prompt import Prompter
from .sampling import Sampler
from .threads import ThreadPolicy

log = logging.getLogger(__name__)

# A context as long as the model's, up to this many tokens: the KV cache is allocated
# up front (8,192 tokens of SmolLM2-135M: ~190 MB), so models trained on 128k tokens
# would otherwise reserve gigabytes.
MAX_CONTEXT = 8192
# Prompt tokens per prefill step: 1,024 tokens prefilled at the same rate (within noise)
# in steps of 128 or 512 on CPU here; small steps let a cancel or a disconnect stop a
# long prompt within a second.
PREFILL_CHUNK = 128
GGML_LOG_LEVEL_ERROR = 4  # ggml.h: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5


@llama_cpp.llama_log_callback
def _llama_log(level: int, text: bytes, user_data: Any) -> None:
    """llama.cpp's own log: its errors go to the worker's log, the rest is dropped."""
    if level == GGML_LOG_LEVEL_ERROR:
        log.error("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())


class LlamaCppEngine:
    def __init__(self, llm: Llama, load_ms: float, details: dict[str, Any], path: str, threads: ThreadPolicy) -> None:
        self.llm = llm
        self.threads = threads
        self.n_threads = threads.last
        self.path = path
        self.embedder: Embedder | None = None  # made on the first embed request
        self.load_ms = load_ms
        self.details = details
        self.prompter = Prompter(llm)
        self.vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self.n_vocab = llm.n_vocab()
        self.pieces: dict[int, bytes] = {}

    @classmethod
    def load(cls, spec: ModelSpec) -> LlamaCppEngine:
        if spec.format != "gguf":
            raise UnsupportedFormat(f"the llama.cpp backend runs GGUF models, not {spec.format!r}", format=spec.format)
        started = time.monotonic()
        llama_cpp.llama_log_set(_llama_log, ctypes.c_void_p(0))
        trained = int(spec.metadata.get("context_length") or 0)
        n_ctx = min(trained, MAX_CONTEXT) if trained else MAX_CONTEXT
        threads = ThreadPolicy()
        try:
            llm = Llama(
                model_path=spec.path,
                n_ctx=n_ctx,
                n_batch=512,
                n_threads=threads.last,
                n_threads_batch=threads.last,
                verbose=False,
            )
        except ValueError as exc:  # "Failed to load model from file": llama.cpp refused it
            raise InvalidModelFile(f"{spec.path}: llama.cpp cannot load this GGUF ({exc})", path=spec.path) from exc
        details = {
            "architecture": llm.metadata.get("general.architecture"),
            "context_length": llm.n_ctx(),
            "trained_context_length": trained or None,
            "vocab_size": llm.n_vocab(),
            "threads": threads.fixed or f"auto (up to {threads.cores})",
            "llama_cpp_python": llama_cpp.__version__,
            "device": "cpu",  # n_gpu_layers is 0: no layers offloaded (to Metal on Apple Silicon either)
        }
        engine = cls(llm, 0.0, details, spec.path, threads)
        engine.warm_up()
        engine.load_ms = (time.monotonic() - started) * 1000
        return engine

    def warm_up(self) -> None:
        """One token through the model so the first request does not pay for setup."""
        self.llm.eval(self.prompter.tokenize("Hi", bos=False)[:1] or [0])
        self.llm.reset()

    def info(self) -> EngineInfo:
        return EngineInfo(backend="llamacpp", load_ms=self.load_ms, context_length=self.llm.n_ctx(), details=self.details)

    def close(self) -> None:
        self.llm.close()
        if self.embedder is not None:
            self.embedder.llm.close()

    def embed(self, req: EmbedRequest) -> EmbedOutput:
        n = self.threads.pick()
        if self.embedder is None:
            self.embedder = Embedder(self.path, n)
        llama_cpp.llama_set_n_threads(self.embedder.llm.ctx, n, n)
        return self.embedder.embed(req)

    def use_threads(self) -> None:
        n = self.threads.pick()
        if n != self.n_threads:
            log.debug("llama.cpp threads: %d (was %d)", n, self.n_threads)
            llama_cpp.llama_set_n_threads(self.llm.ctx, n, n)
            self.n_threads = n

    def piece(self, token: int) -> bytes:
        """The bytes a token stands for (control tokens: none), cached per token."""
        known = self.pieces.get(token)
        if known is None:
            size = 64
            while True:
                buf = ctypes.create_string_buffer(size)
                n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, size, 0, False)
                if n >= 0:
                    break
                size = -n  # too small: llama.cpp says how much it needs
            known = self.pieces[token] = buf.raw[:n]
        return known

    def reuse_prefix(self, ids: list[int]) -> int:
        """Keep the KV cache of the longest prefix this prompt shares with what the
        context holds (the previous prompt and its answer), leaving at least one
        token to evaluate; the number of prompt tokens reused."""
        llm = self.llm
        common = Llama.longest_token_prefix(llm.input_ids[: llm.n_tokens].tolist(), ids)
        keep = min(common, len(ids) - 1)
        memory = llama_cpp.llama_get_memory(llm.ctx)
        if keep > 0 and llama_cpp.llama_memory_seq_rm(memory, 0, keep, -1):
            llm.n_tokens = keep
            return keep
        llm.reset()  # nothing shared, or a model whose memory cannot be cut (recurrent)
        return 0

    def generate(self, req: GenerateRequest, on_text: Callable[[str], None], should_stop: Callable[[], bool]) -> EngineResult:
        started = time.monotonic()
        llm = self.llm
        ids = self.prompter.ids(req)
        n_ctx = llm.n_ctx()
        if len(ids) >= n_ctx:
            raise ContextLengthExceeded(
                f"the prompt has {len(ids)} tokens; the model's context is {n_ctx}",
                prompt_tokens=len(ids),
                context_length=n_ctx,
            )
        max_tokens = min(req.max_tokens, n_ctx - len(ids))
        self.use_threads()
        sampler = Sampler(req, self.n_vocab, window=n_ctx)
        try:
            return self._run(req, ids, max_tokens, sampler, started, on_text, should_stop)
        finally:
            sampler.close()

    def _run(
        self,
        req: GenerateRequest,
        ids: list[int],
        max_tokens: int,
        sampler: Sampler,
        started: float,
        on_text: Callable[[str], None],
        should_stop: Callable[[], bool],
    ) -> EngineResult:
        llm = self.llm
        cached = self.reuse_prefix(ids)
        sampler.seen(ids)
        prefill_started = time.monotonic()
        for i in range(cached, len(ids), PREFILL_CHUNK):
            if i > cached and should_stop():
                return EngineResult(text="", finish_reason="cancelled", prompt_tokens=len(ids), completion_tokens=0, cached_tokens=cached)
            llm.eval(ids[i : i + PREFILL_CHUNK])
        scanner = StopScanner(req.stop)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        finish: FinishReason = "length"
        tokens = 0
        first = last = 0.0
        while tokens < max_tokens:
            token = sampler.sample(llm.ctx)
            tokens += 1
            last = time.monotonic()
            if tokens == 1:
                first = last
            if llama_cpp.llama_vocab_is_eog(self.vocab, token):
                finish = "stop"
                break
            emit, hit = scanner.feed(decoder.decode(self.piece(token)))
            if emit:
                on_text(emit)
            if hit:
                finish = "stop"
                break
            if tokens == max_tokens:
                break
            if should_stop():
                finish = "cancelled"
                break
            llm.eval([token])
        if not scanner.hit:
            scanner.feed(decoder.decode(b"", final=True))
        rest = scanner.flush()
        if rest:
            on_text(rest)
        prefilled = len(ids) - cached
        return EngineResult(
            text=scanner.text,
            finish_reason=finish,
            prompt_tokens=len(ids),
            completion_tokens=tokens,
            cached_tokens=cached,
            ttft_ms=(first - started) * 1000 if tokens else None,
            prefill_tps=prefilled / (first - prefill_started) if tokens and first > prefill_started else None,
            decode_tps=(tokens - 1) / (last - first) if tokens > 1 and last > first else None,
        )
