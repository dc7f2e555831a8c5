"""A BERT encoder in MLX that loads Hugging Face ``BertModel`` weights by name.

Embeddings (word + absolute position + token type, then LayerNorm), then N
post-norm layers of multi-head self-attention and a GELU feed-forward block.
Dropout is absent (inference only); the pooler is not used by sentence
embeddings, so its weights are dropped.
"""

from __future__ import annotations

import math
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import msgspec

from impetusd.plugin_api import InvalidModelFile, UnsupportedFormat

ACTIVATIONS = {"gelu": nn.gelu, "gelu_new": nn.gelu_approx, "gelu_pytorch_tanh": nn.gelu_approx, "relu": nn.relu}


class BertConfig(msgspec.Struct, frozen=True):
    """The config.json fields the encoder needs (unknown fields are ignored)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_act: str = "gelu"
    position_embedding_type: str = "absolute"


def parse_config(config: dict[str, Any], where: str) -> BertConfig:
    try:
        cfg = msgspec.convert(config, BertConfig)
    except msgspec.ValidationError as exc:
        raise InvalidModelFile(f"{where}: not a BERT config ({exc})", path=where) from None
    if cfg.hidden_act not in ACTIVATIONS:
        raise UnsupportedFormat(f"{where}: BERT activation {cfg.hidden_act!r} is not supported", path=where)
    if cfg.position_embedding_type != "absolute":
        raise UnsupportedFormat(f"{where}: BERT position embeddings {cfg.position_embedding_type!r} are not supported", path=where)
    if cfg.hidden_size % cfg.num_attention_heads:
        raise InvalidModelFile(f"{where}: hidden_size is not a multiple of num_attention_heads", path=where)
    return cfg


class Embeddings(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def __call__(self, ids: mx.array, types: mx.array) -> mx.array:
        positions = mx.arange(ids.shape[1])[None, :]
        x = self.word_embeddings(ids) + self.position_embeddings(positions) + self.token_type_embeddings(types)
        return self.LayerNorm(x)


class SelfAttention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.heads = cfg.num_attention_heads
        self.scale = 1.0 / math.sqrt(cfg.hidden_size // cfg.num_attention_heads)
        self.query = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.key = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.value = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        batch, length, width = x.shape

        def split(t: mx.array) -> mx.array:
            return t.reshape(batch, length, self.heads, -1).transpose(0, 2, 1, 3)

        out = mx.fast.scaled_dot_product_attention(split(self.query(x)), split(self.key(x)), split(self.value(x)), scale=self.scale, mask=mask)
        return out.transpose(0, 2, 1, 3).reshape(batch, length, width)


class DenseNorm(nn.Module):
    """``dense`` then dropout (absent) then ``LayerNorm(out + residual)``."""

    def __init__(self, inputs: int, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(inputs, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def __call__(self, x: mx.array, residual: mx.array) -> mx.array:
        return self.LayerNorm(self.dense(x) + residual)


class Attention(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.self_attn = SelfAttention(cfg)  # Hugging Face calls it ``attention.self``
        self.output = DenseNorm(cfg.hidden_size, cfg)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        return self.output(self.self_attn(x, mask), x)


class Intermediate(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.act = ACTIVATIONS[cfg.hidden_act]

    def __call__(self, x: mx.array) -> mx.array:
        return self.act(self.dense(x))


class Layer(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.attention = Attention(cfg)
        self.intermediate = Intermediate(cfg)
        self.output = DenseNorm(cfg.intermediate_size, cfg)

    def __call__(self, x: mx.array, mask: mx.array) -> mx.array:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class Encoder(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.layer = [Layer(cfg) for _ in range(cfg.num_hidden_layers)]


class BertModel(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)

    def __call__(self, ids: mx.array, types: mx.array, attention_mask: mx.array) -> mx.array:
        """Final hidden states ``[batch, length, hidden]``; ``attention_mask`` is 1 for
        real tokens and 0 for padding (padding is never attended to)."""
        keep = attention_mask[:, None, None, :] > 0
        mask = mx.where(keep, 0.0, -mx.inf).astype(mx.float32)
        x = self.embeddings(ids, types)
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return x


def rename(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """Hugging Face names to this module's: drop a ``bert.`` prefix, the pooler and
    buffers; ``attention.self`` is ``attention.self_attn``; old ``gamma``/``beta``
    LayerNorm names are ``weight``/``bias``."""
    out: dict[str, mx.array] = {}
    for key, value in weights.items():
        name = key.removeprefix("bert.")
        if name.startswith(("pooler.", "cls.")) or name.endswith("position_ids"):
            continue
        name = name.replace(".attention.self.", ".attention.self_attn.")
        if name.endswith("LayerNorm.gamma"):
            name = name[: -len("gamma")] + "weight"
        elif name.endswith("LayerNorm.beta"):
            name = name[: -len("beta")] + "bias"
        out[name] = value.astype(mx.float32)
    return out


def build(config: dict[str, Any], weights: dict[str, mx.array], where: str) -> BertModel:
    model = BertModel(parse_config(config, where))
    try:
        model.load_weights(list(rename(weights).items()), strict=True)
    except ValueError as exc:
        raise InvalidModelFile(f"{where}: the weights do not fit a BERT model ({exc})", path=where) from exc
    mx.eval(model.parameters())
    return model
