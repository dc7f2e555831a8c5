"""Continuous batching for the MLX engine with mlx-lm's ``BatchGenerator``.

Requests join and leave between steps. One step decodes one token for every
sequence in the batch and prefills one chunk of each prompt that is joining,
so a long prompt never stalls the streams already decoding. A request whose
options cannot share a batch (a ``seed`` with sampling: MLX's random state is
global) waits until the batch drains and then runs alone.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import msgspec
from mlx_lm.generate import BatchGenerator
from mlx_lm.sample_utils import make_sampler

from impetusd.plugin_api import EngineResult, FinishReason, GenerateRequest, TextSink, TokenLogprob

from .prompt_cache import PromptCaches
from .stops import StopScanner

log = logging.getLogger("impetus_mlx")

DEFAULT_MAX_BATCH = 8  # also declared as BackendSpec.max_batch in __init__.py


def runs_alone(req: GenerateRequest) -> bool:
    """A seeded sampling request needs MLX's global random state to itself."""
    return req.sampling.seed is not None and req.sampling.temperature > 0


class Job:
    """One request from submission to its result."""

    def __init__(self, req: GenerateRequest, on_text: TextSink, should_stop: Callable[[], bool], on_done: Callable[[EngineResult | Exception], None]) -> None:
        self.req = req
        self.on_text = on_text
        self.should_stop = should_stop
        self.on_done = on_done
        self.submitted = time.monotonic()
        self.joined: float | None = None
        self.first: float | None = None
        self.last: float | None = None
        self.ids: list[int] = []
        self.cached = 0
        self.tokens = 0
        self.batch_size = 0
        self.scanner = StopScanner(req.sampling.stop)
        self.detok: Any = None
        self.uid: int | None = None
        self.logprobs: list[TokenLogprob] | None = [] if req.top_logprobs is not None else None
        self.streamed = 0  # logprobs already sent with text

    def send(self, text: str) -> None:
        """Text to the worker, with the logprobs of the tokens decoded since the last call."""
        if self.logprobs is None:
            if text:
                self.on_text(text)
            return
        fresh = self.logprobs[self.streamed :]
        self.streamed = len(self.logprobs)
        if text or fresh:
            self.on_text(text, fresh)


class BatchedEngine(Protocol):
    """What the batch uses of its engine (``engine.MLXEngine``), named here so that
    this module need not import the engine that imports it."""

    model: Any
    tokenizer: Any  # mlx-lm's TokenizerWrapper
    context_length: int

    def prompt_ids(self, req: GenerateRequest) -> list[int]: ...
    def logits_processors(self, req: GenerateRequest, window: int) -> list[Any]: ...
    def processors(self, req: GenerateRequest, window: int) -> list[Any]: ...
    def logprob(self, req: GenerateRequest, token: int, logprobs: Any) -> TokenLogprob: ...
    def trim(self, cache: list[Any], n: int) -> None: ...
    def generate(self, req: GenerateRequest, on_text: TextSink, should_stop: Callable[[], bool], ids: list[int] | None = None) -> EngineResult: ...


