"""What a safetensors or mlx-lm folder holds: classification and ``inspect`` metadata.

Keys shared with the GGUF plugin keep its names (``architecture``, ``name``,
``context_length``, ``embedding_length``, ``block_count``, ``quantization``,
``parameters``, ``tensors``, ``tokenizer``, ``chat_template``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from impetusd.plugin_api import InvalidModelFile

from .folder import Folder
from .reader import SafetensorsHeader, TensorInfo

MLX_BITS = frozenset({1, 2, 3, 4, 5, 6, 8})
ENCODERS = frozenset({"bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "nomic_bert", "modernbert", "electra"})
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx", "max_seq_len")


class QuantScheme(msgspec.Struct, frozen=True):
    bits: int
    group_size: int
    mode: str = "affine"


class FolderInfo(msgspec.Struct, kw_only=True):
    """``inspect``'s answer; turned into a plain dict for the registry's ModelSpec."""

    architecture: str | None  # config model_type, as GGUF's general.architecture ("llama")
    model_class: str | None  # config architectures[0] ("LlamaForCausalLM")
    name: str
    context_length: int | None
    embedding_length: int | None
    block_count: int | None
    vocab_size: int | None
    parameters: int
    tensors: int
    quantization: str | None
    quantized_bits: list[int]
    group_size: int | None
    dtypes: list[str]
    tokenizer: str | None
    chat_template: bool
    shards: int
    size_bytes: int
    files: list[str]
    written_by: str | None  # safetensors __metadata__ "format": "pt", "mlx", ...
    head_count: int | None = None  # attention heads (for the daemon's KV-cache estimate)
    head_count_kv: int | None = None
    head_dim: int | None = None
    kind: str = "llm"  # "embedding" for sentence-embedding encoders (BERT and kin)


def kind_of(folder: Folder, architecture: str | None) -> str:
    """``embedding`` for an encoder (by ``model_type``) or a sentence-transformers
    folder (``modules.json``); ``llm`` otherwise."""
    if architecture in ENCODERS or (folder.path / "modules.json").is_file():
        return "embedding"
    return "llm"


def is_mlx(folder: Folder) -> bool:
    """mlx-lm's own markers: a ``quantization`` object in config.json (transformers
    writes ``quantization_config``), or weights saved with ``format: mlx`` metadata."""
    if isinstance(folder.config.get("quantization"), dict):
        return True
    return folder.header(folder.weight_files()[0]).metadata.get("format") == "mlx"


def _config_value(config: dict[str, Any], *keys: str) -> Any:
    text = config.get("text_config")
    for source in (config, text if isinstance(text, dict) else {}):
        for key in keys:
            value = source.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, str) and key == "model_type":
                return value
    return None


def _mlx_schemes(folder: Folder) -> tuple[QuantScheme | None, dict[str, QuantScheme]]:
    """The default scheme and per-layer overrides from config.json's ``quantization``."""
    raw = folder.config.get("quantization")
    if not isinstance(raw, dict):
        return None, {}
    where = str(folder.path / "config.json")
    try:
        default = QuantScheme(bits=raw["bits"], group_size=raw["group_size"], mode=raw.get("mode", "affine"))
        layers = {k: msgspec.convert(v, QuantScheme) for k, v in raw.items() if isinstance(v, dict)}
    except (KeyError, msgspec.ValidationError) as exc:
        raise InvalidModelFile(f"{where}: malformed quantization ({exc!r})", path=where) from None
    for scheme in (default, *layers.values()):
        if not isinstance(scheme.bits, int) or scheme.bits not in MLX_BITS or not isinstance(scheme.group_size, int) or scheme.group_size <= 0:
            raise InvalidModelFile(f"{where}: quantization {scheme} is not one MLX supports", path=where)
    return default, layers


def _count_mlx(tensors: dict[str, tuple[str, TensorInfo]], folder: Folder) -> tuple[int, set[int], set[int]]:
    """Parameters of an mlx-lm folder, as mlx-lm's get_total_parameters counts them.

    A quantized layer stores ``<p>.weight`` as U32 words packing 32/bits values,
    plus ``<p>.scales`` (and ``<p>.biases`` in affine mode): its parameters are
    ``weight elements * 32 / bits``; scales and biases are not parameters. The
    packed width is checked against the scales: ``weight[-1]*32/bits ==
    scales[-1]*group_size``.
    """
    default, layers = _mlx_schemes(folder)
    skip: set[str] = set()
    total, bits_used, groups = 0, set(), set()
    for name, (shard, scales) in tensors.items():
        if not name.endswith(".scales"):
            continue
        prefix = name[: -len(".scales")]
        scheme = layers.get(prefix, default)
        where = str(folder.path / shard)
        if scheme is None:
            raise InvalidModelFile(f"{where}: {name} is quantized but config.json has no quantization", path=where)
        packed = tensors.get(prefix + ".weight")
        if packed is None or packed[1].dtype != "U32" or not packed[1].shape or not scales.shape:
            raise InvalidModelFile(f"{where}: {name} has no packed U32 {prefix}.weight beside it", path=where)
        weight = packed[1]
        width = weight.shape[-1] * 32
        if width % scheme.bits or width // scheme.bits != scales.shape[-1] * scheme.group_size or weight.shape[:-1] != scales.shape[:-1]:
            raise InvalidModelFile(
                f"{where}: {prefix}.weight {list(weight.shape)} does not match its scales {list(scales.shape)} "
                f"at {scheme.bits} bits, group size {scheme.group_size}",
                path=where,
            )
        total += weight.count * 32 // scheme.bits
        bits_used.add(scheme.bits)
        groups.add(scheme.group_size)
        skip.update({name, prefix + ".weight", prefix + ".biases"})
    total += sum(info.count for name, (_, info) in tensors.items() if name not in skip)
    return total, bits_used, groups


