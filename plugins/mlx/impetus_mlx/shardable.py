"""Which models the MLX backend can split across processes (``models.load`` ``ranks``),
decided in the daemon from the model's metadata, before anything loads; no mlx import.

mlx-lm splits a model tensor-parallel with its ``Model.shard(group)``: each attention
layer's query, key and value heads and each MLP's hidden units are divided among the
ranks. Only some families have it, and the heads must divide evenly.
"""

from __future__ import annotations

from impetusd.plugin_api import ModelSpec, NoBackend

# The mlx-lm model families with ``Model.shard`` (mlx-lm 0.32.2's models/*.py). GGUF files
# run as ``llama`` here (gguf_model.py); a folder runs as its config's ``model_type``.
TENSOR_PARALLEL = frozenset(
    {
        "deepseek_v2",
        "deepseek_v3",
        "deepseek_v32",
        "exaone_moe",
        "glm4_moe",
        "glm4_moe_lite",
        "gpt_oss",
        "llama",
        "minimax",
        "ministral3",
        "mistral4",
        "qwen2",
        "qwen3",
        "qwen3_5",
        "qwen3_moe",
        "step3p5",
    }
)
MAX_RANKS = 16


def check_ranks(spec: ModelSpec, ranks: int) -> None:
    """Refuse, naming why, a model mlx-lm cannot split across ``ranks`` processes."""
    meta = spec.metadata
    family = meta.get("architecture")
    name = spec.name

    def refuse(why: str, reason: str) -> None:
        raise NoBackend(f"{name}: the MLX backend cannot split it across {ranks} processes: {why}", backend="mlx", reason=reason, ranks=ranks)

    if ranks > MAX_RANKS:
        refuse(f"at most {MAX_RANKS}", "too-many-ranks")
    if meta.get("kind") == "embedding":
        refuse("it is an embedding encoder; mlx-lm shards only language models", "not-shardable")
    if family not in TENSOR_PARALLEL:
        refuse(f"mlx-lm has no tensor-parallel shard() for the {family or 'unknown'!r} family (it has: {', '.join(sorted(TENSOR_PARALLEL))})", "not-shardable")
    heads, kv_heads = meta.get("head_count"), meta.get("head_count_kv") or meta.get("head_count")
    if not isinstance(heads, int) or not isinstance(kv_heads, int):
        refuse("its attention head counts are not known", "not-shardable")
    elif heads % ranks or kv_heads % ranks:
        fits = [n for n in range(2, MAX_RANKS + 1) if heads % n == 0 and kv_heads % n == 0]
        refuse(
            f"mlx-lm's shard() divides the attention heads among the processes, and {heads} query and {kv_heads} KV heads "
            f"do not divide by {ranks} (ranks that do: {', '.join(map(str, fits)) or 'none'})",
            "heads-not-divisible",
        )