class BatchScheduler:
    """The engine's batch: admission, one step at a time, results."""

    def __init__(self, engine: BatchedEngine, prefill_chunk: int, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        self.engine = engine
        self.default_max_batch = max_batch
        self.default_prefill_chunk = prefill_chunk
        self.max_batch = max_batch
        self.prefill_chunk = prefill_chunk
        self.waiting: deque[Job] = deque()
        self.running: dict[int, Job] = {}  # BatchGenerator uid -> job
        self.caches = PromptCaches([])
        self.gen: BatchGenerator | None = None
        self.samplers: dict[tuple[float, float, float, int], Any] = {}

    # --- limits -------------------------------------------------------------
    def tune(self, max_batch: int | None, prefill_chunk: int | None) -> None:
        """Called from the worker's reader thread; read by ``step`` between steps."""
        self.max_batch = max(1, max_batch) if max_batch is not None else self.default_max_batch
        self.prefill_chunk = max(1, prefill_chunk) if prefill_chunk is not None else self.default_prefill_chunk

    def _generator(self) -> BatchGenerator:
        if self.gen is None:
            eos = sorted(self.engine.tokenizer.eos_token_ids)
            self.gen = BatchGenerator(
                self.engine.model,
                stop_tokens=[[t] for t in eos],
                completion_batch_size=256,  # admission is ours (max_batch)
                prefill_batch_size=256,
                prefill_step_size=self.prefill_chunk,
            )
        gen = self.gen
        if gen.prefill_step_size != self.prefill_chunk:
            gen.prefill_step_size = self.prefill_chunk
            gen._prompt_batch.prefill_step_size = self.prefill_chunk
        return gen

    # --- the BatchEngine protocol -------------------------------------------
    def submit(self, req: GenerateRequest, on_text: TextSink, should_stop: Callable[[], bool], on_done: Callable[[EngineResult | Exception], None]) -> None:
        job = Job(req, on_text, should_stop, on_done)
        job.ids = self.engine.prompt_ids(req)  # raises ContextLengthExceeded / InvalidParams at once
        self.engine.logits_processors(req, 0)  # validates logit_bias before it queues
        self.waiting.append(job)

    def busy(self) -> bool:
        return bool(self.waiting or self.running)

    def step(self) -> None:
        try:
            self._step()
        except Exception as exc:  # the batch failed (e.g. allocation): every request in it gets the error
            log.exception("batch step failed")
            self._fail_all(exc)

    def _step(self) -> None:
        self._admit()
        if not self.running:
            return
        _, responses = self._generator().next()
        now = time.monotonic()
        size = len(responses)
        for r in responses:
            job = self.running.get(r.uid)
            if job is None:
                continue
            job.batch_size = max(job.batch_size, size)
            job.tokens += 1
            if job.first is None:
                job.first = now
            job.last = now
            if job.logprobs is not None and r.finish_reason != "stop":
                job.logprobs.append(self.engine.logprob(job.req, r.token, r.logprobs))
            if r.finish_reason == "stop":  # an end-of-sequence token: not part of the text
                self._finish(job, "stop", r.prompt_cache, r.all_tokens)
                continue
            job.detok.add_token(r.token)
            if r.finish_reason == "length":
                job.detok.finalize()
            emit, hit = job.scanner.feed(job.detok.last_segment)
            if emit:
                job.send(emit)
            if hit:
                self._finish_removed(job, "stop")
            elif r.finish_reason == "length":
                self._finish(job, "length", r.prompt_cache, r.all_tokens)
        for job in list(self.running.values()):
            if job.should_stop():
                self._finish_removed(job, "cancelled")

    # --- internals ----------------------------------------------------------
    def _admit(self) -> None:
        for job in [j for j in self.waiting if j.should_stop()]:  # cancelled before it started
            self.waiting.remove(job)
            job.joined = time.monotonic()
            self._result(job, "cancelled")
        if not self.waiting:
            return
        if runs_alone(self.waiting[0].req):
            if not self.running:  # the batch has drained: run it on its own
                self._run_alone(self.waiting.popleft())
            return
        gen = None
        while self.waiting and len(self.running) < self.max_batch and not runs_alone(self.waiting[0].req):
            job = self.waiting.popleft()
            gen = gen or self._generator()
            try:
                self._join(gen, job)
            except Exception as exc:  # this request cannot start (e.g. allocation); the batch goes on
                job.on_done(exc)

    def _join(self, gen: BatchGenerator, job: Job) -> None:
        req, ids = job.req, job.ids
        cache, cached = self.caches.fetch(ids)
        if cached >= len(ids):  # the whole prompt is cached: recompute its last token for the logits
            cached = len(ids) - 1
            self.engine.trim(cache, 1)
        job.cached = cached
        job.joined = time.monotonic()
        job.detok = self.engine.tokenizer.detokenizer
        max_tokens = min(req.sampling.max_tokens, self.engine.context_length - len(ids))
        sampler = self._sampler(req)
        processors = self.engine.processors(req, len(ids) + max_tokens)
        (uid,) = gen.insert(
            [ids[cached:]],
            max_tokens=[max_tokens],
            caches=[cache] if cache is not None else None,
            all_tokens=[ids[:cached]],
            samplers=[sampler],
            logits_processors=[processors],
        )
        job.uid = uid
        self.running[uid] = job

    def _sampler(self, req: GenerateRequest) -> Any:
        """One sampler object per distinct setting: mlx-lm samples a batch in one
        call when its sequences share the sampler object, row by row otherwise."""
        s = req.sampling
        key = (s.temperature, s.top_p, s.min_p, s.top_k)
        sampler = self.samplers.get(key)
        if sampler is None:
            if len(self.samplers) >= 64:
                self.samplers.clear()
            sampler = self.samplers[key] = make_sampler(temp=s.temperature, top_p=s.top_p, min_p=s.min_p, top_k=s.top_k)
        return sampler

    def _run_alone(self, job: Job) -> None:
        job.joined = time.monotonic()
        try:
            result = self.engine.generate(job.req, job.on_text, job.should_stop, ids=job.ids)
        except Exception as exc:
            job.on_done(exc)
            return
        job.on_done(msgspec.structs.replace(result, batch_size=1, batch_limit=self.max_batch, queued_ms=(job.joined - job.submitted) * 1000))

    def _finish_removed(self, job: Job, reason: FinishReason) -> None:
        """End a job the generator has not finished itself (stop string, cancel)."""
        assert self.gen is not None and job.uid is not None
        try:
            caches = self.gen.remove([job.uid], return_prompt_caches=True)
        except Exception:  # its cache cannot be extracted (mid-prefill): leave without it
            log.debug("no prompt cache from a removed sequence", exc_info=True)
            self.gen.remove([job.uid])
            caches = {}
        cache, tokens = caches.get(job.uid, (None, None))
        self._finish(job, reason, cache, tokens)

    def _finish(self, job: Job, reason: FinishReason, cache: Any, tokens: list[int] | None) -> None:
        assert job.uid is not None
        self.running.pop(job.uid, None)
        if cache is not None and tokens:
            try:
                self.caches.store(list(tokens), cache)
            except Exception:  # a cache that cannot be kept costs a future prefill, nothing more
                log.exception("could not keep the prompt cache")
        self._result(job, reason)

    def _result(self, job: Job, reason: FinishReason) -> None:
        job.send(job.scanner.flush())
        joined = job.joined or job.submitted
        prefilled = len(job.ids) - job.cached
        ttft = (job.first - joined) if job.first is not None else None
        decode = (job.last - job.first) if job.first is not None and job.last is not None else 0.0
        job.on_done(
            EngineResult(
                text=job.scanner.text,
                finish_reason=reason,
                stop_sequence=job.scanner.matched,
                prompt_tokens=len(job.ids),
                completion_tokens=job.tokens,
                cached_tokens=job.cached,
                ttft_ms=None if ttft is None else ttft * 1000,
                prefill_tps=prefilled / ttft if ttft and prefilled > 0 else None,
                decode_tps=(job.tokens - 1) / decode if job.tokens > 1 and decode > 0 else None,
                batch_size=job.batch_size or None,
                batch_limit=self.max_batch,
                queued_ms=(joined - job.submitted) * 1000,
                logprobs=job.logprobs,
            )
        )

    def _fail_all(self, exc: Exception) -> None:
        jobs = [j for j in self.running.values() if j.uid is not None]
        self.running.clear()
        self.gen = None  # a fresh generator for whatever comes next
        for job in jobs:
            job.on_done(exc)
