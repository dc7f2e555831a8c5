"""Structured output on MLX: an llguidance matcher per sequence as an mlx-lm logits
processor (constrained and free sequences share a batch), and per-token logprobs."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np
from llguidance import LLMatcher, LLTokenizer
from llguidance.numpy import allocate_token_bitmask, fill_next_token_bitmask

from impetusd.plugin_api import PluginError, TokenLogprob, TopLogprob


def build_tokenizer(hf: Any, n_vocab: int | None, eos: list[int]) -> LLTokenizer:
    """llguidance's view of the model's tokenizer (about a second: built once per engine)."""
    from llguidance.hf import from_tokenizer

    return from_tokenizer(hf, n_vocab=n_vocab, eos_token=eos or None)


class GrammarProcessor:
    """Masks every token the grammar does not allow next. mlx-lm calls it once per
    generated token with the sequence so far: from the second call on, the last token
    is the one sampled after the previous mask, and the matcher consumes it. End of
    sequence is allowed only where the grammar accepts."""

    def __init__(self, tokenizer: LLTokenizer, grammar: str) -> None:
        self.matcher = LLMatcher(tokenizer, grammar)
        if self.matcher.is_error():
            raise PluginError(f"the grammar did not compile: {self.matcher.get_error()}", backend="mlx")
        self.mask = allocate_token_bitmask(1, tokenizer.vocab_size)
        self.calls = 0

    def __call__(self, tokens: mx.array, logits: mx.array) -> mx.array:
        if self.calls:
            self.matcher.consume_token(int(np.array(tokens.reshape(-1)[-1:])[0]))
        self.calls += 1
        fill_next_token_bitmask(self.matcher, self.mask, 0)
        bits = np.unpackbits(self.mask.view(np.uint8), bitorder="little")
        width = logits.shape[-1]
        allowed = np.zeros(width, dtype=np.bool_)
        n = min(width, bits.shape[0])
        allowed[:n] = bits[:n].astype(np.bool_)
        return mx.where(mx.array(allowed), logits, mx.array(-float("inf"), dtype=logits.dtype))


def token_logprob(tokenizer: LLTokenizer, token: int, logprobs: mx.array, top: int) -> TokenLogprob:
    """The sampled ``token``'s log-probability and the ``top`` most likely tokens, most likely first."""
    vec = logprobs.reshape(-1)
    alternatives: list[TopLogprob] = []
    if top > 0:
        order = np.array(mx.argsort(-vec)[:top])
        values = np.array(vec[mx.array(order)].astype(mx.float32))
        alternatives = [_top(tokenizer, int(t), float(v)) for t, v in zip(order, values, strict=True) if v > -np.inf]
    own = _top(tokenizer, token, float(np.array(vec[token : token + 1].astype(mx.float32))[0]))
    return TokenLogprob(token=own.token, logprob=own.logprob, bytes=own.bytes, top_logprobs=alternatives)


def _top(tokenizer: LLTokenizer, token: int, value: float) -> TopLogprob:
    raw = tokenizer.decode_bytes([token]) if token < tokenizer.vocab_size else b""
    return TopLogprob(token=raw.decode("utf-8", errors="replace"), logprob=min(value, 0.0), bytes=list(raw))
