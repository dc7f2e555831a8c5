"""Bounds the package's registration and its worker both read, in a module that
imports nothing (``offload`` reads them without importing the package back)."""

# A context as long as the model's, up to this many tokens: the KV cache is allocated
# up front (8,192 tokens of SmolLM2-135M: ~190 MB), so models trained on 128k tokens
# would otherwise reserve gigabytes. Each slot has a KV cache of this size (engine.server_args).
MAX_CONTEXT = 8192
