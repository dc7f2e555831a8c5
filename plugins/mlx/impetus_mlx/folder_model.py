"""Load an mlx-lm folder or a Hugging Face safetensors LLM folder through mlx-lm.

mlx-lm reads config.json, picks its model class by ``model_type``, loads every
``model*.safetensors`` and runs the class's ``sanitize`` (which maps Hugging
Face weight names and drops what it does not use); quantized mlx-lm folders are
quantized from config.json's ``quantization``. Custom model code named by a
folder (``model_file``) is never run. The tokenizer comes from the folder's
tokenizer files through transformers, as mlx-lm loads it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.tokenizer_utils import TokenizerWrapper
from mlx_lm.utils import load_model, load_tokenizer

from impetusd.plugin_api import InvalidModelFile, UnsupportedFormat

FORMATS = frozenset({"mlx", "safetensors"})


def _eos_ids(folder: Path, config: dict[str, Any]) -> list[int] | None:
    """``eos_token_id`` from config.json, else generation_config.json (int or list)."""
    value = config.get("eos_token_id")
    if value is None:
        generation = folder / "generation_config.json"
        if generation.is_file():
            try:
                value = json.loads(generation.read_text()).get("eos_token_id")
            except (OSError, ValueError, AttributeError):
                value = None
    if isinstance(value, int):
        return [value]
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return list(value)
    return None


def _adds_bos(tokenizer: TokenizerWrapper) -> bool:
    """Whether the tokenizer's own post-processing puts BOS in front of a text."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer.encode("a", add_special_tokens=True)
    return bool(ids) and ids[0] == bos


def load(path: str) -> tuple[nn.Module, TokenizerWrapper, bool, dict[str, Any]]:
    """(model, tokenizer, whether prompts start with BOS, details for EngineInfo)."""
    folder = Path(path)
    try:
        model, config = load_model(folder, strict=True, trust_remote_code=False)
    except ValueError as exc:  # mlx-lm: unknown model_type, weights that do not fit the class
        message = str(exc)
        if "not supported" in message:
            raise UnsupportedFormat(f"{folder}: mlx-lm cannot run this model ({message})", path=str(folder)) from exc
        raise InvalidModelFile(f"{folder}: the weights do not fit the model config.json describes ({message})", path=str(folder)) from exc
    try:
        tokenizer = load_tokenizer(folder, eos_token_ids=_eos_ids(folder, config))
    except (OSError, ValueError) as exc:
        raise InvalidModelFile(f"{folder}: no usable tokenizer ({exc})", path=str(folder)) from exc
    nested = config.get("text_config")
    text: dict[str, Any] = nested if isinstance(nested, dict) else {}

    def value(key: str, default: Any = None) -> Any:
        return config.get(key, text.get(key, default))

    quant = config.get("quantization")
    bits = sorted({int(v["bits"]) for v in (quant, *quant.values()) if isinstance(v, dict) and "bits" in v}) if isinstance(quant, dict) else []
    mx.eval(model.parameters())
    details = {
        "architecture": value("model_type"),
        "context_length": int(value("max_position_embeddings", 4096) or 4096),
        "vocab_size": value("vocab_size"),
        "embedding_length": value("hidden_size"),
        "quantized_bits": bits,
    }
    return model, tokenizer, _adds_bos(tokenizer), details
