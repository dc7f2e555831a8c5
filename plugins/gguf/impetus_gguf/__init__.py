"""GGUF model format: recognise ``.gguf`` files and read their metadata."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from impetusd.plugin_api import ModelFormat, PluginRegistry, hookimpl

MAGIC = b"GGUF"

# llama.cpp's LLAMA_FTYPE values (general.file_type) for the names users know.
FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    32: "BF16",
}


def detect(path: Path) -> bool:
    if not path.is_file():
        return False
    with path.open("rb") as fh:
        return fh.read(4) == MAGIC


def _int(meta: dict[str, Any], key: str) -> int | None:
    value = meta.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(meta: dict[str, Any], key: str) -> str | None:
    value = meta.get(key)
    return value if isinstance(value, str) else None


def _vocab_size(tensors: dict[str, Any]) -> int | None:
    """The token embedding's row count (the header's token list is an array this reader skips)."""
    embedding = tensors.get("token_embd.weight")
    return int(embedding[1][1]) if embedding is not None and len(embedding[1]) == 2 else None


def inspect(path: Path) -> dict[str, Any]:
    """Scalar facts from the header; a value of the wrong type reads as absent."""
    from .reader import read_header

    header = read_header(path)
    meta = header.metadata
    arch = _str(meta, "general.architecture")
    params = 0
    for _type, shape in header.tensors.values():
        count = 1
        for dim in shape:
            count *= dim
        params += count
    ftype = _int(meta, "general.file_type")
    return {
        "architecture": arch,
        "name": _str(meta, "general.name"),
        "gguf_version": header.version,
        "context_length": _int(meta, f"{arch}.context_length"),
        "embedding_length": _int(meta, f"{arch}.embedding_length"),
        "block_count": _int(meta, f"{arch}.block_count"),
        "head_count": _int(meta, f"{arch}.attention.head_count"),
        "head_count_kv": _int(meta, f"{arch}.attention.head_count_kv"),
        "head_dim": _int(meta, f"{arch}.attention.key_length"),
        "quantization": FILE_TYPES.get(ftype, str(ftype)) if ftype is not None else None,
        "parameters": params,
        "tensors": len(header.tensors),
        "tokenizer": _str(meta, "tokenizer.ggml.model"),
        "vocab_size": _vocab_size(header.tensors),
        "chat_template": isinstance(meta.get("tokenizer.chat_template"), str),
    }


@hookimpl
def impetus_register_model_formats(registry: PluginRegistry[ModelFormat]) -> None:
    registry.add(
        ModelFormat(
            name="gguf",
            detect=detect,
            inspect=inspect,
            description="GGUF (llama.cpp) single-file models",
            backend_hint="install the impetus-llamacpp or impetus-mlx plugin",
        )
    )
