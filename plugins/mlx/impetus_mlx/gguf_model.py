"""Build an mlx-lm llama model straight from a GGUF file with ``mx.load``.

``mx.load`` hands back Q4_0/Q4_1/Q8_0 tensors already in MLX's quantized layout
(group size 32) and F16/F32 tensors as they are. GGUF llama weights carry
llama.cpp's Q/K row permutation, which ``rope_traditional=True`` undoes.
"""

from __future__ import annotations

import re
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models import llama

from impetusd.plugin_api import InvalidModelFile, UnsupportedFormat

SUPPORTED_ARCHITECTURES = {"llama"}
GROUP_SIZE = 32

_LAYER = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_TOP = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_BLOCK = re.compile(r"blk\.(\d+)\.(\w+)\.(weight|scales|biases)$")


def scalar(meta: dict[str, Any], key: str, default: Any = None) -> Any:
    value = meta.get(key, default)
    if isinstance(value, mx.array):
        return value.item()
    return value


def read(path: str) -> tuple[dict[str, mx.array], dict[str, Any]]:
    try:
        return mx.load(path, return_metadata=True)  # type: ignore[return-value]  # mlx annotates load() as array | dict | tuple, not per return_metadata
    except Exception as exc:  # mlx raises ValueError/RuntimeError for unsupported tensor types
        raise UnsupportedFormat(f"{path}: MLX cannot read this GGUF ({exc})", path=path) from exc


def build_model(weights: dict[str, mx.array], meta: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    arch = scalar(meta, "general.architecture")
    if arch not in SUPPORTED_ARCHITECTURES:
        raise UnsupportedFormat(f"GGUF architecture {arch!r} is not supported by the MLX backend (supported: llama)", architecture=arch)

    def need(key: str) -> Any:
        value = scalar(meta, f"{arch}.{key}")
        if value is None:
            raise InvalidModelFile(f"GGUF metadata lacks {arch}.{key}", key=f"{arch}.{key}")
        return value

    hidden = int(need("embedding_length"))
    heads = int(need("attention.head_count"))
    args = llama.ModelArgs(
        model_type="llama",
        hidden_size=hidden,
        num_hidden_layers=int(need("block_count")),
        intermediate_size=int(need("feed_forward_length")),
        num_attention_heads=heads,
        num_key_value_heads=int(scalar(meta, f"{arch}.attention.head_count_kv", heads)),
        rms_norm_eps=float(scalar(meta, f"{arch}.attention.layer_norm_rms_epsilon", 1e-5)),
        vocab_size=int(weights["token_embd.weight"].shape[0]) if "token_embd.weight" in weights else len(meta["tokenizer.ggml.tokens"]),
        rope_theta=float(scalar(meta, f"{arch}.rope.freq_base", 10000.0)),
        rope_traditional=True,
        tie_word_embeddings="output.weight" not in weights,
        max_position_embeddings=int(scalar(meta, f"{arch}.context_length", 2048)),
        head_dim=int(scalar(meta, f"{arch}.attention.key_length", hidden // heads)),
    )
    renamed = rename(weights)
    quant = quantization_of(renamed)
    model = llama.Model(args)
    if quant:
        nn.quantize(model, group_size=GROUP_SIZE, class_predicate=lambda path, _m: quant.get(path, False))
    try:
        model.load_weights(list(renamed.items()), strict=True)
    except ValueError as exc:
        raise InvalidModelFile(f"GGUF tensors do not match a llama model: {exc}") from exc
    mx.eval(model.parameters())
    bits = sorted({q["bits"] for q in quant.values()})
    return model, {
        "architecture": arch,
        "context_length": args.max_position_embeddings,
        "vocab_size": args.vocab_size,
        "embedding_length": hidden,
        "quantized_bits": bits,
    }


def rename(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    out: dict[str, mx.array] = {}
    for key, value in weights.items():
        m = _BLOCK.match(key)
        if m and m[2] in _LAYER:
            out[f"model.layers.{m[1]}.{_LAYER[m[2]]}.{m[3]}"] = value
            continue
        base, _, suffix = key.rpartition(".")
        if base in _TOP:
            out[f"{_TOP[base]}.{suffix}"] = value
        elif key.endswith("rope_freqs.weight"):
            continue  # llama3 rope scaling factors; not used by this path
        else:
            raise UnsupportedFormat(f"unexpected GGUF tensor {key!r}", tensor=key)
    return out


def quantization_of(weights: dict[str, mx.array]) -> dict[str, dict[str, int]]:
    """Per-layer quantization read from the tensors: bits = packed bits per row / elements per row."""
    quant: dict[str, dict[str, int]] = {}
    for key, scales in weights.items():
        if not key.endswith(".scales"):
            continue
        prefix = key[: -len(".scales")]
        packed = weights[prefix + ".weight"]
        bits = packed.shape[-1] * 32 // (scales.shape[-1] * GROUP_SIZE)
        quant[prefix] = {"group_size": GROUP_SIZE, "bits": int(bits)}
    return quant
