"""A sentence-embedding engine: a BERT encoder folder, pooled and normalised as
its sentence-transformers configuration says.

``modules.json`` lists the pipeline (Transformer, Pooling, optionally
Normalize); the Pooling module's ``config.json`` names the pooling mode and
``sentence_bert_config.json`` the maximum sequence length. A folder without
them is pooled by mean over its tokens and normalised. Texts are tokenized with
the ``tokenizers`` library from ``tokenizer.json``, truncated at the maximum
sequence length, and run in length-sorted batches padded to the longest text,
with an attention mask so padding changes nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlx.core as mx
import msgspec

from impetusd.plugin_api import (
    EmbedOutput,
    EmbedRequest,
    EngineInfo,
    EngineResult,
    GenerateRequest,
    InvalidModelFile,
    ModelSpec,
    UnsupportedFormat,
    UnsupportedParameter,
)

from .bert import BertModel, build

BATCH = 32
MAX_JSON = 4 << 20


class Pooling(msgspec.Struct, frozen=True):
    """sentence-transformers' Pooling config (the modes this engine runs)."""

    pooling_mode_cls_token: bool = False
    pooling_mode_mean_tokens: bool = True
    pooling_mode_max_tokens: bool = False
    pooling_mode_mean_sqrt_len_tokens: bool = False

    def mode(self, where: str) -> str:
        modes = [
            name
            for name, on in (
                ("cls", self.pooling_mode_cls_token),
                ("mean", self.pooling_mode_mean_tokens),
                ("max", self.pooling_mode_max_tokens),
                ("mean_sqrt_len", self.pooling_mode_mean_sqrt_len_tokens),
            )
            if on
        ]
        if len(modes) != 1:
            raise UnsupportedFormat(f"{where}: pooling {modes or 'none'} is not supported (exactly one mode)", path=where)
        return modes[0]


class Pipeline(msgspec.Struct, frozen=True):
    pooling: str
    normalize: bool
    max_seq_length: int


def _json(path: Path) -> Any:
    if path.stat().st_size > MAX_JSON:
        raise InvalidModelFile(f"{path}: over the {MAX_JSON}-byte limit", path=str(path))
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidModelFile(f"{path}: not valid JSON ({exc})", path=str(path)) from None


def read_pipeline(folder: Path, context_length: int) -> Pipeline:
    """Pooling mode, normalisation and max length from the sentence-transformers files."""
    modules_path = folder / "modules.json"
    modules = _json(modules_path) if modules_path.is_file() else []
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise InvalidModelFile(f"{modules_path}: not a list of modules", path=str(modules_path))
    types = {str(m.get("type", "")).rsplit(".", 1)[-1]: str(m.get("path", "")) for m in modules}
    pooling = Pooling()
    if "Pooling" in types:
        pool_dir = (folder / types["Pooling"]).resolve()
        if folder.resolve() not in pool_dir.parents:
            raise InvalidModelFile(f"{modules_path}: the Pooling module lies outside the folder", path=str(modules_path))
        try:
            pooling = msgspec.convert(_json(pool_dir / "config.json"), Pooling)
        except (msgspec.ValidationError, FileNotFoundError) as exc:
            raise InvalidModelFile(f"{pool_dir / 'config.json'}: not a pooling config ({exc})", path=str(pool_dir)) from None
    unknown = set(types) - {"Transformer", "Pooling", "Normalize"}
    if unknown:
        raise UnsupportedFormat(f"{modules_path}: sentence-transformers modules {sorted(unknown)} are not supported", path=str(modules_path))
    max_len = context_length
    bert_config = folder / "sentence_bert_config.json"
    if bert_config.is_file():
        value = _json(bert_config).get("max_seq_length")
        if isinstance(value, int) and value > 0:
            max_len = min(value, context_length)
    return Pipeline(pooling=pooling.mode(str(folder)), normalize="Normalize" in types or not modules, max_seq_length=max_len)


