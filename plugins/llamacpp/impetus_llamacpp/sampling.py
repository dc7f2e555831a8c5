"""A llama.cpp sampler chain for one request, built from the request's parameters
with llama.cpp's own samplers (logit bias, penalties, top-k/p, min-p, temperature)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import llama_cpp

from impetusd.plugin_api import GenerateRequest, InvalidParams


class Sampler:
    """Owns a ``llama_sampler`` chain; ``close`` frees it."""

    def __init__(self, req: GenerateRequest, n_vocab: int, window: int) -> None:
        bad = [t for t in req.logit_bias if t >= n_vocab]
        if bad:
            raise InvalidParams(f"Invalid params: logit_bias names token {bad[0]}, past the vocabulary ({n_vocab})", field="logit_bias")
        self.penalised = bool(req.presence_penalty or req.frequency_penalty)
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        self.chain: Any = chain

        def add(sampler: Any) -> None:
            llama_cpp.llama_sampler_chain_add(chain, sampler)

        if req.logit_bias:
            biases = (llama_cpp.llama_logit_bias * len(req.logit_bias))(*(llama_cpp.llama_logit_bias(token=t, bias=b) for t, b in req.logit_bias.items()))
            add(llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(req.logit_bias), biases))
        if self.penalised:
            # OpenAI's formula (count * frequency + presence), over everything seen so far.
            add(llama_cpp.llama_sampler_init_penalties(n_vocab, window, 1.0, req.frequency_penalty, req.presence_penalty))
        if req.temperature == 0.0:
            add(llama_cpp.llama_sampler_init_greedy())
            return
        if req.top_k > 0:
            add(llama_cpp.llama_sampler_init_top_k(req.top_k))
        if req.top_p < 1.0:
            add(llama_cpp.llama_sampler_init_top_p(req.top_p, 1))
        if req.min_p > 0.0:
            add(llama_cpp.llama_sampler_init_min_p(req.min_p, 1))
        add(llama_cpp.llama_sampler_init_temp(req.temperature))
        seed = llama_cpp.LLAMA_DEFAULT_SEED if req.seed is None else req.seed & 0xFFFFFFFF
        if req.seed is not None and seed == llama_cpp.LLAMA_DEFAULT_SEED:
            seed -= 1  # llama.cpp reads this one value as "pick a random seed"
        add(llama_cpp.llama_sampler_init_dist(seed))

    def seen(self, tokens: Iterable[int]) -> None:
        """The prompt counts towards the penalties, as the text so far."""
        if self.penalised:
            for token in tokens:
                llama_cpp.llama_sampler_accept(self.chain, token)

    def sample(self, ctx: Any) -> int:
        """Pick (and accept) the next token from the last evaluated position."""
        return int(llama_cpp.llama_sampler_sample(self.chain, ctx, -1))

    def close(self) -> None:
        if self.chain is not None:
            llama_cpp.llama_sampler_free(self.chain)
            self.chain = None
