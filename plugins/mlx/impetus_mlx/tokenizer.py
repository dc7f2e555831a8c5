"""A tokenizer and chat template built from GGUF metadata (no torch, no Hub)."""

from __future__ import annotations

from typing import Any

from impetusd.plugin_api import UnsupportedFormat

# Pre-tokenizer regexes by ``tokenizer.ggml.pre`` (the split rules of the
# original tokenizers; byte-level BPE applies after the split).
_LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


def _pre_tokenizer(pre: str | None) -> Any:
    from tokenizers import Regex, pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "smollm":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if pre in ("llama-bpe", "llama3"):
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    return byte_level


def build_tokenizer(meta: dict[str, Any]) -> Any:
    """An HF fast tokenizer (from ``transformers``, which mlx-lm already needs)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    from .gguf_model import scalar

    kind = scalar(meta, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise UnsupportedFormat(
            f"GGUF tokenizer model {kind!r} is not supported yet by the MLX backend (supported: gpt2 byte-level BPE)",
            tokenizer=kind,
        )
    tokens: list[str] = list(meta["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, ignore_merges=False))
    tok.pre_tokenizer = _pre_tokenizer(scalar(meta, "tokenizer.ggml.pre"))
    tok.decoder = decoders.ByteLevel()
    types = meta.get("tokenizer.ggml.token_type")
    if types is not None:
        kinds = types.tolist() if hasattr(types, "tolist") else list(types)
        special = [AddedToken(tokens[i], special=True, normalized=False) for i, k in enumerate(kinds) if k == 3]
        if special:
            tok.add_special_tokens(special)

    def token(key: str) -> str | None:
        idx = scalar(meta, key)
        return tokens[int(idx)] if idx is not None and 0 <= int(idx) < len(tokens) else None

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=token("tokenizer.ggml.bos_token_id"),
        eos_token=token("tokenizer.ggml.eos_token_id"),
        unk_token=token("tokenizer.ggml.unknown_token_id"),
        pad_token=token("tokenizer.ggml.padding_token_id"),
    )
    template = meta.get("tokenizer.chat_template")
    if isinstance(template, str):
        hf.chat_template = template
    hf.add_bos = bool(scalar(meta, "tokenizer.ggml.add_bos_token", False))
    return hf


def eos_ids(meta: dict[str, Any]) -> list[int]:
    from .gguf_model import scalar

    ids = []
    for key in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"):
        value = scalar(meta, key)
        if value is not None:
            ids.append(int(value))
    return ids