def pool(hidden: mx.array, mask: mx.array, mode: str) -> mx.array:
    """``[batch, length, hidden]`` → ``[batch, hidden]`` over the real tokens."""
    weights = mask[:, :, None].astype(hidden.dtype)
    if mode == "cls":
        return hidden[:, 0]
    if mode == "max":
        return mx.where(weights > 0, hidden, -mx.inf).max(axis=1)
    counts = mx.maximum(weights.sum(axis=1), 1e-9)
    summed = (hidden * weights).sum(axis=1)
    return summed / (mx.sqrt(counts) if mode == "mean_sqrt_len" else counts)


class EmbeddingEngine:
    """One encoder model in a worker: ``embed`` only."""

    def __init__(self, model: BertModel, tokenizer: Any, pipeline: Pipeline, load_ms: float, details: dict[str, Any]) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.pipeline = pipeline
        self.load_ms = load_ms
        self.details = details

    @classmethod
    def load(cls, spec: ModelSpec) -> EmbeddingEngine:
        from tokenizers import Tokenizer

        started = time.monotonic()
        folder = Path(spec.path)
        config = _json(folder / "config.json")
        if config.get("model_type") != "bert":
            raise UnsupportedFormat(f"{folder}: the MLX backend embeds with BERT encoders only (this is {config.get('model_type')!r})", path=str(folder))
        weights: dict[str, mx.array] = {}
        for file in sorted(folder.glob("model*.safetensors")):
            weights.update(mx.load(str(file)))  # type: ignore[arg-type]  # mlx annotates load() as array | dict | tuple, not per format
        model = build(config, weights, str(folder))
        pipeline = read_pipeline(folder, model.config.max_position_embeddings)
        tok_path = folder / "tokenizer.json"
        if not tok_path.is_file():
            raise InvalidModelFile(f"{folder}: an embedding model needs tokenizer.json", path=str(folder))
        tokenizer = Tokenizer.from_file(str(tok_path))
        tokenizer.enable_truncation(max_length=pipeline.max_seq_length)
        pad_id = int(config.get("pad_token_id") or 0)
        tokenizer.enable_padding(pad_id=pad_id, pad_token=tokenizer.id_to_token(pad_id) or "[PAD]")
        details = {
            "kind": "embedding",
            "architecture": "bert",
            "embedding_length": model.config.hidden_size,
            "pooling": pipeline.pooling,
            "normalize": pipeline.normalize,
            "max_seq_length": pipeline.max_seq_length,
        }
        engine = cls(model, tokenizer, pipeline, 0.0, details)
        engine.embed(EmbedRequest(texts=["warm up"]))
        engine.load_ms = (time.monotonic() - started) * 1000
        return engine

    def info(self) -> EngineInfo:
        return EngineInfo(
            backend="mlx", load_ms=self.load_ms, context_length=self.pipeline.max_seq_length, details={**self.details, "device": str(mx.default_device())}
        )

    def embed(self, req: EmbedRequest) -> EmbedOutput:
        order = sorted(range(len(req.texts)), key=lambda i: len(req.texts[i]))
        vectors: list[list[float]] = [[] for _ in req.texts]
        total = 0
        for start in range(0, len(order), BATCH):
            batch = order[start : start + BATCH]
            encodings = self.tokenizer.encode_batch([req.texts[i] for i in batch])
            ids = mx.array([e.ids for e in encodings])
            types = mx.array([e.type_ids for e in encodings])
            mask = mx.array([e.attention_mask for e in encodings])
            pooled = pool(self.model(ids, types, mask), mask, self.pipeline.pooling)
            if self.pipeline.normalize:
                pooled = pooled / mx.maximum(mx.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            rows: list[list[float]] = pooled.tolist()  # type: ignore[assignment]  # mlx types tolist() as any nesting
            for i, row in zip(batch, rows, strict=True):
                vectors[i] = row
            total += sum(sum(e.attention_mask) for e in encodings)
        return EmbedOutput(vectors=vectors, prompt_tokens=total)

    def generate(self, req: GenerateRequest, on_text: Callable[[str], None], should_stop: Callable[[], bool]) -> EngineResult:
        raise UnsupportedParameter(f"an embedding model cannot {req.kind}; use embed", param=req.kind, backend="mlx")

    def close(self) -> None:
        pass
