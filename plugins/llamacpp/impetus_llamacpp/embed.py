"""Embeddings from a GGUF model: a second llama-server in embedding mode on the same
file (``--embedding --pooling mean``; its weights are memory-mapped, so the pages are
shared with the generating server), started on the first ``embed``. The vector is the
mean of the final hidden states over a text's tokens, scaled to unit length: the one
the MLX backend computes for the same model."""

from __future__ import annotations

from impetusd.plugin_api import ContextLengthExceeded, EmbedOutput, EmbedRequest

from .binary import Binary
from .server import LlamaServer

# Tokens per text. The whole text is one llama.cpp batch with full attention
# buffers, so this stays modest (sentence-embedding models use 256-512).
EMBED_CONTEXT = 512
EUCLIDEAN = 2  # llama-server's embd_normalize: unit length


class Embedder:
    def __init__(self, found: Binary, model: str, threads: int, context: int = EMBED_CONTEXT) -> None:
        size = str(context)
        args = ["--embedding", "--pooling", "mean", "--ctx-size", size, "--batch-size", size, "--ubatch-size", size, "--parallel", "1"]
        args += ["--threads", str(threads), "--threads-batch", str(threads), "--cache-ram", "0"]
        self.server = LlamaServer(found, model, args, role="embed")
        self.server.wait_ready()
        self.context = context

    def close(self) -> None:
        self.server.close()

    def embed(self, req: EmbedRequest) -> EmbedOutput:
        inputs: list[list[int]] = []
        for text in req.texts:
            ids = [int(t) for t in self.server.post("/tokenize", {"content": text, "add_special": True, "parse_special": False})["tokens"]]
            if len(ids) > self.context:
                raise ContextLengthExceeded(
                    f"an input has {len(ids)} tokens; embeddings on llama.cpp take at most {self.context}",
                    prompt_tokens=len(ids),
                    context_length=self.context,
                )
            inputs.append(ids)
        vectors: list[list[float]] = []
        for ids in inputs:  # one at a time: the server has one slot of EMBED_CONTEXT tokens
            out = self.server.post("/embedding", {"content": ids, "embd_normalize": EUCLIDEAN})
            item = out[0] if isinstance(out, list) else out
            vector = item["embedding"]
            if vector and isinstance(vector[0], list):  # pooled: one row
                vector = vector[0]
            vectors.append([float(x) for x in vector])
        return EmbedOutput(vectors=vectors, prompt_tokens=sum(len(ids) for ids in inputs))
