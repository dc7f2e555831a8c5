"""Embeddings from a GGUF model with llama.cpp: the mean of the final normalised
hidden states over a text's tokens (llama.cpp's MEAN pooling), scaled to unit
length: the vectors the MLX backend computes for the same model."""

from __future__ import annotations

import math

import llama_cpp
from llama_cpp import Llama

from impetusd.plugin_api import ContextLengthExceeded, EmbedOutput, EmbedRequest

# Tokens per text. The whole text is one llama.cpp batch with full attention
# buffers, so this stays modest (sentence-embedding models use 256-512).
EMBED_CONTEXT = 512


class Embedder:
    """A second llama.cpp context in embedding mode on the same file (its weights
    are memory-mapped, so the pages are shared with the generating context)."""

    def __init__(self, path: str, threads: int, context: int = EMBED_CONTEXT) -> None:
        self.llm = Llama(
            model_path=path,
            embedding=True,
            pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
            n_ctx=context,
            n_batch=context,
            n_ubatch=context,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        self.context = context
        self.n_embd = self.llm.n_embd()
        self.fallback = self.llm.token_eos()

    def embed(self, req: EmbedRequest) -> EmbedOutput:
        ctx = self.llm.ctx
        memory = llama_cpp.llama_get_memory(ctx)
        vectors: list[list[float]] = []
        total = 0
        for text in req.texts:
            ids = self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False) or [self.fallback]
            if len(ids) > self.context:
                raise ContextLengthExceeded(
                    f"an input has {len(ids)} tokens; embeddings on llama.cpp take at most {self.context}",
                    prompt_tokens=len(ids),
                    context_length=self.context,
                )
            llama_cpp.llama_memory_clear(memory, True)
            self._decode(ctx, ids)
            pooled = llama_cpp.llama_get_embeddings_seq(ctx, 0)[: self.n_embd]
            norm = math.sqrt(sum(x * x for x in pooled)) or 1.0
            vectors.append([x / norm for x in pooled])
            total += len(ids)
        llama_cpp.llama_memory_clear(memory, True)
        return EmbedOutput(vectors=vectors, prompt_tokens=total)

    @staticmethod
    def _decode(ctx: object, ids: list[int]) -> None:
        """One sequence, every token an output (pooling reads them all)."""
        batch = llama_cpp.llama_batch_init(len(ids), 0, 1)
        try:
            for i, token in enumerate(ids):
                batch.token[i] = token
                batch.pos[i] = i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = True
            batch.n_tokens = len(ids)
            status = llama_cpp.llama_decode(ctx, batch)
        finally:
            llama_cpp.llama_batch_free(batch)
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status}")
