"""The disk tier of the llama.cpp backend: llama-server slot files (``POST /slots/{id}
?action=save|restore``) under ``$IMPETUS_HOME/cache/prompts/<model digest>-llamacpp/``.

llama-server writes and reads slot files only in its ``--slot-save-path``, a private
staging directory next to its socket (the worker starts llama-server before the tiers
are attached). A saved file is moved from there into this tier's directory, hashed and
signed (``SignedFiles``: anything the index does not vouch for is deleted); a file is
restored only after its bytes check out, through a link or copy in the staging
directory. A prefix is saved when it is hot: a request reused at least ``min_tokens``
of it from a slot, and this tier does not already hold most of it.
"""

from __future__ import annotations

from pathlib import Path

from impetusd.plugin_api import CacheTierContext, SignedFiles

SUFFIX = ".slot"
MIN_TOKENS = 256


class SlotFileTier:
    def __init__(self, directory: Path, model_digest: str, max_bytes: int, min_tokens: int = MIN_TOKENS) -> None:
        self.files = SignedFiles(directory, model_digest, max_bytes, SUFFIX)
        self.max_bytes = max_bytes
        self.min_tokens = min_tokens
        self.hits = 0
        self.stores = 0

    def match(self, tokens: list[int]) -> int:
        return self.files.match(tokens)

    def wants(self, tokens: list[int], reused: int) -> bool:
        """Whether a slot holding ``tokens``, of which a request reused ``reused``, is worth saving."""
        return self.max_bytes > 0 and reused >= self.min_tokens and self.match(tokens) * 2 < len(tokens)

    def fetch(self, tokens: list[int]) -> tuple[Path, int] | None:
        """A verified slot file for the longest stored prefix of ``tokens``, and that prefix's length."""
        best = self.files.best(tokens)
        if best is None:
            return None
        path = self.files.verified(best[0])
        if path is None:
            return None
        self.hits += 1
        return path, best[1]

    def store(self, tokens: list[int], cache: Path) -> None:
        """Take in the slot file ``cache`` that llama-server wrote (holding ``tokens`` and more)."""
        self.files.add(list(tokens), cache)
        self.stores += 1

    def discard(self, path: Path, why: str) -> None:
        self.files.discard(path.name, why)

    def stats(self) -> dict[str, int]:
        return {**self.files.stats(), "hits": self.hits, "stores": self.stores}


def slot_file_tier(ctx: CacheTierContext) -> SlotFileTier | None:
    if not ctx.directory or ctx.disk_bytes <= 0:
        return None
    # Beside the MLX tier's directory for the same GGUF (each sweeps out what its index does
    # not list); another KV-cache type gets its own (its slot files are not the default's).
    variant = "-".join(filter(None, ["llamacpp", ctx.variant]))
    directory = Path(ctx.directory)
    directory = directory.with_name(f"{directory.name}-{variant}")
    digest = f"{ctx.model_digest}-{variant}"
    return SlotFileTier(directory, digest, ctx.disk_bytes)