def _all_tensors(folder: Folder, names: list[str]) -> tuple[dict[str, tuple[str, TensorInfo]], list[SafetensorsHeader]]:
    tensors: dict[str, tuple[str, TensorInfo]] = {}
    headers = [folder.header(n) for n in names]
    for shard, header in zip(names, headers, strict=True):
        for tname, info in header.tensors.items():
            if tname in tensors:
                raise InvalidModelFile(f"{folder.path / shard}: tensor {tname!r} is also in {tensors[tname][0]}", path=str(folder.path / shard))
            tensors[tname] = (shard, info)
    index = folder.index
    if index is not None:
        for tname, shard in index.weight_map.items():
            if tensors.get(tname, ("",))[0] != shard:
                where = str(folder.path / "model.safetensors.index.json")
                raise InvalidModelFile(f"{where}: tensor {tname!r} is not in {shard}", path=where)
        if len(tensors) != len(index.weight_map):
            extra = sorted(set(tensors) - set(index.weight_map))[:3]
            where = str(folder.path / "model.safetensors.index.json")
            raise InvalidModelFile(f"{where}: the weight map omits tensors the shards hold ({', '.join(extra)})", path=where)
    return tensors, headers


def _label(folder: Folder, tensors: dict[str, tuple[str, TensorInfo]], bits: set[int], groups: set[int]) -> str | None:
    """``4bit-g64`` (``4bit+8bit-g32`` mixed, ``-mode`` unless affine) for mlx; a
    ``quantization_config`` method (GPTQ, AWQ, ...); else the dtype holding most parameters."""
    config = folder.config
    if bits:
        default, _ = _mlx_schemes(folder)
        mode = default.mode if default else "affine"
        label = "+".join(f"{b}bit" for b in sorted(bits)) + "-g" + "+".join(str(g) for g in sorted(groups))
        return label if mode == "affine" else f"{label}-{mode}"
    qc = config.get("quantization_config")
    if isinstance(qc, dict):
        return str(qc.get("quant_method", "quantized")) + (f"-{qc['bits']}bit" if isinstance(qc.get("bits"), int) else "")
    by_dtype: dict[str, int] = {}
    for _, info in tensors.values():
        by_dtype[info.dtype] = by_dtype.get(info.dtype, 0) + info.count
    return max(sorted(by_dtype), key=lambda d: by_dtype[d]) if by_dtype else None


def describe(folder: Folder, mlx: bool) -> dict[str, Any]:
    names = folder.weight_files()
    tensors, headers = _all_tensors(folder, names)
    config = folder.config
    dtypes = sorted({info.dtype for _, info in tensors.values()})
    quant_bits: set[int] = set()
    groups: set[int] = set()
    if mlx:
        parameters, quant_bits, groups = _count_mlx(tensors, folder)
    else:
        parameters = sum(info.count for _, info in tensors.values())
    quantization = _label(folder, tensors, quant_bits, groups)
    tok_config = folder.tokenizer_config()
    template = tok_config.get("chat_template")
    has_template = (isinstance(template, (str, list)) and bool(template)) or any(
        (folder.path / n).is_file() for n in ("chat_template.jinja", "chat_template.json")
    )
    tokenizer = tok_config.get("tokenizer_class")
    files = sorted(set(folder.support_files()) | set(names))
    architectures = config.get("architectures")
    architecture = _config_value(config, "model_type")
    info = FolderInfo(
        architecture=architecture,
        model_class=architectures[0] if isinstance(architectures, list) and architectures and isinstance(architectures[0], str) else None,
        name=folder.path.name,
        context_length=_config_value(config, *CONTEXT_KEYS),
        embedding_length=_config_value(config, "hidden_size", "n_embd", "d_model"),
        block_count=_config_value(config, "num_hidden_layers", "n_layer", "num_layers"),
        vocab_size=_config_value(config, "vocab_size"),
        parameters=parameters,
        tensors=len(tensors),
        quantization=quantization,
        quantized_bits=sorted(quant_bits),
        group_size=next(iter(groups)) if len(groups) == 1 else None,  # None when layers differ
        dtypes=dtypes,
        tokenizer=tokenizer if isinstance(tokenizer, str) else None,
        chat_template=has_template,
        shards=len(names),
        size_bytes=sum((folder.path / f).stat().st_size for f in files),
        files=files,
        written_by=headers[0].metadata.get("format"),
        head_count=_config_value(config, "num_attention_heads", "n_head"),
        head_count_kv=_config_value(config, "num_key_value_heads"),
        head_dim=_config_value(config, "head_dim"),
        kind=kind_of(folder, architecture),
    )
    return msgspec.to_builtins(info)
