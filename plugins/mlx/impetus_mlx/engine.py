"""The MLX engine inside a worker: load once, generate with mlx-lm, stream text."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import mlx.core as mx
from mlx_lm import stream_generate
from mlx_lm.models.cache import make_prompt_cache, trim_prompt_cache
from mlx_lm.sample_utils import make_logits_processors, make_sampler
from mlx_lm.tokenizer_utils import TokenizerWrapper

from impetusd.plugin_api import (
    ContextLengthExceeded,
    DetokenizeOutput,
    DetokenizeRequest,
    EmbedOutput,
    EmbedRequest,
    EngineInfo,
    EngineResult,
    FinishReason,
    GenerateRequest,
    InvalidParams,
    ModelSpec,
    PromptCacheTier,
    TextSink,
    TokenizeOutput,
    TokenizeRequest,
    TokenLogprob,
    UnsupportedFormat,
    grammar_for,
    reasoning_opened,
    template_inputs,
)

from . import folder_model, gguf_model
from .batching import BatchScheduler
from .constrain import GrammarProcessor, token_logprob
from .constrain import build_tokenizer as build_lltokenizer
from .cpu import widen_for_blas
from .device import device_memory
from .prompt_cache import PromptCaches, cache_tokens
from .stops import StopScanner
from .tokenizer import build_tokenizer, eos_ids


class _PrefillStopped(Exception):
    """Raised from mlx-lm's prompt-progress callback to leave prefill between chunks."""


class _Output:
    """One ``generate`` call's output: the text through the stop scanner to
    ``on_text`` (with the logprobs not sent yet, when asked for) and the figures its
    result reports."""

    def __init__(self, stop: list[str], on_text: TextSink, with_logprobs: bool, started: float) -> None:
        self.scanner = StopScanner(stop)
        self.on_text = on_text
        self.logprobs: list[TokenLogprob] | None = [] if with_logprobs else None
        self.streamed = 0  # logprobs already sent
        self.started = started
        self.ttft_ms: float | None = None
        self.last: Any = None  # stream_generate's latest response
        self.tokens = 0

    def send(self, text: str) -> None:
        if self.logprobs is None:
            if text:
                self.on_text(text)
            return
        fresh, self.streamed = self.logprobs[self.streamed :], len(self.logprobs)
        if text or fresh:
            self.on_text(text, fresh)

    def result(self, ids: list[int], finish: FinishReason, cached: int) -> EngineResult:
        last, tokens = self.last, self.tokens
        return EngineResult(
            text=self.scanner.text,
            finish_reason=finish,
            stop_sequence=self.scanner.matched,
            prompt_tokens=len(ids),
            completion_tokens=tokens,
            cached_tokens=cached,
            ttft_ms=self.ttft_ms,
            prefill_tps=last.prompt_tps if last else None,
            decode_tps=last.generation_tps if last and tokens > 1 else None,
            logprobs=self.logprobs,
        )


def prefill_chunk(variant: str = "") -> int:
    """Prompt tokens per prefill step: small on CPU, where chunking costs nothing
    with quantized weights (~13 tok/s at 32 or 512 here), so a cancelled prompt
    stops within seconds; 128 with float32 weights on OpenBLAS (~220 tok/s at 128
    or 512, ~140 at 32)."""
    if mx.default_device() == mx.gpu:
        return 512
    return 128 if variant == "f32" else 32


class MLXEngine:
    def __init__(
        self, model: Any, tokenizer: TokenizerWrapper, add_bos: bool, context_length: int, load_ms: float, details: dict[str, Any], variant: str = ""
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.add_bos = add_bos
        self.context_length = context_length
        self.load_ms = load_ms
        self.details = details
        self.default_prefill_step = self.prefill_step = prefill_chunk(variant)
        self.batch = BatchScheduler(self, self.prefill_step)
        self.cache_variant = variant  # "f32" when the weights were widened; prompt caches are per variant
        self._lltok: Any = None
        self.opened: list[bool | None] | None = None  # reasoning_opened(), probed on the first info()

    # --- continuous batching (BatchEngine) and tuning (TunableEngine) ------------
    def submit(self, req: GenerateRequest, on_text: TextSink, should_stop: Callable[[], bool], on_done: Callable[[EngineResult | Exception], None]) -> None:
        self.batch.submit(req, on_text, should_stop, on_done)

    def busy(self) -> bool:
        return self.batch.busy()

    def step(self) -> None:
        self.batch.step()

    def tune(self, tuning: Any) -> None:
        """``worker.tune`` (called from the worker's reader thread): batch size and
        prefill chunk limits, the chunk never above this device's default; None
        restores the default. Applied between steps."""
        chunk = tuning.prefill_chunk
        self.prefill_step = self.default_prefill_step if chunk is None else max(1, min(chunk, self.default_prefill_step))
        self.batch.tune(tuning.max_batch, None if chunk is None else self.prefill_step)

    def use_cache_tiers(self, tiers: list[tuple[str, PromptCacheTier]]) -> None:
        self.batch.caches = PromptCaches(tiers)

    def trim(self, cache: list[Any], n: int) -> None:
        trim_prompt_cache(cache, n)

    @classmethod
    def load(cls, spec: ModelSpec, shard: Callable[[Any], None] | None = None) -> MLXEngine:
        """``shard``: this process's part of a model split across ranks (sharded.py)."""
        started = time.monotonic()
        if spec.format in folder_model.FORMATS:  # mlx-lm and Hugging Face folders
            model, wrapper, add_bos, details = folder_model.load(spec.path)
        elif spec.format == "gguf":
            weights, meta = gguf_model.read(spec.path)
            model, details = gguf_model.build_model(weights, meta)
            hf = build_tokenizer(meta)
            wrapper, add_bos = TokenizerWrapper(hf, eos_token_ids=eos_ids(meta)), hf.add_bos
        else:
            raise UnsupportedFormat(f"the MLX backend cannot load {spec.format!r} models", format=spec.format)
        variant = widen_for_blas(model, details, shard)
        engine = cls(model, wrapper, add_bos, int(details["context_length"]), 0.0, {**details, **device_memory()}, variant)
        engine.load_ms = (time.monotonic() - started) * 1000
        return engine

    def warm_up(self) -> None:
        """One token through the model so the first request does not pay for setup."""
        ids = self.tokenizer.encode("Hi", add_special_tokens=False) or [0]
        for _ in stream_generate(self.model, self.tokenizer, ids, max_tokens=1, sampler=make_sampler(0.0)):
            pass

    def _reasoning_opened(self) -> list[bool | None]:
        if self.opened is None:
            tok = self.tokenizer
            template = tok.chat_template if isinstance(tok.chat_template, str) else None
            self.opened = reasoning_opened(lambda m, extra: str(tok.apply_chat_template(m, add_generation_prompt=True, tokenize=False, **extra)), template)
        return self.opened

    def info(self) -> EngineInfo:
        return EngineInfo(
            backend="mlx",
            load_ms=self.load_ms,
            context_length=self.context_length,
            reasoning_opened=self._reasoning_opened(),
            details={
                **self.details,
                "device": str(mx.default_device()),
                "max_batch": self.batch.max_batch,
                "prefill_chunk": self.prefill_step,
            },
        )

    def encode(self, req: GenerateRequest) -> list[int]:
        tok = self.tokenizer
        if req.kind == "chat":
            template = tok.chat_template if isinstance(tok.chat_template, str) else None
            messages, extra = template_inputs(req, template, "mlx")
            if tok.chat_template is None:
                text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: " + req.prefix
                return tok.encode(text, add_special_tokens=self.add_bos)
            rendered = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **extra)
            return tok.encode(rendered + req.prefix, add_special_tokens=False)
        ids = tok.encode((req.prompt or "") + req.prefix, add_special_tokens=False)
        if self.add_bos and tok.bos_token_id is not None:
            ids = [tok.bos_token_id, *ids]
        return ids

    def logits_processors(self, req: GenerateRequest, window: int) -> list[Any]:
        """Penalties over everything seen so far (prompt and output), as OpenAI
        describes them; token ids in ``logit_bias`` must exist in the vocabulary."""
        s, vocab = req.sampling, int(self.details.get("vocab_size") or 0)
        if vocab:
            bad = [t for t in s.logit_bias if t >= vocab]
            if bad:
                raise InvalidParams(f"Invalid params: logit_bias names token {bad[0]}, past the vocabulary ({vocab})", field="logit_bias")
        return make_logits_processors(
            logit_bias=s.logit_bias or None,
            presence_penalty=s.presence_penalty or None,
            presence_context_size=window,
            frequency_penalty=s.frequency_penalty or None,
            frequency_context_size=window,
        )

    def lltokenizer(self) -> Any:
        """llguidance's tokenizer for this model (built on first use: about a second)."""
        if self._lltok is None:
            vocab = int(self.details.get("vocab_size") or 0) or None
            self._lltok = build_lltokenizer(self.tokenizer._tokenizer, vocab, sorted(self.tokenizer.eos_token_ids))
        return self._lltok

    def processors(self, req: GenerateRequest, window: int) -> list[Any]:
        """Penalties and bias, then the request's ``format`` as a token mask."""
        processors = self.logits_processors(req, window)
        if req.format is not None:
            processors.append(GrammarProcessor(self.lltokenizer(), grammar_for(req.format)))
        return processors

    def logprob(self, req: GenerateRequest, token: int, logprobs: Any) -> TokenLogprob:
        return token_logprob(self.lltokenizer(), token, logprobs, req.top_logprobs or 0)

    def embed_inputs(self, req: EmbedRequest) -> list[list[int]]:
        """Each text's tokens; ``ContextLengthExceeded`` for one longer than the context."""
        inputs = []
        for text in req.texts:
            ids = self.tokenizer.encode(text, add_special_tokens=False) or [self.tokenizer.eos_token_id or 0]
            if len(ids) > self.context_length:
                raise ContextLengthExceeded(
                    f"an input has {len(ids)} tokens; the model's context is {self.context_length}",
                    prompt_tokens=len(ids),
                    context_length=self.context_length,
                )
            inputs.append(ids)
        return inputs

    def embed(self, req: EmbedRequest) -> EmbedOutput:
        """Mean of the final normalised hidden states over the text's tokens,
        scaled to unit length."""
        vectors: list[list[float]] = []
        total = 0
        for ids in self.embed_inputs(req):
            hidden = self.model.model(mx.array([ids]))[0].astype(mx.float32)
            pooled = hidden.mean(axis=0)
            pooled = pooled / mx.maximum(mx.linalg.norm(pooled), 1e-12)
            vectors.append(pooled.tolist())
            total += len(ids)
        return EmbedOutput(vectors=vectors, prompt_tokens=total)

    def tokenize(self, req: TokenizeRequest) -> TokenizeOutput:
        """``text`` as it is (no special tokens), or ``messages`` as a chat's prompt is built."""
        if req.messages is not None:
            ids = self.encode(GenerateRequest(kind="chat", messages=req.messages))
        else:
            ids = self.tokenizer.encode(req.text or "", add_special_tokens=False)
        return TokenizeOutput(ids=ids, pieces=[self.tokenizer.decode([i]) for i in ids])

    def detokenize(self, req: DetokenizeRequest) -> DetokenizeOutput:
        vocab = int(self.details.get("vocab_size") or 0) or len(self.tokenizer.get_vocab())
        bad = [i for i in req.ids if i >= vocab]
        if bad:
            raise InvalidParams(f"Invalid params: token {bad[0]} is past the vocabulary ({vocab})", field="ids")
        return DetokenizeOutput(text=self.tokenizer.decode(req.ids), pieces=[self.tokenizer.decode([i]) for i in req.ids])

    def prompt_ids(self, req: GenerateRequest) -> list[int]:
        """The prompt's tokens; ``ContextLengthExceeded`` when no room is left to answer."""
        ids = self.encode(req)
        if self.context_length - len(ids) < 1:
            raise ContextLengthExceeded(
                f"the prompt has {len(ids)} tokens; the model's context is {self.context_length}",
                prompt_tokens=len(ids),
                context_length=self.context_length,
            )
        return ids

    def generate(self, req: GenerateRequest, on_text: TextSink, should_stop: Callable[[], bool], ids: list[int] | None = None) -> EngineResult:
        """One request on its own with ``stream_generate`` (seeded sampling, or
        callers that do not batch), using and feeding the prompt caches."""
        started = time.monotonic()
        ids = self.prompt_ids(req) if ids is None else ids
        s = req.sampling
        max_tokens = min(s.max_tokens, self.context_length - len(ids))
        cache, cached = self._reusable_cache(ids, penalised=bool(s.logit_bias or s.presence_penalty or s.frequency_penalty))
        if s.seed is not None:
            mx.random.seed(s.seed)
        sampler = make_sampler(temp=s.temperature, top_p=s.top_p, min_p=s.min_p, top_k=s.top_k)
        processors = self.processors(req, len(ids) + max_tokens)
        out = _Output(s.stop, on_text, req.top_logprobs is not None, started)

        def between_prefill_chunks(done: int, total: int) -> None:
            if done < total and should_stop():
                raise _PrefillStopped

        stream = stream_generate(
            self.model,
            self.tokenizer,
            ids[cached:],
            max_tokens=max_tokens,
            sampler=sampler,
            logits_processors=processors,
            prefill_step_size=self.prefill_step,
            prompt_progress_callback=between_prefill_chunks,
            prompt_cache=cache,
        )
        finish = self._drain(req, stream, out, should_stop)
        out.send(out.scanner.flush())
        held = cache_tokens(cache)
        if held >= len(ids):  # keep the prompt's part of the cache for later requests
            trim_prompt_cache(cache, held - len(ids))
            self.batch.caches.store(list(ids), cache)
        return out.result(ids, finish, cached)

    def _reusable_cache(self, ids: list[int], penalised: bool) -> tuple[Any, int]:
        """The prompt cache holding the longest cached prefix of ``ids`` (one token
        short of all of them, so there is a token to prefill) and that prefix's
        length, or a fresh cache and 0."""
        # stream_generate's penalty window sees only the tokens it prefills: no cache then
        cache, cached = self.batch.caches.fetch(ids) if not penalised else (None, 0)
        if cache is not None and cached >= len(ids):
            cached = len(ids) - 1
            trim_prompt_cache(cache, 1)
        if cache is None:
            cache = make_prompt_cache(self.model)
        return cache, cached

    def _drain(self, req: GenerateRequest, stream: Any, out: _Output, should_stop: Callable[[], bool]) -> FinishReason:
        """Feed ``stream``'s responses to ``out`` until a stop sequence, the end of the
        answer or ``should_stop``; the reason it ended."""
        try:
            for resp in stream:
                out.last = resp
                out.tokens = resp.generation_tokens
                if out.ttft_ms is None:
                    out.ttft_ms = (time.monotonic() - out.started) * 1000
                if out.logprobs is not None and resp.finish_reason != "stop":
                    out.logprobs.append(self.logprob(req, resp.token, resp.logprobs))
                emit, hit = out.scanner.feed(resp.text)
                out.send(emit)
                if hit:
                    return "stop"
                if resp.finish_reason is not None:
                    return "stop" if resp.finish_reason == "stop" else "length"
                if should_stop():
                    return "cancelled"
        except _PrefillStopped:
            return "cancelled"
        return "length"
